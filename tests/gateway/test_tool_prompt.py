"""Tools in the prompt: the offer and reply format in the system message; for Vicuna, calls
and results written out as text."""

from __future__ import annotations

import json

from gateway.templates import VICUNA_SYSTEM, CallTurn, Turn, render_vicuna
from gateway.tool_prompt import as_text, envelope, instruction, tool_dicts, with_instruction
from gateway.tool_protocol import FunctionName, NamedToolChoice, Tool
from gateway.tools import ToolPlan, plan_tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def plan(choice: object = None, parallel: bool | None = None) -> ToolPlan:
    made = plan_tools([Tool.model_validate(WEATHER)], choice, parallel, None, None)  # type: ignore[arg-type]
    assert made is not None
    return made


def test_the_instruction_lists_each_function_as_json_and_the_reply_format() -> None:
    text = instruction(plan())
    listed = json.loads(text.splitlines()[1])
    assert listed["name"] == "get_weather" and listed["parameters"]["properties"]["city"]
    assert '{"tool_calls": [' in text and '{"response": <your answer as a string>}' in text


def test_the_instruction_follows_tool_choice() -> None:
    assert '{"response"' not in instruction(plan("required"))
    named = NamedToolChoice(type="function", function=FunctionName(name="get_weather"))
    assert 'Call the function "get_weather"' in instruction(plan(named))
    assert ", ...]" not in instruction(plan("required", parallel=False))
    assert "<your answer as JSON>" in instruction(plan(), is_text_response=False)


def test_the_instruction_joins_the_system_message_or_brings_its_own() -> None:
    turns = [Turn("user", "hi")]
    assert with_instruction(turns, None, VICUNA_SYSTEM) == turns
    added = with_instruction(turns, "TOOLS", VICUNA_SYSTEM)
    assert added[0] == Turn("system", f"{VICUNA_SYSTEM}\n\nTOOLS") and added[1:] == turns
    joined = with_instruction([Turn("system", "Be brief."), *turns], "TOOLS", None)
    assert joined[0] == Turn("system", "Be brief.\n\nTOOLS")


def test_a_tool_round_trip_renders_into_vicuna() -> None:
    calls = (
        CallTurn("call_1", "get_weather", '{"city": "Paris"}'),
        CallTurn("call_2", "get_weather", "not json"),
    )
    turns = [
        Turn("user", "Weather in Paris and Rome?"),
        Turn("assistant", "", calls),
        Turn("tool", "18 C", tool_call_id="call_1"),
        Turn("tool", "24 C", tool_call_id="call_2"),
        Turn("assistant", "Paris 18, Rome 24."),
    ]
    text = render_vicuna(as_text(turns)).text
    called = envelope(turns[1])
    assert json.loads(called) == {
        "tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_weather", "arguments": "not json"},
        ]
    }
    assert f"ASSISTANT: {called}</s>" in text
    results = "Result of get_weather (call call_1): 18 C\nResult of get_weather (call call_2): 24 C"
    assert f"USER: {results} ASSISTANT: Paris 18, Rome 24.</s>" in text


def test_a_legacy_function_result_has_no_call_id() -> None:
    (turn,) = as_text([Turn("tool", "43", name="f")])
    assert turn == Turn("user", "Result of f: 43")


def test_jinja_templates_get_the_tools_in_openais_shape() -> None:
    assert tool_dicts(plan()) == [WEATHER]
