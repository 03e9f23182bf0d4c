"""Tool calling and structured output with the real OpenAI SDK, the real gateway and the
random-weight demo model: the grammar alone makes its calls valid."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import openai
import pytest
from openai import BadRequestError, OpenAI
from pydantic import BaseModel, Field

pytestmark = pytest.mark.model
MODEL = "tiny"
ASK = [{"role": "user", "content": "What is the weather in Paris, and what is 2 + 3?"}]
PARAMETERS: dict[str, Any] = {
    "get_weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "add": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}
TOOLS: Any = [
    {"type": "function", "function": {"name": name, "description": f"{name} tool",
                                      "parameters": parameters}}
    for name, parameters in PARAMETERS.items()
]  # fmt: skip


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Any:
    with OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def _valid_calls(message: Any, names: set[str]) -> list[tuple[str, Any]]:
    assert message.content is None and message.tool_calls
    calls = []
    for call in message.tool_calls:
        assert call.type == "function" and call.function.name in names
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, PARAMETERS[call.function.name])
        calls.append((call.function.name, arguments))
    return calls


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_returns_calls_that_validate(client: OpenAI, seed: int) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, seed=seed, max_tokens=300,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(_valid_calls(choice.message, set(PARAMETERS))) == 1


def test_a_named_function_is_the_one_called(client: OpenAI) -> None:
    for seed in (4, 5):
        r = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, seed=seed, max_tokens=300,
            tool_choice={"type": "function", "function": {"name": "add"}},
        )  # fmt: skip
        assert r.choices[0].finish_reason == "tool_calls"
        assert [name for name, _ in _valid_calls(r.choices[0].message, {"add"})] == ["add"]


def test_auto_answers_in_text_or_with_a_valid_call(client: OpenAI) -> None:
    kinds = set()
    for seed in range(6):
        r = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, seed=seed, max_tokens=600
        )
        choice = r.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            _valid_calls(choice.message, set(PARAMETERS))
            kinds.add("call")
        else:
            assert choice.finish_reason == "stop" and isinstance(choice.message.content, str)
            kinds.add("text")
    assert kinds  # each answer was one of the two, correctly parsed


def test_streamed_and_whole_answers_agree_for_one_seed(client: OpenAI) -> None:
    args: Any = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                     seed=11, max_tokens=600)  # fmt: skip
    whole = client.chat.completions.create(**args).choices[0]
    chunks = list(client.chat.completions.create(**args, stream=True))
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": "", "id": ""})
            if delta.id:
                assert delta.function and delta.function.name and not call["id"]
                call.update(id=delta.id, name=delta.function.name)
            call["arguments"] += (delta.function and delta.function.arguments) or ""
    assert whole.message.tool_calls
    expected = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == expected
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == whole.finish_reason == "tool_calls"


def test_parallel_calls_have_distinct_indices_and_ids(client: OpenAI) -> None:
    args: Any = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                     max_tokens=800)  # fmt: skip

    def num_calls(seed: int) -> int:
        message = client.chat.completions.create(**args, seed=seed).choices[0].message
        return len(message.tool_calls or [])

    seed = next((s for s in range(12) if num_calls(s) >= 2), None)
    assert seed is not None, "the demo model never made two calls in one answer"
    whole = client.chat.completions.create(**args, seed=seed).choices[0]
    _valid_calls(whole.message, set(PARAMETERS))
    ids = [c.id for c in whole.message.tool_calls or []]
    assert len(ids) >= 2 and len(set(ids)) == len(ids)
    starts = [
        (d.index, d.id)
        for chunk in client.chat.completions.create(**args, seed=seed, stream=True)
        for d in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
        if d.id
    ]
    assert [i for i, _ in starts] == list(range(len(ids)))
    assert len({i for _, i in starts}) == len(ids)


class Priority(StrEnum):
    LOW = "low"
    HIGH = "high"


class Task(BaseModel):
    title: str
    priority: Priority
    hours: int = Field(ge=1, le=8)


class Plan(BaseModel):
    tasks: list[Task] = Field(max_length=3)


def test_parse_fills_a_nested_pydantic_model(client: OpenAI) -> None:
    for seed in (1, 2):
        r = client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": "Plan my day."}],
            response_format=Plan, seed=seed, max_tokens=400,
        )  # fmt: skip
        parsed = r.choices[0].message.parsed
        assert r.choices[0].finish_reason == "stop" and isinstance(parsed, Plan)
        assert Plan.model_validate(parsed.model_dump()) == parsed


def test_parse_fills_strict_function_tools(client: OpenAI) -> None:
    r = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Add a task."}], seed=3,
        tools=[openai.pydantic_function_tool(Task)], tool_choice="required",
        parallel_tool_calls=False, max_tokens=300,
    )  # fmt: skip
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "Task" and isinstance(call.function.parsed_arguments, Task)


def test_bad_tools_are_400s_naming_the_param_and_the_server_keeps_serving(
    client: OpenAI, gateway_url: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
         "tools.0.function.parameters"),
        ({"tools": [*TOOLS, TOOLS[0]]}, "tools.2.function.name"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
    ]  # fmt: skip
    for extra, param in cases:
        with pytest.raises(BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **extra)
        body: Any = err.value.body
        assert err.value.status_code == 400 and body["param"] == param
    assert httpx.get(f"{gateway_url}/health").json() == {"status": "ok"}
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4)
    assert r.choices[0].message.role == "assistant"
