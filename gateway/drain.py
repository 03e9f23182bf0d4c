"""The way out: on shutdown, finish what runs, refuse what comes, then end the rest clearly.

`Drain` counts the API requests in flight (DrainGuard, an ASGI middleware, enters and leaves
it around each one, streams included). `drain_requests` is the shutdown sequence: from its
first moment /health answers 503 and new API requests get a 503 with Retry-After (a load
balancer moves traffic away; clients retry elsewhere), while requests in flight run on for
up to the grace period. Those still running then end with an explicit error: a stream gets
an error event and `[DONE]`, a plain request a 503 envelope. No answer is cut silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.backend import Backend
from gateway.errors import APIError, StatusCounter

log = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/generate")
SHUTDOWN_MESSAGE = "the server is shutting down; retry on another instance"
FLUSH_S = 5.0  # after the grace: time for the ended requests to send their last bytes


class Drain:
    """Whether the server is draining, and the API requests still in flight."""

    def __init__(self) -> None:
        self.is_draining = False
        self.num_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()  # set by a second signal: the grace ends now

    def begin(self) -> None:
        """From now on /health is 503 and new API requests are refused."""
        self.is_draining = True

    def hurry(self) -> None:
        """End the grace now: what still runs ends with its explicit error at once."""
        self._hurry.set()

    async def wait_grace(self, grace_s: float) -> bool:
        """Wait until no request is in flight; False if `grace_s` passed or hurry() came first."""
        idle = asyncio.ensure_future(self._idle.wait())
        hurried = asyncio.ensure_future(self._hurry.wait())
        done, pending = await asyncio.wait(
            {idle, hurried}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        return idle in done

    def enter(self) -> None:
        self.num_in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.num_in_flight -= 1
        if self.num_in_flight == 0:
            self._idle.set()

    async def linger(self, seconds: float) -> None:
        """Keep refusing for `seconds` more, or until hurry(): the port stays open meanwhile."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), seconds)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


async def drain_requests(
    drain: Drain, engine: Backend | None, grace_s: float, min_s: float = 0.0
) -> None:
    """Refuse new requests, let those in flight finish for `grace_s`, then end the rest.

    The drain lasts at least `min_s`, answering 503 all along: a balancer that has not yet
    seen /health turn 503 gets a 503 it retries elsewhere, not a refused connection (the
    requests in flight can all be done within milliseconds of the signal).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    drain.begin()
    log.info("draining: %d requests in flight, %s s of grace", drain.num_in_flight, grace_s)
    if not await drain.wait_grace(grace_s):
        log.warning("ending %d requests still running after %s s", drain.num_in_flight, grace_s)
        if engine is not None:
            engine.abort_all(SHUTDOWN_MESSAGE)
        if not await drain.wait_idle(FLUSH_S):
            log.warning("%d requests did not end; closing their connections", drain.num_in_flight)
    await drain.linger(min_s - (loop.time() - start))


class DrainGuard:
    """Counts API requests in flight; while draining, answers new ones with a 503."""

    def __init__(self, app: ASGIApp, drain: Drain, count: StatusCounter) -> None:
        self.app = app
        self.drain = drain
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self.drain.is_draining:
            self.count(scope["path"], 503)
            headers = {"Retry-After": "5", "Connection": "close"}
            error = APIError(503, SHUTDOWN_MESSAGE, code="server_shutting_down", headers=headers)
            await error.response()(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()
