"""The app's wiring: lifespan (load, shutdown), CORS, no state shared between apps."""

from __future__ import annotations

import pytest

from tests.gateway.fake_engine import FakeEngine, running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_shutdown_stops_the_engine() -> None:
    engine = FakeEngine()
    async with running_app(engine) as (client, _, _):
        assert (await client.get("/health")).status_code == 200
        assert engine.is_ready
    assert engine.is_shut_down


async def test_cors_answers_preflight_for_allowed_origins_only() -> None:
    async with running_app(cors_origins=("http://app.test",), api_key="k") as (client, _, _):
        headers = {"Origin": "http://app.test", "Access-Control-Request-Method": "POST"}
        allowed = await client.options("/v1/chat/completions", headers=headers)
        other = await client.options(
            "/v1/chat/completions", headers={**headers, "Origin": "http://evil.test"}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.test"
    assert "access-control-allow-origin" not in other.headers


async def test_without_cors_origins_no_cors_headers() -> None:
    async with running_app() as (client, _, _):
        r = await client.get("/health", headers={"Origin": "http://app.test"})
    assert "access-control-allow-origin" not in r.headers


async def test_two_apps_share_nothing() -> None:
    first, second = FakeEngine(), FakeEngine()
    async with (
        running_app(first, served_model_name="a") as (a, _, _),
        running_app(second, served_model_name="b") as (b, _, _),
    ):
        await a.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        names = [(await c.get("/v1/models")).json()["data"][0]["id"] for c in (a, b)]
    assert names == ["a", "b"]
    assert len(first.submitted) == 1 and not second.submitted


async def test_refused_requests_are_counted_in_the_metrics() -> None:
    async with running_app(api_key="k") as (client, _, _):
        await client.post("/v1/completions", json={"prompt": "x"})  # 401
        auth = {"Authorization": "Bearer k"}
        await client.post("/v1/completions", json={"prompt": "x", "top_p": 9}, headers=auth)
        text = (await client.get("/metrics")).text
    assert 'endpoint="/v1/completions",finish_reason="none",model="fake",status="401"' in text
    assert 'status="400"' in text
