"""Fuzzing the request bodies: whatever a client sends, the answer is never a 5xx.

Bodies come from schemathesis (valid and invalid ones, from the OpenAPI document) and from
Hypothesis (the known fields with JSON values of any type and shape).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from gateway.openapi import openapi_document
from tests.gateway.fake_engine import FakeEngine, fake_model, running_app

CHAT = "/v1/chat/completions"
FUZZ = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document("llm-gateway", "0", False))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)
FIELDS = {
    "/v1/completions": ["prompt", "max_tokens", "logprobs", "echo", "suffix", "best_of"],
    CHAT: ["messages", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs",
           "response_format"],
}  # fmt: skip
SHARED = ["model", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
          "presence_penalty", "frequency_penalty", "logit_bias", "top_k", "min_p",
          "repetition_penalty", "ignore_eos"]  # fmt: skip


class Server:
    """One app on a fake engine for a whole fuzz run, driven from synchronous tests."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._stack = AsyncExitStack()
        engine = FakeEngine(fake_model(n_ctx=512, n_slots=4), max_queue=4)
        context = running_app(engine, max_queue=4, max_prompt_chars=2000)
        self.client, self.engine, _ = self._runner.run(self._stack.enter_async_context(context))

    def post(self, path: str, content: bytes) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        return self._runner.run(self.client.post(path, content=content, headers=headers))

    def close(self) -> None:
        self._runner.run(self._stack.aclose())
        self._runner.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def assert_no_server_error(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def cases(path: str) -> st.SearchStrategy[Any]:
    operation = SCHEMA[path]["POST"]
    return st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )


@pytest.mark.parametrize("path", ["/v1/completions", CHAT, "/generate/"])
def test_schemathesis_bodies_never_get_a_5xx(server: Server, path: str) -> None:
    @FUZZ
    @given(case=cases(path))
    def fuzz(case: Any) -> None:
        assert_no_server_error(server.post(path, encode(case.body)))

    fuzz()
    assert not server.engine.active  # and nothing is left running


@pytest.mark.parametrize("path", ["/v1/completions", CHAT])
def test_known_fields_with_any_json_value_never_get_a_5xx(server: Server, path: str) -> None:
    names = FIELDS[path] + SHARED
    bodies = st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=6)

    @FUZZ
    @given(body=bodies, base=st.booleans())
    def fuzz(body: dict[str, Any], base: bool) -> None:
        if base:  # keep the required field valid so that the others get looked at
            required = "prompt" if path == "/v1/completions" else "messages"
            body.setdefault(required, "x" if required == "prompt" else [{"role": "user"}])
        assert_no_server_error(server.post(path, json.dumps(body).encode()))

    fuzz()
    assert not server.engine.active
