"""Every failure reaches the client as OpenAI's error envelope with the right status."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from batching.engine import EngineUnavailableError
from gateway.app import create_app
from gateway.settings import Settings
from tests.gateway.fake_engine import FakeEngine, running_app, wait_for_load

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "temperature": 5}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 5}, "n"),  # more than the fake's 4 slots
        ({"prompt": "x", "logprobs": 21}, "logprobs"),
        ({"prompt": "x", "logit_bias": {"999999": 1}}, "logit_bias"),
        ({"prompt": "x", "logit_bias": {"12": 500}}, "logit_bias"),
        ({"prompt": "x", "stop": ["a"] * 17}, "stop"),
        ({"prompt": [1, 99999]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": {"a": 1}}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "max_token": 5}, "max_token"),  # a misspelt max_tokens, as chat
        ({"prompt": "x", "skip_special_tokens": False}, "skip_special_tokens"),
    ],
)
async def test_invalid_completion_parameters_are_400s_naming_the_param(
    body: dict[str, Any], param: str
) -> None:
    async with running_app() as (client, engine, _):
        r = await client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param or error["param"].startswith(param)
    assert not engine.submitted


async def test_invalid_chat_requests_are_400s() -> None:
    cases = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content.0.type",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "string", "not": {"const": "a"}}},
                },
            },
            "response_format.json_schema.schema.not",
        ),
    ]  # fmt: skip
    async with running_app() as (client, _, _):
        for body, param in cases:
            r = await client.post(CHAT, json=body)
            assert r.status_code == 400, r.text
            assert error_of(r)["param"].startswith(param)


async def test_a_body_that_is_not_json_is_a_400() -> None:
    async with running_app() as (client, _, _):
        r = await client.post("/v1/completions", content=b"{not json", headers=JSON)
        r2 = await client.post("/v1/completions", json=["a list"])
    assert r.status_code == 400 and "not valid JSON" in error_of(r)["message"]
    assert r2.status_code == 400


async def test_prompt_plus_max_tokens_over_the_context_is_context_length_exceeded() -> None:
    async with running_app() as (client, _, _):
        r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 300})
        long_prompt = await client.post("/v1/completions", json={"prompt": "x" * 300})
    error = error_of(r)
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["param"] == "max_tokens" and "256" in error["message"]
    assert error_of(long_prompt)["param"] == "prompt"


async def test_unknown_model_and_route_are_404s() -> None:
    async with running_app() as (client, _, _):
        model = await client.post("/v1/completions", json={"model": "gpt-4", "prompt": "x"})
        route = await client.get("/v1/nothing")
        method = await client.get("/v1/completions")
    assert model.status_code == 404 and error_of(model)["code"] == "model_not_found"
    assert route.status_code == 404 and error_of(route)["type"] == "not_found_error"
    assert method.status_code == 405 and error_of(method)["message"]


async def test_api_key_guards_the_api_but_not_health_or_metrics() -> None:
    async with running_app(api_key="s3cret") as (client, _, _):
        missing = await client.post("/v1/completions", json={"prompt": "x"})
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        legacy = await client.post("/generate/", json={"prompt": "x"})
        ok = await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    for r in (missing, wrong, legacy):
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    assert ok.status_code == 200 and health.status_code == 200 and metrics.status_code == 200


async def test_an_oversized_body_is_a_413() -> None:
    async with running_app(max_body_bytes=1000) as (client, engine, _):
        r = await client.post("/v1/completions", json={"prompt": "x" * 2000})

        async def chunked() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b" " * 400

        r2 = await client.post("/v1/completions", content=chunked(), headers=JSON)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    assert r2.status_code == 413
    assert not engine.submitted


async def test_a_full_queue_is_a_429_with_retry_after() -> None:
    engine = FakeEngine(max_queue=0)
    async with running_app(engine) as (client, _, _):
        engine.active.update({"a", "b", "c", "d"})  # the fake's 4 slots are busy
        r = await client.post("/v1/completions", json={"prompt": "x"})
        engine.active.clear()
        after = await client.post("/v1/completions", json={"prompt": "x"})
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert error_of(r)["type"] == "rate_limit_error"
    assert after.status_code == 200  # the server keeps serving
    assert "gateway_requests_rejected_total" in metrics


async def test_a_stopped_engine_is_a_503_with_retry_after() -> None:
    engine = FakeEngine()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise EngineUnavailableError("the engine is not running; try again later")

    async with running_app(engine) as (client, _, _):
        engine.submit = refuse  # type: ignore[method-assign, assignment]
        r = await client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert error_of(r)["code"] == "engine_unavailable"


async def test_an_engine_error_is_a_500_or_an_error_event_never_a_traceback() -> None:
    async with running_app(FakeEngine(fail_after=2)) as (client, _, _):
        r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 5})
        s = await client.post(
            "/v1/completions", json={"prompt": "x", "max_tokens": 5, "stream": True}
        )
    assert r.status_code == 500 and error_of(r)["message"] == "the KV cache is full"
    lines = [line for line in s.text.splitlines() if line]
    assert '"the KV cache is full"' in lines[-2] and lines[-1] == "data: [DONE]"


async def test_an_unexpected_exception_is_a_500_envelope() -> None:
    engine = FakeEngine()
    engine.submit = None  # type: ignore[assignment,method-assign]  # calling it raises
    app = create_app(Settings(model=Path("/models/fake.gguf")), lambda s, o: engine)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        await wait_for_load(client)
        r = await client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 500
    assert error_of(r)["message"].startswith("internal server error") and "Traceback" not in r.text


async def test_requests_before_the_model_is_loaded_get_503() -> None:
    release = threading.Event()

    def slow_loader(settings: Settings, observer: Any) -> FakeEngine:
        release.wait(timeout=10)
        return FakeEngine()

    app = create_app(Settings(model=Path("/models/fake.gguf")), slow_loader)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        health = await client.get("/health")
        api = await client.post("/v1/completions", json={"prompt": "x"})
        release.set()
        loaded = await wait_for_load(client)
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert api.status_code == 503 and api.headers["retry-after"]
    assert loaded.status_code == 200


async def test_a_model_that_fails_to_load_reports_why_on_health() -> None:
    def broken(settings: Settings, observer: Any) -> FakeEngine:
        raise ValueError("not a GGUF file")

    app = create_app(Settings(model=Path("/models/bad.gguf")), broken)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        health = await wait_for_load(client)
    assert health.status_code == 503
    assert health.json() == {"status": "error", "error": "ValueError: not a GGUF file"}
