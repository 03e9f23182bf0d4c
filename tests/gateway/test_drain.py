"""Draining on shutdown: refuse new requests, finish running ones, end the rest explicitly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from gateway.drain import drain_requests
from tests.gateway.fake_engine import FakeEngine, fake_model, running_app

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def datas(response: httpx.Response) -> list[Any]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    return [d if d == "[DONE]" else json.loads(d) for d in lines]


async def _long_stream(client: httpx.AsyncClient) -> asyncio.Task[httpx.Response]:
    """A stream far longer than any grace here, running by the time this returns."""
    body = {"prompt": "x", "max_tokens": 2000, "stream": True}
    stream = asyncio.create_task(client.post("/v1/completions", json=body))
    await asyncio.sleep(0.05)
    return stream


async def test_draining_turns_health_and_new_requests_into_503s() -> None:
    async with running_app() as (client, _, app):
        state = app.state.gateway
        drained = asyncio.create_task(drain_requests(state.drain, state.engine, grace_s=5))
        await asyncio.sleep(0)  # the drain starts
        health = await client.get("/health")
        new = await client.post("/v1/completions", json={"prompt": "x"})
        models = await client.get("/v1/models")
        metrics = await client.get("/metrics")
        await asyncio.wait_for(drained, 1)  # nothing was in flight: done at once
    assert health.status_code == 503 and health.json() == {"status": "draining"}
    assert new.status_code == 503 and new.headers["retry-after"] == "5"
    assert new.json()["error"]["code"] == "server_shutting_down"
    assert new.headers["connection"] == "close"
    assert models.status_code == 503
    assert metrics.status_code == 200  # still scraped while draining


async def test_requests_in_flight_finish_within_the_grace() -> None:
    engine = FakeEngine(step_delay_s=0.01)
    async with running_app(engine) as (client, _, app):
        state = app.state.gateway
        body = {"prompt": "x", "max_tokens": 20}
        plain = asyncio.create_task(client.post("/v1/completions", json=body))
        stream = asyncio.create_task(client.post("/v1/completions", json={**body, "stream": True}))
        await asyncio.sleep(0.05)
        assert state.drain.num_in_flight == 2
        await asyncio.wait_for(drain_requests(state.drain, state.engine, grace_s=5), 2)
        plain_r, stream_r = await plain, await stream
    assert plain_r.status_code == 200 and plain_r.json()["choices"][0]["finish_reason"] == "length"
    events = datas(stream_r)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"


async def test_hurry_ends_the_grace_at_once_with_the_explicit_errors() -> None:
    engine = FakeEngine(fake_model(n_ctx=4096), step_delay_s=0.01)
    async with running_app(engine) as (client, _, app):
        state = app.state.gateway
        stream = await _long_stream(client)
        drainer = asyncio.create_task(drain_requests(state.drain, state.engine, grace_s=30))
        await asyncio.sleep(0.05)
        state.drain.hurry()  # what a second SIGTERM does
        await asyncio.wait_for(drainer, 3)
        events = datas(await stream)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "server_shutting_down"


async def test_requests_past_the_grace_end_with_an_explicit_error() -> None:
    engine = FakeEngine(fake_model(n_ctx=4096), step_delay_s=0.01)
    async with running_app(engine) as (client, _, app):
        state = app.state.gateway
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 200}
        plain = asyncio.create_task(client.post(CHAT, json=body))
        stream = asyncio.create_task(client.post(CHAT, json={**body, "stream": True, "n": 2}))
        await asyncio.sleep(0.05)
        assert state.drain.num_in_flight == 2
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(drain_requests(state.drain, state.engine, grace_s=0.2), 3)
        elapsed = loop.time() - start
        plain_r, stream_r = await plain, await stream
        metrics = state.metrics.render()[0].decode()
    assert 0.2 <= elapsed < 1.5
    assert plain_r.status_code == 503 and plain_r.headers["retry-after"]
    assert plain_r.json()["error"]["code"] == "server_shutting_down"
    events = datas(stream_r)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "server_shutting_down"
    assert "shutting down" in events[-2]["error"]["message"]
    assert not any(c.get("finish_reason") for e in events[:-2] for c in e["choices"])
    assert not engine.active
    assert 'status="503"' in metrics


async def test_an_idle_drain_keeps_answering_503_for_its_minimum_then_a_hurry_ends_it() -> None:
    async with running_app() as (client, _, app):
        state = app.state.gateway
        loop = asyncio.get_running_loop()
        start = loop.time()
        drainer = asyncio.create_task(drain_requests(state.drain, state.engine, 5, min_s=0.3))
        await asyncio.sleep(0.1)
        assert not drainer.done()  # nothing in flight, yet the port stays open...
        late = await client.post("/v1/completions", json={"prompt": "x"})
        assert late.status_code == 503  # ...answering what a balancer retries elsewhere
        await asyncio.wait_for(drainer, 2)
        assert loop.time() - start >= 0.3
        drainer = asyncio.create_task(drain_requests(state.drain, state.engine, 5, min_s=30))
        await asyncio.sleep(0.05)
        state.drain.hurry()  # a second SIGTERM: no more waiting
        await asyncio.wait_for(drainer, 1)


async def test_the_minimum_holds_when_the_grace_ends_requests_too() -> None:
    engine = FakeEngine(fake_model(n_ctx=4096), step_delay_s=0.01)
    async with running_app(engine) as (client, _, app):
        state = app.state.gateway
        stream = await _long_stream(client)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(drain_requests(state.drain, state.engine, 0.05, min_s=0.5), 3)
        assert loop.time() - start >= 0.5
        await stream
