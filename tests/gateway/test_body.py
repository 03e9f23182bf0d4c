"""Request bodies are parsed strictly: every malformed body is a 400 envelope, never a 500."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from gateway import body as body_module
from gateway.protocol import CompletionRequest
from gateway.workers import Workers
from tests.gateway.fake_engine import running_app

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def chat_body(content: str) -> str:
    return '{"messages": [{"role": "user", "content": "' + content + '"}]}'


# Raw bodies as a client may send them: json.dumps() could not even write most of these.
MALFORMED = [
    ("/v1/completions", '{"prompt": "a\\ud800b"}', None),  # a lone surrogate
    ("/v1/completions", '{"prompt": "a\\udc00"}', None),
    (CHAT, chat_body("a\\ud800b"), None),
    ("/generate/", '{"prompt": "a\\ud800b"}', None),
    ("/v1/completions", '{"prompt": ' + nested(1000) + "}", None),  # RecursionError before
    (CHAT, '{"messages": ' + nested(1000) + "}", None),
    ("/v1/completions", '{"prompt": "x", "user": ' + nested(100_000) + "}", None),
    ("/v1/completions", '{"prompt": "x", "temperature": 1e400}', "temperature"),
    ("/v1/completions", '{"prompt": "x", "max_tokens": 1e400}', "max_tokens"),
    ("/v1/completions", '{"prompt": "x", "seed": -1e400}', "seed"),
    ("/v1/completions", '{"prompt": "x", "logit_bias": {"65": 1e400}}', "logit_bias"),
    ("/v1/completions", '{"prompt": "x", "presence_penalty": NaN}', None),
    ("/v1/completions", b'{"prompt": "\xff\xfe"}', None),  # not UTF-8
    ("/v1/completions", b'{"prompt": "\xed\xa0\x80"}', None),  # a surrogate encoded as UTF-8
    ("/v1/completions", "", None),
    ("/v1/completions", "null", None),
    ("/v1/completions", '"prompt"', None),
]


@pytest.mark.parametrize(("path", "body", "param"), MALFORMED, ids=range(len(MALFORMED)))
async def test_a_malformed_body_is_a_400_envelope(
    path: str, body: str | bytes, param: str | None
) -> None:
    async with running_app() as (client, engine, _):
        r = await client.post(path, content=body, headers=JSON)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param)
    assert not engine.submitted


# OpenAI types its parameters strictly: a string is not a number, false is not 0.
WRONG_TYPES = [
    ("/v1/completions", {"prompt": "x", "seed": "42"}, "seed"),
    ("/v1/completions", {"prompt": "x", "temperature": False}, "temperature"),
    ("/v1/completions", {"prompt": "x", "temperature": "0.5"}, "temperature"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "16"}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "n": True}, "n"),
    ("/v1/completions", {"prompt": "x", "stream": "true"}, "stream"),
    ("/v1/completions", {"prompt": "x", "stream": 1}, "stream"),
    ("/v1/completions", {"prompt": "x", "echo": "yes"}, "echo"),
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", {"prompt": [1, "a"]}, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": 3}, "stop"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"65": "1"}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"x": 1}}, "logit_bias"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "user", "content": "x"}], "logprobs": 1}, "logprobs"),
    (CHAT, {"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens"),
    (CHAT, {"messages": {"role": "user"}}, "messages"),
    ("/generate/", {"prompt": "x", "max_tokens": "8"}, "max_tokens"),
    ("/generate/", {"prompt": "x", "temperature": None}, "temperature"),
]


@pytest.mark.parametrize(("path", "body", "param"), WRONG_TYPES, ids=range(len(WRONG_TYPES)))
async def test_a_value_of_the_wrong_json_type_is_a_400_naming_it(
    path: str, body: dict[str, Any], param: str
) -> None:
    async with running_app() as (client, engine, _):
        r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)
    assert not engine.submitted


async def test_numbers_of_the_right_json_type_still_pass() -> None:
    body = {"prompt": "x", "max_tokens": 2, "temperature": 1, "top_p": 0.5, "seed": 7,
            "logit_bias": {"65": -1}, "stream": False}  # fmt: skip
    async with running_app() as (client, engine, _):
        r = await client.post("/v1/completions", json=body)
        pair = '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "max_tokens": 2}'
        chat = await client.post(CHAT, content=pair, headers=JSON)  # a surrogate pair is fine
    assert r.status_code == 200 and chat.status_code == 200, (r.text, chat.text)
    assert engine.submitted[0][2].temperature == 1.0 and engine.submitted[0][2].seed == 7


async def test_a_huge_integer_is_a_400_or_accepted_never_a_500() -> None:
    async with running_app() as (client, _, _):
        for field in ("seed", "max_tokens", "n", "top_k", "logprobs"):
            body = {"prompt": "x", "max_tokens": 2, field: 10**400}
            r = await client.post("/v1/completions", content=json.dumps(body), headers=JSON)
            assert r.status_code in (200, 400), (field, r.text)
        r = await client.post(
            "/v1/completions", content='{"prompt": [' + str(10**40) + "]}", headers=JSON
        )
        assert r.status_code == 400


async def test_errors_never_echo_a_huge_client_string() -> None:
    huge = "m" * 1_000_000
    async with running_app() as (client, _, _):
        model = await client.post("/v1/completions", json={"model": huge, "prompt": "x"})
        key = await client.post("/v1/completions", json={"prompt": "x", "logit_bias": {huge: 1}})
        route = await client.get("/v1/models/" + huge[:60_000])  # httpx's longest URL
        path = await client.get("/" + huge[:60_000])
    for r in (model, key, route, path):
        assert r.status_code in (400, 404), r.text[:200]
        assert len(r.content) < 2000
        assert len(r.headers.get("content-length", "0")) < 8


async def test_an_unexpected_error_is_a_500_envelope_with_a_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_app() as (_, engine, app):
        engine.tokenize = None  # type: ignore[assignment,method-assign]  # calling it raises
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
            r = await raw.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 500 and "Traceback" not in r.text
    error = r.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    request_id = r.headers["x-request-id"]
    assert request_id in error["message"]
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x", "stop": [1] * 1_000_000}, "stop"),
        ("/v1/completions", {"prompt": [5] + ["a"] * 800_000}, "prompt"),
        ("/v1/completions", {"prompt": "x", "logit_bias": {str(i): "a" for i in range(200_000)}},
         "logit_bias"),
        (CHAT, {"messages": [1] * 1_000_000}, "messages"),
        (CHAT, {"messages": [{"role": "user", "content": [1] * 1_000_000}]}, "messages.0.content"),
    ],
    ids=["stop", "prompt", "logit_bias", "messages", "content"],
)  # fmt: skip
async def test_a_4_mb_list_of_wrong_items_is_refused_in_a_moment(
    path: str, body: dict[str, Any], param: str
) -> None:
    raw = json.dumps(body).encode()
    async with running_app(max_body_bytes=8 * 2**20) as (client, engine, _):
        start = time.perf_counter()
        r = await client.post(path, content=raw, headers=JSON)
        elapsed = time.perf_counter() - start
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param)
    assert elapsed < 1.0  # pydantic reported every bad item: 10-15 s on the event loop before
    assert not engine.submitted


async def test_a_large_body_is_parsed_in_a_worker_thread_a_small_one_on_the_loop() -> None:
    threads: list[str] = []
    original = body_module.parse_json

    def spy(raw: bytes, model: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(raw, model)

    def request_with(raw: bytes) -> Request:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        return Request({"type": "http", "method": "POST", "headers": []}, receive)

    workers = Workers(1)
    body_module.parse_json = spy  # type: ignore[assignment]
    try:
        small = json.dumps({"prompt": "hi"}).encode()
        large = json.dumps({"prompt": "word " * 20_000}).encode()  # 100 KB
        assert len(large) > body_module.LARGE_BODY > len(small)
        await body_module.parse_body(request_with(small), CompletionRequest, workers)
        req = await body_module.parse_body(request_with(large), CompletionRequest, workers)
    finally:
        body_module.parse_json = original  # type: ignore[assignment]
        workers.shutdown()
    assert isinstance(req.prompt, str) and len(req.prompt) == 100_000
    assert threads[0] == threading.current_thread().name  # the event loop's own thread
    assert threads[1].startswith("prompt")  # the workers' thread


async def test_a_seed_beyond_64_bits_is_a_400_naming_seed() -> None:
    async with running_app() as (client, _, _):
        body = '{"prompt": "x", "seed": 99999999999999999999999}'
        r = await client.post("/v1/completions", content=body, headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"


async def test_a_client_gone_before_its_body_arrived_is_a_499_not_a_500() -> None:
    sent = [{"type": "http.request", "body": b'{"prompt": "ab', "more_body": True}]

    async def receive() -> dict[str, Any]:  # part of the body, then the client is gone
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    with pytest.raises(body_module.APIError) as caught:
        await body_module.parse_body(Request(scope, receive), CompletionRequest)
    assert caught.value.status == 499
