"""Chat messages as the template's turns: roles mapped, content parts joined, tools kept.

`developer` is a system message; `function` (legacy) is a tool result. Text parts are joined
as OpenAI does; any other part (image_url, input_audio, file) is a 400 that says so, because
the models served here read text only.
"""

from __future__ import annotations

from gateway.errors import APIError
from gateway.protocol import ChatMessage, ContentPart
from gateway.templates import CallTurn, Turn

_MEDIA = {"image_url": "image", "input_image": "image", "input_audio": "audio", "file": "file"}


def to_turns(messages: list[ChatMessage]) -> list[Turn]:
    """The conversation as template turns; APIError names the message at fault."""
    return [_turn(message, i) for i, message in enumerate(messages)]


def _turn(message: ChatMessage, i: int) -> Turn:
    content = _text(message, i)
    role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
    if message.role == "tool" and not message.tool_call_id:
        raise APIError(
            400,
            "a tool message needs the tool_call_id it answers",
            param=f"messages.{i}.tool_call_id",
        )
    if message.role == "function" and not message.name:
        raise APIError(400, "a function message needs a name", param=f"messages.{i}.name")
    calls: list[CallTurn] = []
    if message.role == "assistant":
        calls = [
            CallTurn(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
        ]
        if message.function_call is not None:
            fc = message.function_call
            calls.append(CallTurn(f"call_{i}", fc.name, fc.arguments))
        if not content and message.refusal:
            content = message.refusal
    elif message.tool_calls or message.function_call:
        raise APIError(400, "only assistant messages carry tool calls", param=f"messages.{i}.role")
    return Turn(role, content, tuple(calls), message.tool_call_id, message.name)


def _text(message: ChatMessage, i: int) -> str:
    if not isinstance(message.content, list):
        return message.content or ""
    return "".join(_part_text(part, i, j) for j, part in enumerate(message.content))


def _part_text(part: ContentPart, i: int, j: int) -> str:
    param = f"messages.{i}.content.{j}"
    if part.type == "text" and part.text is not None:
        return part.text
    if part.type == "refusal" and part.refusal is not None:
        return part.refusal
    if part.type in _MEDIA:
        message = (
            f"{_MEDIA[part.type]} input is not supported: this model reads text only "
            f"(content part type {part.type!r})"
        )
        raise APIError(400, message, param=f"{param}.type", code="unsupported_content_type")
    if part.type in ("text", "refusal"):
        raise APIError(400, f"a {part.type} part needs `{part.type}`", param=param)
    message = f"content part type {part.type[:50]!r} is not supported (only 'text')"
    raise APIError(400, message, param=f"{param}.type", code="unsupported_content_type")
