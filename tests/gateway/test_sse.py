"""The client's connection: SSE framing, and a client that leaves aborts its request."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from starlette.applications import Starlette

from tests.gateway.fake_engine import FakeEngine, running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def call_and_leave(
    app: Starlette, path: str, body: dict[str, Any], leave_after: int
) -> list[bytes]:
    """POST like a client that disconnects after `leave_after` body messages (0: before any)."""
    chunks: list[bytes] = []
    gone = asyncio.Event()
    is_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal is_sent
        if not is_sent:
            is_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
        if len(chunks) >= leave_after:
            gone.set()
            if leave_after and message["type"] == "http.response.body":
                raise OSError("client gone")  # as a server's send fails on a closed socket

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000), "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    if leave_after == 0:
        asyncio.get_running_loop().call_later(0.05, gone.set)
    with contextlib.suppress(OSError):
        await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return chunks


async def test_a_stream_ends_with_done() -> None:
    async with running_app() as (client, _, _):
        r = await client.post(
            "/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True}
        )
    assert r.text.endswith("data: [DONE]\n\n")
    assert all(part.startswith("data: ") for part in r.text.split("\n\n") if part)


async def test_a_client_leaving_mid_stream_aborts_its_request() -> None:
    engine = FakeEngine(step_delay_s=0.01)
    async with running_app(engine) as (_, _, app):
        body = {"prompt": "x", "max_tokens": 200, "stream": True}
        chunks = await call_and_leave(app, "/v1/completions", body, leave_after=3)
        for _ in range(100):  # bounded: the abort lands within a few event-loop turns
            if engine.aborted:
                break
            await asyncio.sleep(0.01)
    assert b"[DONE]" not in b"".join(chunks)
    assert engine.aborted == [engine.submitted[0][0]]
    assert not engine.active  # its slot is free


async def test_a_client_leaving_a_plain_request_aborts_it_too() -> None:
    engine = FakeEngine(step_delay_s=0.01)
    async with running_app(engine) as (_, _, app):
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 80}
        chunks = await call_and_leave(app, "/v1/chat/completions", body, leave_after=0)
        metrics = app.state.gateway.metrics.render()[0].decode()
    assert engine.aborted == [engine.submitted[0][0]] and not engine.active
    assert b"choices" not in b"".join(chunks)
    assert 'status="499"' in metrics  # counted as "client closed the request"


async def call_without_reading(
    app: Starlette, body: dict[str, Any], read: int, fail_start: bool = False
) -> list[bytes]:
    """POST as a client that reads `read` body messages and then stops reading (never leaves).

    With `fail_start`, the connection is gone before the response starts.
    """
    chunks: list[bytes] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await asyncio.Event().wait()  # the client never says it left
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        if fail_start:
            raise OSError("client gone")
        if message["type"] == "http.response.body" and message.get("body"):
            if len(chunks) >= read:
                await asyncio.Event().wait()  # a full socket buffer: this write never ends
            chunks.append(message["body"])

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/completions",
        "raw_path": b"/v1/completions", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    with contextlib.suppress(OSError):
        await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return chunks


async def test_a_client_that_stops_reading_is_aborted_after_the_send_timeout() -> None:
    engine = FakeEngine(step_delay_s=0.001)
    async with running_app(engine, send_timeout=0.2) as (_, _, app):
        body = {"prompt": "x", "max_tokens": 250, "stream": True}
        loop = asyncio.get_running_loop()
        start = loop.time()
        chunks = await call_without_reading(app, body, read=3)
        elapsed = loop.time() - start
    assert len(chunks) == 3 and elapsed < 2  # the request ended: it did not hang to the limit
    assert engine.aborted == [engine.submitted[0][0]]
    assert not engine.active  # its slot is free


async def test_a_stream_whose_client_left_before_the_first_byte_frees_its_slot() -> None:
    engine = FakeEngine(step_delay_s=0.01)
    async with running_app(engine) as (_, _, app):
        body = {"prompt": "x", "max_tokens": 250, "stream": True}
        await call_without_reading(app, body, read=0, fail_start=True)
        for _ in range(100):
            if not engine.active:
                break
            await asyncio.sleep(0.01)
    assert engine.submitted and engine.aborted == [engine.submitted[0][0]]
    assert not engine.active


async def test_a_stream_refused_for_capacity_is_a_plain_429_without_a_role_chunk() -> None:
    engine = FakeEngine(max_queue=0)
    async with running_app(engine) as (client, _, _):
        engine.active.update({"a", "b", "c", "d"})  # every slot is busy
        body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 429 and r.headers["retry-after"]
    assert r.headers["content-type"] == "application/json"
    assert "assistant" not in r.text  # no role chunk went out for a request that never ran
