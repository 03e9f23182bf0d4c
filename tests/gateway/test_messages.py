"""Chat messages to template turns: roles, content parts and tool fields."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import APIError
from gateway.messages import to_turns
from gateway.protocol import ChatMessage
from gateway.templates import CallTurn, Turn


def turns(*messages: dict[str, Any]) -> list[Turn]:
    return to_turns([ChatMessage.model_validate(m) for m in messages])


def test_developer_is_system_and_text_parts_join() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert turns(
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}
    ) == [
        Turn("system", "Be brief."),
        Turn("user", "ab"),
    ]


def test_names_tool_calls_and_tool_results_are_kept() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    got = turns(
        {"role": "user", "content": "x", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "function", "name": "f", "content": "43"},
    )
    assert got[0].name == "ann"
    assert got[1] == Turn("assistant", "", (CallTurn("call_1", "f", "{}"),))
    assert got[2] == Turn("tool", "42", tool_call_id="call_1")
    assert got[3] == Turn("tool", "43", name="f")


def test_a_legacy_function_call_and_a_refusal_are_assistant_turns() -> None:
    got = turns(
        {"role": "assistant", "function_call": {"name": "f", "arguments": '{"a": 1}'}},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    )
    assert got[0].tool_calls == (CallTurn("call_0", "f", '{"a": 1}'),)
    assert got[1].content == "No."


@pytest.mark.parametrize(
    ("message", "param", "says"),
    [
        ({"role": "user", "content": [{"type": "text", "text": "x"},
          {"type": "image_url", "image_url": {"url": "data:,"}}]},
         "messages.0.content.1.type", "image input is not supported"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "messages.0.content.0.type",
         "audio input"),
        ({"role": "user", "content": [{"type": "video"}]}, "messages.0.content.0.type", "'video'"),
        ({"role": "user", "content": [{"type": "text"}]}, "messages.0.content.0", "needs `text`"),
        ({"role": "tool", "content": "x"}, "messages.0.tool_call_id", "tool_call_id"),
        ({"role": "function", "content": "x"}, "messages.0.name", "needs a name"),
        ({"role": "user", "content": "x", "tool_calls": [{"id": "c", "function":
          {"name": "f", "arguments": "{}"}}]}, "messages.0.role", "only assistant"),
    ],
)  # fmt: skip
def test_what_cannot_be_read_is_a_400_naming_the_part(
    message: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(APIError) as err:
        turns(message)
    assert err.value.status == 400 and err.value.param == param and says in err.value.message
