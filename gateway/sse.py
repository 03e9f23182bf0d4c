"""The client's connection: Server-Sent Events out, and an abort when the client goes away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Coroutine
from typing import Any, TypeVar

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.errors import CLIENT_CLOSED, APIError
from gateway.streams import ChunkStream

log = logging.getLogger(__name__)
T = TypeVar("T")
DONE = "[DONE]"


class EventStream(EventSourceResponse):
    """`data: <chunk>` for each chunk, then `data: [DONE]`.

    However the response ends (the stream is done, the client disconnects, a write waits
    longer than `send_timeout` on a client that stopped reading, the connection fails), the
    chunk stream is closed, which aborts what its request still runs and frees its slot.
    """

    def __init__(self, chunks: ChunkStream, send_timeout: float) -> None:
        # X-Accel-Buffering: a proxy such as nginx must pass each event on at once.
        super().__init__(
            _events(chunks),
            sep="\n",
            headers={"X-Accel-Buffering": "no"},
            send_timeout=send_timeout or None,  # 0: wait on the client forever
        )
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.warning(
                "%s: the client stopped reading for %s s; request aborted",
                self._chunks.run.request_id,
                self.send_timeout,
            )
        except OSError as e:  # the connection failed under the write: the client is gone
            log.info("%s: the connection failed: %s", self._chunks.run.request_id, e)
        finally:
            await self._chunks.aclose()


async def _events(chunks: ChunkStream) -> AsyncGenerator[dict[str, str], None]:
    async for data in chunks:
        yield {"data": data}
    yield {"data": DONE}


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, cancelling it (and so aborting its engine request) if the client leaves."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
    if task.cancelled():
        # The request's trace recorded the 499 when the cancellation closed its outputs.
        raise APIError(CLIENT_CLOSED, "the client closed the connection", is_counted=True)
    return task.result()


async def _disconnected(request: Request) -> None:
    """Return once the client has gone; the body was read already, so nothing else arrives."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
