"""Prompt size limits and requests that can never fit: 400s before any tokenizing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.gateway.fake_engine import FakeEngine, running_app

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingEngine(FakeEngine):
    """A FakeEngine that counts the tokenizer's calls."""

    def __init__(self) -> None:
        super().__init__(max_queue=4)
        self.num_tokenized = 0

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        self.num_tokenized += 1
        return super().tokenize(text, add_bos, parse_special)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a"] * 9}, "prompt"),  # 4 slots + 4 waiting places: 9 can never run
        ({"prompt": ["a"] * 3, "n": 3}, "n"),
        ({"prompt": [[70]] * 9}, "prompt"),
        ({"prompt": ["a"] * 2000}, "prompt"),
    ],
)
async def test_a_request_that_can_never_fit_is_a_400_not_a_429(
    body: dict[str, Any], param: str
) -> None:
    engine = CountingEngine()
    async with running_app(engine, max_queue=4) as (client, _, _):
        start = time.perf_counter()
        r = await client.post("/v1/completions", json=body)
        elapsed = time.perf_counter() - start
        num_tokenized = engine.num_tokenized
        fits = await client.post("/v1/completions", json={"prompt": ["a"] * 4, "n": 2})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and "8" in error["message"]
    assert "retry-after" not in r.headers
    assert num_tokenized == 0 and elapsed < 1.0
    assert fits.status_code == 200  # 8 sequences fit exactly


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x" * 101}, "prompt"),
        ("/v1/completions", {"prompt": ["x" * 60, "y" * 60]}, "prompt"),
        (CHAT, {"messages": [{"role": "user", "content": "x" * 101}]}, "messages"),
        (CHAT, {"messages": [{"role": "system", "content": "x" * 60}] * 2}, "messages"),
        ("/generate/", {"prompt": "x" * 101}, "prompt"),
    ],
)
async def test_a_prompt_over_the_character_limit_is_a_400_before_tokenizing(
    path: str, body: dict[str, Any], param: str
) -> None:
    engine = CountingEngine()
    async with running_app(engine, max_prompt_chars=100) as (client, _, _):
        r = await client.post(path, json=body)
        num_tokenized = engine.num_tokenized
        ok = await client.post(path, json={**body, **_small(path)})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == "prompt_too_long"
    assert "100 characters" in error["message"]
    assert num_tokenized == 0 and ok.status_code == 200


def _small(path: str) -> dict[str, Any]:
    if path == CHAT:
        return {"messages": [{"role": "user", "content": "x" * 50}], "max_tokens": 2}
    return {"prompt": "x" * 50, "max_tokens": 2}


async def test_a_prompt_over_the_token_limit_is_a_400() -> None:
    async with running_app(max_prompt_tokens=10) as (client, engine, _):
        text = await client.post("/v1/completions", json={"prompt": "x" * 12})
        ids = await client.post("/v1/completions", json={"prompt": [70] * 11})
        chat = await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
        ok = await client.post("/v1/completions", json={"prompt": [70] * 10, "max_tokens": 2})
    for r, param in ((text, "prompt"), (ids, "prompt"), (chat, "messages")):
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and error["code"] == "prompt_too_long"
        assert "10 tokens" in error["message"]
    assert ok.status_code == 200 and len(engine.submitted) == 1
