"""create_app(settings, load_engine) -> Starlette: routes, error envelope, guards, lifespan.

The model loads in a worker thread after the server is up, so /health answers 503 while it
loads (and 200 after); API calls meanwhile get a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from batching.outputs import StepStats
from gateway.backend import Backend, EngineLoader, load_engine
from gateway.drain import Drain, DrainGuard
from gateway.errors import CatchAll, exception_handlers
from gateway.limits import RequestLimits
from gateway.metrics import Metrics
from gateway.middleware import ApiGuard
from gateway.routes import API_ENDPOINTS, routes
from gateway.serving import Serving
from gateway.settings import Settings
from gateway.templates import select_template
from gateway.workers import Workers

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GatewayState:
    """What the routes reach through `app.state.gateway`; filled in once the model is loaded."""

    settings: Settings
    engine: Backend | None = None
    serving: Serving | None = None
    metrics: Metrics | None = None
    load_error: str | None = None
    workers: Workers = field(init=False)
    drain: Drain = field(default_factory=Drain)

    def __post_init__(self) -> None:
        self.workers = Workers(self.settings.prompt_threads)

    def count(self, path: str, status: int) -> None:
        """Count a request that ended before reaching the engine (4xx, 5xx)."""
        if self.metrics is not None and path in API_ENDPOINTS:
            self.metrics.count_request(path, status)

    def observe_step(self, stats: StepStats) -> None:
        """The engine's step observer (on the engine thread)."""
        if self.metrics is not None:
            self.metrics.observe_step(stats)


def create_app(settings: Settings, load_engine: EngineLoader = load_engine) -> Starlette:
    """The gateway's ASGI app; its lifespan loads the model with `load_engine`."""
    state = GatewayState(settings)
    middleware = [
        Middleware(CatchAll, count=state.count),
        Middleware(DrainGuard, drain=state.drain, count=state.count),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
            )
        )
    middleware.append(
        Middleware(
            ApiGuard,
            api_key=settings.api_key,
            max_body_bytes=settings.max_body_bytes,
            count=state.count,
        )
    )
    app = Starlette(
        routes=routes(),
        middleware=middleware,
        exception_handlers=exception_handlers(state.count),
        lifespan=_lifespan(state, load_engine),
    )
    app.state.gateway = state
    return app


def _lifespan(
    state: GatewayState, load_engine: EngineLoader
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state, load_engine))
        try:
            yield
        finally:
            await asyncio.wait((loading,))  # a load in progress cannot be interrupted
            state.workers.shutdown()
            if state.engine is not None:
                state.serving = None
                state.engine.shutdown()
                state.engine = None

    return lifespan


async def _load(state: GatewayState, load_engine: EngineLoader) -> None:
    settings = state.settings
    try:
        engine = await asyncio.to_thread(load_engine, settings, state.observe_step)
        state.engine = engine
        template = select_template(settings.chat_template, engine.model)
        state.metrics = Metrics(engine.model, engine.stats)
        engine.start()
    except Exception as e:
        log.exception("loading the model failed")
        state.load_error = f"{type(e).__name__}: {e}"
        return
    limits = RequestLimits(
        max_prompt_chars=settings.max_prompt_chars,
        max_prompt_tokens=settings.max_prompt_tokens,
        capacity=engine.model.n_slots + settings.max_queue,
    )
    state.serving = Serving(
        engine,
        settings.model_name,
        template,
        state.metrics,
        limits,
        state.workers,
        settings.grammar_limits(),
    )
    model = engine.model
    log.info(
        "serving %s as %r: %s, %d slots, %d tokens per request, chat template %s",
        model.path,
        settings.model_name,
        model.quantization,
        model.n_slots,
        model.n_ctx,
        template.name,
    )
