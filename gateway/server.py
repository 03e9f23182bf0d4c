"""uvicorn's Server with a graceful drain: the first SIGTERM (or Ctrl-C) drains, a second ends
what still runs at once (each request with its explicit error), a third exits without waiting.

uvicorn on its own stops listening at the first signal (new clients get "connection
refused", not a 503 a load balancer understands), waits `timeout_graceful_shutdown`
seconds and then cancels every request mid-body. sse-starlette adds its own watcher that
cancels every stream within half a second of uvicorn's exit flag (the streams cut 0.17 s
after SIGTERM). Here the first signal only starts `drain_requests`; uvicorn's exit flag is
set once the drain is done, so its own shutdown finds nothing left to cut, and
sse-starlette's automatic drain is switched off: the gateway ends its streams itself, each
with an error event and `[DONE]`.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from sse_starlette.sse import AppStatus

from gateway.app import GatewayState
from gateway.drain import drain_requests


class GatewayServer(uvicorn.Server):
    """Serves the gateway's app; shuts down through `drain_requests`."""

    def __init__(
        self, config: uvicorn.Config, state: GatewayState, grace_s: float, min_s: float = 0.0
    ) -> None:
        super().__init__(config)
        self._state = state
        self._grace_s = grace_s
        self._min_s = min_s
        self._signal: int | None = None
        self._num_signals = 0
        self._drainer: asyncio.Task[None] | None = None
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal: the first starts the drain (on the next tick); a second cuts the grace
        short, so every request still running ends now with its error event or 503; a third
        leaves without waiting for anything."""
        self._num_signals += 1
        if self._num_signals >= 3 or (self.should_exit and self._signal is None):
            self.force_exit = True
            super().handle_exit(sig, frame)
            return
        if self._signal is not None:
            self._state.drain.hurry()
            return
        self._signal = sig
        self._state.drain.begin()  # a plain flag: /health says 503 from this moment

    async def on_tick(self, counter: int) -> bool:
        if self._signal is not None and self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(self._signal))
        return await super().on_tick(counter)

    async def _drain(self, sig: int) -> None:
        await drain_requests(self._state.drain, self._state.engine, self._grace_s, self._min_s)
        super().handle_exit(sig, None)
