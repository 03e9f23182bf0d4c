"""Tools and tool_choice checked into a plan; every mistake is a 400 naming its parameter."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import APIError
from gateway.tool_protocol import FunctionDefinition, FunctionName, NamedToolChoice, Tool
from gateway.tools import MAX_PARALLEL_CALLS, plan_tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLOCK = {"type": "function", "function": {"name": "now"}}


def tools(*defs: dict[str, Any]) -> list[Tool]:
    return [Tool.model_validate(d) for d in defs]


def named(name: str) -> NamedToolChoice:
    return NamedToolChoice(type="function", function=FunctionName(name=name))


def test_tools_default_to_auto_with_parallel_calls() -> None:
    plan = plan_tools(tools(WEATHER, CLOCK), None, None, None, None)
    assert plan is not None and plan.mode == "auto" and plan.max_calls == MAX_PARALLEL_CALLS
    assert [t.name for t in plan.callable] == ["get_weather", "now"]
    assert plan.tools[1].parameters is None  # a function without parameters takes none


def test_a_named_choice_offers_that_function_once() -> None:
    plan = plan_tools(tools(WEATHER, CLOCK), named("now"), True, None, None)
    assert plan is not None and plan.mode == "named"
    assert [t.name for t in plan.callable] == ["now"] and plan.max_calls == 1


def test_none_offers_nothing_and_parallel_false_allows_one_call() -> None:
    none = plan_tools(tools(WEATHER), "none", None, None, None)
    assert none is not None and none.callable == ()
    single = plan_tools(tools(WEATHER), "required", False, None, None)
    assert single is not None and single.max_calls == 1


def test_the_plan_key_changes_with_what_the_grammar_depends_on() -> None:
    def key(choice: Any, parallel: bool | None = None) -> str:
        plan = plan_tools(tools(WEATHER, CLOCK), choice, parallel, None, None)
        assert plan is not None
        return plan.key()

    assert key("required") == key("required")
    assert len({key("required"), key("auto"), key(named("now")), key("required", False)}) == 4


def test_legacy_functions_map_onto_tools() -> None:
    fn = FunctionDefinition.model_validate(WEATHER["function"])
    plan = plan_tools(None, None, None, [fn], FunctionName(name="get_weather"))
    assert plan is not None and plan.is_legacy and plan.mode == "named"
    auto = plan_tools(None, None, None, [fn], None)
    assert auto is not None and auto.mode == "auto" and auto.max_calls == 1


def bad(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


@pytest.mark.parametrize(
    ("tool_list", "choice", "parallel", "param"),
    [
        ([WEATHER, bad("get_weather")], None, None, "tools.1.function.name"),
        ([bad("has space")], None, None, "tools.0.function.name"),
        ([{"type": "retrieval"}], None, None, "tools.0.type"),
        ([{"type": "function"}], None, None, "tools.0.function"),
        ([], None, None, "tools"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
            None, None, "tools.0.function.parameters",
        ),
        ([WEATHER], named("missing"), None, "tool_choice"),
        (None, "required", None, "tool_choice"),
        (None, None, True, "parallel_tool_calls"),
    ],
)  # fmt: skip
def test_bad_tools_input_is_a_400_naming_the_parameter(
    tool_list: list[dict[str, Any]] | None, choice: Any, parallel: bool | None, param: str
) -> None:
    with pytest.raises(APIError) as err:
        plan_tools(
            tools(*tool_list) if tool_list is not None else None, choice, parallel, None, None
        )
    assert err.value.status == 400 and err.value.param == param


def test_tools_and_functions_together_are_refused() -> None:
    fn = FunctionDefinition(name="f")
    with pytest.raises(APIError) as err:
        plan_tools(tools(WEATHER), None, None, [fn], None)
    assert err.value.param == "functions"
    with pytest.raises(APIError) as err:
        plan_tools(None, None, None, None, "auto")
    assert err.value.param == "function_call"
