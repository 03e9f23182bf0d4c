"""A choice's text in OpenAI's wire format: tool-call deltas, the whole message, the finish."""

from __future__ import annotations

import json

from gateway.chat_grammar import ChatGrammar
from gateway.chat_output import ChoiceOutput
from gateway.jsonschema.validate import OutputCheck
from gateway.tool_protocol import Tool
from gateway.tools import ToolPlan, plan_tools

TEXT = '{"tool_calls": [{"name": "f", "arguments": {"a": [1, 1]}}, {"name": "f", "arguments": {}}]}'


def plan(legacy: bool = False) -> ToolPlan:
    made = plan_tools(
        [Tool.model_validate({"type": "function", "function": {"name": "f"}})],
        "auto", None, None, None,
    )  # fmt: skip
    assert made is not None
    return ToolPlan(made.mode, made.tools, is_legacy=legacy, is_parallel=not legacy)


def dumped(output: ChoiceOutput, text: str, step: int = 5) -> list[dict[str, object]]:
    return [
        d.model_dump(mode="json")
        for i in range(0, len(text), step)
        for d in output.feed(text[i : i + step])
    ]


def test_the_first_delta_of_a_call_names_it_and_later_ones_carry_arguments() -> None:
    output = ChoiceOutput(plan(), ChatGrammar("root ::= x"), True)
    deltas = dumped(output, TEXT)
    first = deltas[0]["tool_calls"][0]  # type: ignore[index]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "f", "arguments": ""}
    later = [d["tool_calls"][0] for d in deltas[1:]]  # type: ignore[index]
    assert all(set(c) == {"index", "function"} or "id" in c for c in later)
    args = "".join(c["function"].get("arguments", "") for c in later if c["index"] == 0)
    assert json.loads(args) == {"a": [1, 1]}
    assert {c["index"] for c in later} == {0, 1}


def test_the_whole_message_has_the_calls_and_no_content() -> None:
    output = ChoiceOutput(plan(), ChatGrammar("root ::= x"), True)
    output.feed(TEXT)
    message = output.message()
    assert message.content is None and message.tool_calls is not None
    assert [c.function.arguments for c in message.tool_calls] == ['{"a": [1, 1]}', "{}"]
    assert len({c.id for c in message.tool_calls}) == 2
    assert (
        output.finish_reason("stop") == "tool_calls" and output.finish_reason("length") == "length"
    )


def test_a_text_response_is_the_content() -> None:
    output = ChoiceOutput(plan(), ChatGrammar("root ::= x"), True)
    deltas = dumped(output, '{"response": "Hi \\"you\\""}', step=3)
    assert "".join(d.get("content") or "" for d in deltas) == 'Hi "you"'  # type: ignore[misc]
    assert output.message().content == 'Hi "you"' and output.finish_reason("stop") == "stop"


def test_an_envelope_cut_short_is_no_finished_call() -> None:
    output = ChoiceOutput(plan(), ChatGrammar("root ::= x"), True)
    output.feed(TEXT[:40])  # e.g. a stop string ended it inside the arguments
    assert output.finish_reason("stop") == "stop"
    assert output.message().tool_calls is not None  # what there is, as OpenAI does on length


def test_legacy_requests_get_function_call() -> None:
    output = ChoiceOutput(plan(legacy=True), ChatGrammar("root ::= x"), True)
    deltas = dumped(output, '{"tool_calls": [{"name": "f", "arguments": {}}]}')
    assert deltas[0] == {"function_call": {"name": "f", "arguments": ""}}
    assert output.message().function_call is not None and output.message().tool_calls is None
    assert output.finish_reason("stop") == "function_call"


def test_without_tools_the_text_is_the_content() -> None:
    output = ChoiceOutput(None, ChatGrammar(None), True)
    assert [d.content for d in output.feed("plain")] == ["plain"]
    assert output.message().content == "plain" and output.problem() is None


def test_what_the_grammar_could_not_enforce_is_checked_at_the_end() -> None:
    unique = OutputCheck({"type": "object", "properties": {"a": {"uniqueItems": True}}})
    output = ChoiceOutput(plan(), ChatGrammar("root ::= x", tool_checks={"f": unique}), True)
    output.feed(TEXT)
    assert (output.problem() or "").startswith("the arguments of f break uniqueItems at $.a")
    answer = ChoiceOutput(None, ChatGrammar("root ::= x", response_check=unique), True)
    answer.feed('{"a": [2, 3]}')
    assert answer.problem() is None
