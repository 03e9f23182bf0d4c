"""Tool calling over HTTP on a fake engine that writes a scripted answer: OpenAI's wire format
whole and streamed, the prompt the model sees, and 400s for bad tools."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.gateway.fake_engine import FakeEngine, fake_model, running_app

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"
CALL = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if m.tool_calls %}"
    "{{ m.tool_calls[0].function.arguments.city }}{% endif %}{% endfor %}"
    "{% if tools %}[{{ tools[0].function.name }}]{% endif %}<assistant>"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def engine(script: str = CALL, chat_template: str | None = None) -> FakeEngine:
    return FakeEngine(fake_model(n_ctx=4096, chat_template=chat_template), script=script)


def events(response: httpx.Response) -> list[Any]:
    datas = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


async def test_a_tool_call_comes_back_in_openais_format() -> None:
    async with running_app(engine()) as (client, fake, _):
        body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required"}
        r = await client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["refusal"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert data["system_fingerprint"].startswith("fp_")
    assert r.headers["x-request-id"] == data["id"]
    grammar = fake.submitted[0][2].grammar or ""
    assert '"\\"get_weather\\""' in grammar and '"\\"response\\""' not in grammar


async def test_a_streamed_call_names_itself_first_then_sends_its_arguments() -> None:
    async with running_app(engine()) as (client, _, _):
        body = {
            "messages": ASK, "tools": TOOLS, "stream": True,
            "stream_options": {"include_usage": True},
        }  # fmt: skip
        r = await client.post(CHAT, json=body)
    chunks = events(r)
    assert chunks[-1] == "[DONE]" and r.headers["x-request-id"] == chunks[0]["id"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-3]]
    first = deltas[0]["tool_calls"][0]
    assert set(first) == {"index", "id", "type", "function"}
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    rest = [d["tool_calls"][0] for d in deltas[1:]]
    assert all(set(c) == {"index", "function"} and c["index"] == 0 for c in rest)
    assert "".join(c["function"]["arguments"] for c in rest) == '{"city": "Paris"}'
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["usage"] is None for c in chunks[:-2])  # null until the usage chunk
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["completion_tokens"] == len(CALL)


async def test_auto_may_answer_in_text() -> None:
    async with running_app(engine('{"response": "Sunny \\"now\\""}')) as (client, fake, _):
        r = await client.post(CHAT, json={"messages": ASK, "tools": TOOLS})
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == 'Sunny "now"' and "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"
    assert '"\\"response\\""' in (fake.submitted[0][2].grammar or "")


async def test_a_tool_round_trip_reaches_the_vicuna_prompt() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    ]
    async with running_app(engine("{}")) as (client, fake, _):
        with_tools = await client.post(CHAT, json={"messages": messages, "tools": TOOLS})
        without = await client.post(CHAT, json={"messages": messages, "max_tokens": 2})
    assert with_tools.status_code == 200 and without.status_code == 200
    prompt = fake.detokenize(fake.submitted[0][1])
    assert "You can call functions." in prompt and '"name": "get_weather"' in prompt
    called = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    # (the fake detokenizes </s>, a control token, to nothing)
    assert (
        f"ASSISTANT: {called}USER: Result of get_weather (call call_1): 18 C ASSISTANT:" in prompt
    )
    later = fake.detokenize(fake.submitted[1][1])
    assert "You can call functions." not in later and "Result of get_weather" in later


async def test_a_jinja_template_that_knows_tools_gets_them() -> None:
    fake = engine(chat_template=TOOLS_TEMPLATE)
    call = {"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}  # fmt: skip
    messages = [*ASK, {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "3 C"}]  # fmt: skip
    async with running_app(fake) as (client, _, _):
        r = await client.post(CHAT, json={"messages": messages, "tools": TOOLS})
    assert r.status_code == 200, r.text
    prompt = fake.detokenize(fake.submitted[0][1])
    assert "<assistant>Oslo<tool>3 C[get_weather]<assistant>" in prompt


async def test_legacy_functions_are_answered_with_function_call() -> None:
    async with running_app(engine()) as (client, _, _):
        body = {"messages": ASK, "functions": [TOOLS[0]["function"]],
                "function_call": {"name": "get_weather"}}  # fmt: skip
        r = await client.post(CHAT, json=body)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"tools": [{"type": "function",
                     "function": {"name": "f", "parameters": {"type": "string"}}}]},
         "tools.0.function.parameters"),
        ({"tools": [*TOOLS, *TOOLS]}, "tools.1.function.name"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object",
            "properties": {"n": {"type": "string", "minLength": 5, "maxLength": 2}}}}}]},
         "tools.0.function.parameters.properties.n.maxLength"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
    ],
)  # fmt: skip
async def test_bad_tools_are_400s_with_param_and_the_server_keeps_serving(
    changes: dict[str, Any], param: str
) -> None:
    async with running_app(engine()) as (client, fake, _):
        r = await client.post(CHAT, json={"messages": ASK, "tools": TOOLS, **changes})
        after = await client.post(CHAT, json={"messages": ASK, "tools": TOOLS})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert after.status_code == 200 and len(fake.submitted) == 1


async def test_a_schema_bomb_is_a_400_naming_the_keyword() -> None:
    bombs = [
        ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems"),
        ({"type": "string", "maxLength": "abc"}, "maxLength"),
        ({"type": "string", "maxLength": [1]}, "maxLength"),
        ({"enum": []}, "enum"),
    ]
    async with running_app(engine()) as (client, fake, _):
        for schema, keyword in bombs:
            fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            r = await client.post(CHAT, json={"messages": ASK, "response_format": fmt})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == f"response_format.json_schema.schema.{keyword}"
        huge = await client.post(
            CHAT,
            content=b'{"messages": [{"role": "user", "content": "x"}], "response_format": '
            b'{"type": "json_schema", "json_schema": {"name": "x", "schema": '
            b'{"type": "string", "maxLength": 1e400}}}}',
            headers={"content-type": "application/json"},
        )
    assert huge.status_code == 400 and not fake.submitted


async def test_an_answer_breaking_what_the_grammar_cannot_enforce_is_reported() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    async with running_app(engine("[1, 1]")) as (client, _, _):
        whole = await client.post(CHAT, json={"messages": ASK, "response_format": fmt})
        streamed = await client.post(
            CHAT, json={"messages": ASK, "response_format": fmt, "stream": True}
        )
    assert whole.status_code == 500
    error = whole.json()["error"]
    assert error["code"] == "schema_validation_failed" and "uniqueItems" in error["message"]
    chunks = events(streamed)
    assert chunks[-1] == "[DONE]" and chunks[-2]["error"]["code"] == "schema_validation_failed"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-2]) == "[1, 1]"


async def test_a_template_without_a_system_role_gets_the_tools_in_the_first_user_turn() -> None:
    no_system = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    )
    fake = engine(chat_template=no_system)
    async with running_app(fake) as (client, _, _):
        r = await client.post(CHAT, json={"messages": ASK, "tools": TOOLS})
        refused = await client.post(
            CHAT, json={"messages": [{"role": "system", "content": "x"}, *ASK], "tools": TOOLS}
        )
    assert r.status_code == 200, r.text
    prompt = fake.detokenize(fake.submitted[0][1])
    assert prompt.startswith("<user>You can call functions.") and "Weather in Paris?" in prompt
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages"
