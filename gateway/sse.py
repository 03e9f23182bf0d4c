"""The client's connection: Server-Sent Events out, and an abort when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

from sse_starlette import EventSourceResponse
from starlette.requests import Request

from gateway.errors import CLIENT_CLOSED, APIError

T = TypeVar("T")
DONE = "[DONE]"


def event_stream(
    chunks: AsyncGenerator[str, None], headers: dict[str, str] | None = None
) -> EventSourceResponse:
    """`data: <chunk>` for each chunk, then `data: [DONE]`.

    When the client disconnects, sse-starlette cancels or closes the generator; closing it
    closes the engine streams underneath, which aborts the request and frees its slot.
    """

    async def events() -> AsyncGenerator[dict[str, str], None]:
        async with aclosing(chunks):
            async for data in chunks:
                yield {"data": data}
        yield {"data": DONE}

    # X-Accel-Buffering: a proxy such as nginx must pass each event on at once.
    headers = {"X-Accel-Buffering": "no", **(headers or {})}
    return EventSourceResponse(events(), sep="\n", headers=headers)


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
