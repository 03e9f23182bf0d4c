"""Thin endpoints: parse -> validate -> delegate to Serving -> respond."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.body import parse_body
from gateway.errors import APIError, clip
from gateway.openapi import openapi_json
from gateway.protocol import ChatCompletionRequest, CompletionRequest, GenerateRequest
from gateway.serving import Serving
from gateway.sse import EventStream, unless_disconnected
from gateway.streams import ChunkStream
from gateway.worker import worker_routes

if TYPE_CHECKING:
    from gateway.app import GatewayState


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _serving(request: Request) -> Serving:
    serving = _state(request).serving
    if serving is None:
        raise APIError(503, "the model is still loading", headers={"Retry-After": "5"})
    return serving


def _respond(request: Request, result: BaseModel | ChunkStream) -> Response:
    """The response, with `x-request-id` equal to the response's id."""
    if isinstance(result, BaseModel):
        request_id = getattr(result, "id", None)
        headers = {"x-request-id": request_id} if isinstance(request_id, str) else {}
        return JSONResponse(result.model_dump(mode="json"), headers=headers)
    stream = EventStream(result, _state(request).settings.send_timeout)
    stream.headers["x-request-id"] = result.request_id
    return stream


async def completions(request: Request) -> Response:
    serving = _serving(request)
    req = await parse_body(request, CompletionRequest, _state(request).workers)
    return _respond(request, await unless_disconnected(request, serving.completion(req)))


async def chat_completions(request: Request) -> Response:
    serving = _serving(request)
    req = await parse_body(request, ChatCompletionRequest, _state(request).workers)
    return _respond(request, await unless_disconnected(request, serving.chat(req)))


async def generate(request: Request) -> Response:
    serving = _serving(request)
    req = await parse_body(request, GenerateRequest, _state(request).workers)
    return _respond(request, await unless_disconnected(request, serving.generate(req)))


async def models(request: Request) -> Response:
    return JSONResponse(_serving(request).models().model_dump(mode="json"))


async def model_card(request: Request) -> Response:
    model_list = _serving(request).models()
    card = next((c for c in model_list.data if c.id == request.path_params["model"]), None)
    if card is None:
        message = f"The model {clip(request.path_params['model'])!r} does not exist"
        raise APIError(404, message, param="model", code="model_not_found")
    return JSONResponse(card.model_dump(mode="json"))


async def health(request: Request) -> Response:
    state = _state(request)
    if state.drain.is_draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if state.load_error is not None:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
    if state.serving is None or not state.serving.engine.is_ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> Response:
    body = openapi_json(_state(request).settings.api_key is not None)
    return Response(body, media_type="application/json")


async def metrics(request: Request) -> Response:
    state = _state(request)
    if state.metrics is None:
        raise APIError(503, "the model is still loading", headers={"Retry-After": "5"})
    body, content_type = state.metrics.render()
    return Response(body, headers={"Content-Type": content_type})


API_ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/generate/")


def routes() -> list[BaseRoute]:
    """Every route of the gateway."""
    return [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/generate/", generate, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model_card, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *worker_routes(),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
