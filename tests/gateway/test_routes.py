"""The API as a client sees it, on a fake engine: completions, chat, /generate/, models."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.gateway.fake_engine import TEXT, FakeEngine, expected_text, running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the engine bridges to asyncio


def events(response: httpx.Response) -> list[Any]:
    """The data of each SSE event; [DONE] stays a string."""
    datas = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


async def test_completion_returns_the_text_and_usage() -> None:
    async with running_app() as (client, engine, _):
        r = await client.post("/v1/completions", json={"model": "fake", "prompt": "hi"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "fake"
    assert body["choices"][0]["text"] == expected_text(16)  # OpenAI's default max_tokens
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 16,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert engine.submitted[0][1] == engine.tokenize("hi", True, True)


async def test_completion_takes_what_vllm_router_adds_to_every_body() -> None:
    body = {"prompt": "x", "max_tokens": 2, "skip_special_tokens": True, "no_stop_trim": False}
    async with running_app() as (client, _, _):
        assert (await client.post("/v1/completions", json=body)).status_code == 200


async def test_completion_maps_every_sampling_parameter() -> None:
    body = {
        "prompt": "x", "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "seed": 7,
        "stop": "zz", "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "logit_bias": {"65": -100}, "top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1,
        "ignore_eos": True, "user": "u1",
    }  # fmt: skip
    async with running_app() as (client, engine, _):
        assert (await client.post("/v1/completions", json=body)).status_code == 200
    params = engine.submitted[0][2]
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (3, 0.5, 0.9, 7)
    assert params.stop == ("zz",) and params.logit_bias == {65: -100.0}
    assert (params.top_k, params.min_p, params.repetition_penalty) == (5, 0.05, 1.1)
    assert (params.presence_penalty, params.frequency_penalty) == (0.1, 0.2)
    assert params.ignore_eos


async def test_prompt_lists_give_a_choice_each_and_count_every_prompt() -> None:
    async with running_app() as (client, engine, _):
        body = {"prompt": ["a", "bc"], "max_tokens": 2, "n": 2}
        r = await client.post("/v1/completions", json=body)
        ids = await client.post("/v1/completions", json={"prompt": [[70, 71], [72]]})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"] for c in choices] == [expected_text(2, 0, i % 2) for i in range(4)]
    assert r.json()["usage"]["prompt_tokens"] == 2 + 3  # each prompt once, not once per choice
    assert ids.status_code == 200 and len(ids.json()["choices"]) == 2
    assert engine.submitted[-1][1] == [72]


async def test_stop_string_ends_the_text_before_it() -> None:
    async with running_app() as (client, _, _):
        body = {"prompt": "x", "max_tokens": 30, "stop": ["fox", "zzz"]}
        r = await client.post("/v1/completions", json=body)
    choice = r.json()["choices"][0]
    assert choice["text"] == TEXT[: TEXT.index("fox")] and choice["finish_reason"] == "stop"


async def test_echo_puts_the_prompt_first() -> None:
    async with running_app() as (client, _, _):
        r = await client.post(
            "/v1/completions", json={"prompt": "Q:", "max_tokens": 2, "echo": True}
        )
        s = await client.post(
            "/v1/completions", json={"prompt": "Q:", "max_tokens": 2, "echo": True, "stream": True}
        )
    assert r.json()["choices"][0]["text"] == "Q:" + expected_text(2)
    assert "".join(e["choices"][0]["text"] for e in events(s)[:-1]) == "Q:" + expected_text(2)


async def test_completion_logprobs_have_tokens_alternatives_and_offsets() -> None:
    async with running_app() as (client, _, _):
        r = await client.post(
            "/v1/completions", json={"prompt": "x", "max_tokens": 3, "logprobs": 2}
        )
    logprobs = r.json()["choices"][0]["logprobs"]
    assert logprobs["tokens"] == list(expected_text(3))
    assert logprobs["token_logprobs"] == [-0.5] * 3
    assert logprobs["top_logprobs"][0] == {"T": -0.5, "U": -1.5}
    assert logprobs["text_offset"] == [0, 1, 2]


async def test_completion_stream_equals_the_whole_response() -> None:
    async with running_app() as (client, _, _):
        body = {"prompt": "x", "max_tokens": 5, "n": 2, "stream": True}
        r = await client.post(
            "/v1/completions", json={**body, "stream_options": {"include_usage": True}}
        )
        whole = await client.post("/v1/completions", json={**body, "stream": False})
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = events(r)
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"] == whole.json()["usage"]
    assert r.headers["x-request-id"] == chunks[0]["id"]
    assert whole.headers["x-request-id"] == whole.json()["id"]
    for i, choice in enumerate(whole.json()["choices"]):
        streamed = [c["choices"][0] for c in chunks[:-2] if c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in streamed) == choice["text"]
        assert streamed[-1]["finish_reason"] == "length"


async def test_chat_renders_vicuna_and_answers_as_the_assistant() -> None:
    async with running_app() as (client, engine, _):
        messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
        r = await client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4})
    body = r.json()
    assert body["object"] == "chat.completion" and r.headers["x-request-id"] == body["id"]
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": expected_text(4),
        "refusal": None,
    }
    prompt = engine.detokenize(engine.submitted[0][1])
    assert prompt.endswith(" USER: Hi ASSISTANT:") and prompt.startswith("A chat between")
    assert body["usage"]["prompt_tokens"] == len(engine.submitted[0][1])


async def test_chat_max_completion_tokens_wins_and_default_fills_the_context() -> None:
    async with running_app() as (client, engine, _):
        messages = [{"role": "user", "content": "Hi"}]
        body = {"messages": messages, "max_tokens": 9, "max_completion_tokens": 2}
        await client.post("/v1/chat/completions", json=body)
        await client.post("/v1/chat/completions", json={"messages": messages})
    assert engine.submitted[0][2].max_tokens == 2
    prompt_len = len(engine.submitted[1][1])
    assert engine.submitted[1][2].max_tokens == engine.model.n_ctx - prompt_len


async def test_chat_stream_sends_role_then_content_then_finish_then_usage() -> None:
    async with running_app() as (client, _, _):
        body = {
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 1,
        }  # fmt: skip
        r = await client.post("/v1/chat/completions", json=body)
    chunks = events(r)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == expected_text(3)
    assert deltas[-1] == {} and chunks[-3]["choices"][0]["finish_reason"] == "length"
    first_logprob = chunks[1]["choices"][0]["logprobs"]["content"][0]
    assert first_logprob["token"] == "T" and first_logprob["bytes"] == [84]
    assert first_logprob["top_logprobs"][0]["token"] == "T"
    assert chunks[-2]["usage"]["completion_tokens"] == 3 and chunks[-1] == "[DONE]"


async def test_chat_json_response_format_sends_a_grammar() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    async with running_app() as (client, engine, _):
        messages = [{"role": "user", "content": "json"}]
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        await client.post(
            "/v1/chat/completions", json={"messages": messages, "response_format": fmt}
        )
        fmt = {"type": "json_object"}
        await client.post(
            "/v1/chat/completions", json={"messages": messages, "response_format": fmt}
        )
    schema_grammar, object_grammar = (s[2].grammar or "" for s in engine.submitted)
    assert '"\\"ok\\""' in schema_grammar and "boolean" in schema_grammar
    assert object_grammar.startswith("root ::= object")


async def test_generate_is_the_legacy_endpoint() -> None:
    async with running_app() as (client, engine, _):
        r = await client.post("/generate/", json={"prompt": "Tell me", "max_tokens": 4})
        # Without the slash: redirected, as the original FastAPI server did.
        r2 = await client.post("/generate", json={"prompt": "Tell me", "max_tokens": 4})
    assert r.status_code == 200 and r.json() == {"text": expected_text(4)}
    assert r2.status_code == 307 and r2.headers["location"].endswith("/generate/")
    assert engine.detokenize(engine.submitted[0][1]) == "Tell me"  # no chat template
    assert engine.submitted[0][2].temperature == 0.7


async def test_models_lists_the_served_name() -> None:
    async with running_app(served_model_name="vicuna-7b") as (client, _, _):
        listing = (await client.get("/v1/models")).json()
        card = await client.get("/v1/models/vicuna-7b")
        missing = await client.get("/v1/models/gpt-4")
        ok = await client.post("/v1/completions", json={"model": "vicuna-7b", "prompt": "x"})
    assert [m["id"] for m in listing["data"]] == ["vicuna-7b"]
    assert card.json()["id"] == "vicuna-7b" and missing.status_code == 404
    assert ok.status_code == 200 and ok.json()["model"] == "vicuna-7b"


async def test_health_and_metrics_once_loaded() -> None:
    async with running_app(FakeEngine()) as (client, _, _):
        await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert metrics.status_code == 200
    assert 'gateway_requests_total{endpoint="/v1/completions"' in metrics.text
