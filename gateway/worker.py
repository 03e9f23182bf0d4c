"""The worker API that routers in front of several gateways use (vllm-router and its kin).

vllm-router polls `GET /get_load` for its power-of-two policy (`{"load": n}`, the requests on
this replica) and passes `GET /get_model_info` and `GET /get_server_info` through to one worker.
Like /health and /metrics they need no API key: they say how busy the replica is, nothing more.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.errors import APIError
from gateway.protocol import WorkerLoad, WorkerModelInfo, WorkerServerInfo
from gateway.serving import Serving

if TYPE_CHECKING:
    from gateway.app import GatewayState


def _loaded(request: Request) -> tuple[GatewayState, Serving]:
    state: GatewayState = request.app.state.gateway
    if state.serving is None:
        raise APIError(503, "the model is still loading", headers={"Retry-After": "5"})
    return state, state.serving


async def get_load(request: Request) -> Response:
    _, serving = _loaded(request)
    stats = serving.engine.stats()
    usage = stats.kv_cells_used / stats.kv_cells_total if stats.kv_cells_total > 0 else 0.0
    load = WorkerLoad(
        load=stats.running + stats.waiting,
        running=stats.running,
        waiting=stats.waiting,
        kv_cache_usage=usage,
    )
    return JSONResponse(load.model_dump())


async def get_model_info(request: Request) -> Response:
    _, serving = _loaded(request)
    model = serving.engine.model
    info = WorkerModelInfo(
        model_path=serving.model_name, max_model_len=model.n_ctx, quantization=model.quantization
    )
    return JSONResponse(info.model_dump())


async def get_server_info(request: Request) -> Response:
    state, serving = _loaded(request)
    settings = state.settings
    info = WorkerServerInfo(
        served_model_name=serving.model_name,
        slots=serving.engine.model.n_slots,
        ctx_size=settings.ctx_size,
        batch_size=settings.batch_size,
        max_queue=settings.max_queue,
        n_gpu_layers=settings.n_gpu_layers,
        version=_version(),
    )
    return JSONResponse(info.model_dump())


def _version() -> str:
    try:
        return version("llm-gateway")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def worker_routes() -> list[BaseRoute]:
    """The routes of the worker API."""
    return [
        Route("/get_load", get_load, methods=["GET"]),
        Route("/get_model_info", get_model_info, methods=["GET"]),
        Route("/get_server_info", get_server_info, methods=["GET"]),
    ]
