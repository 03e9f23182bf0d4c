"""The worker API a router in front of several gateways polls: load, model and server facts."""

from __future__ import annotations

import asyncio

import pytest

from gateway.settings import Settings
from tests.gateway.fake_engine import FakeEngine, running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_get_load_counts_the_running_and_queued_requests() -> None:
    engine = FakeEngine(step_delay_s=0.05)
    async with running_app(engine) as (client, _, _):
        idle = (await client.get("/get_load")).json()
        body = {"prompt": "x", "max_tokens": 40}
        busy = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(6)]
        while len(engine.active) < 6:
            await asyncio.sleep(0.01)
        loaded = (await client.get("/get_load")).json()
        await asyncio.gather(*busy)
    assert idle == {"load": 0, "running": 0, "waiting": 0, "kv_cache_usage": 0.0}
    assert loaded["load"] == 6 and (loaded["running"], loaded["waiting"]) == (4, 2)
    assert loaded["kv_cache_usage"] == 6 * 16 / 1024


async def test_model_and_server_info_name_the_served_model_and_its_shape() -> None:
    async with running_app(served_model_name="team-7b", api_key="secret") as (client, engine, _):
        model = await client.get("/get_model_info")  # open, like /health: no key needed
        server = await client.get("/get_server_info")
    assert model.json() == {
        "model_path": "team-7b",
        "is_generation": True,
        "max_model_len": engine.model.n_ctx,
        "quantization": engine.model.quantization,
    }
    info = server.json()
    defaults = Settings()
    assert info["served_model_name"] == "team-7b" and info["slots"] == engine.model.n_slots
    assert (info["ctx_size"], info["max_queue"]) == (defaults.ctx_size, defaults.max_queue)
    assert set(info) == {  # the API key is never shown
        "served_model_name", "slots", "ctx_size", "batch_size", "max_queue", "n_gpu_layers",
        "version",
    }  # fmt: skip


async def test_worker_api_answers_503_while_the_model_loads() -> None:
    engine = FakeEngine()
    async with running_app(engine) as (client, _, app):
        app.state.gateway.serving = None  # as before the load finished
        r = await client.get("/get_load")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"]["message"] == "the model is still loading"
