"""Chat templates: a conversation in, the prompt text (and which parts of it clients wrote) out.

The built-in template is Vicuna v1.1, byte for byte as FastChat renders it. A GGUF's own
`tokenizer.chat_template` (jinja2) is rendered in a sandbox. Each rendering also reports the
spans of client-written text, so that a user who types `</s>` gets those characters and never
the control token (see `gateway/tokens.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from batching.info import ModelInfo

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# Strings in a template's own text that look like control tokens (<|im_start|>, [INST], <s>);
# tokens.py keeps those the vocabulary really has as one special token.
_SPECIAL_LIKE = re.compile(r"<\|[^<>|\s]{1,40}\|>|<[^<>\s]{1,40}>|\[/?[A-Z_]{2,16}\]")


class ChatTemplateError(ValueError):
    """The template refused the conversation (e.g. roles that do not alternate)."""


@dataclass(frozen=True, slots=True)
class CallTurn:
    """A tool call an assistant message made: its id, function name and arguments (JSON)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One message: role is "system", "user", "assistant" or "tool".

    Templates without tool support get tool calls and results already written as text
    (gateway/tool_prompt.py); a jinja template that knows tools gets them as they are.
    """

    role: str
    content: str
    tool_calls: tuple[CallTurn, ...] = ()
    tool_call_id: str | None = None  # of a tool result
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A prompt, the [start, end) spans that clients wrote, and the template's special strings."""

    text: str
    client_spans: tuple[tuple[int, int], ...] = ()
    specials: tuple[str, ...] = ()


class ChatTemplate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def supports_tools(self) -> bool: ...

    def render(
        self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None = None
    ) -> RenderedPrompt: ...


def render_vicuna(turns: Sequence[Turn], eos_text: str = "</s>") -> RenderedPrompt:
    """Vicuna v1.1 as FastChat renders it (ADD_COLON_TWO, separators " " and eos_text).

    Like FastChat, the separator alternates with the position of the turn (not its role), an
    empty turn renders as "ROLE:", and a system message replaces the default one. An answer
    that starts with a space (as the model wrote it after "ASSISTANT:", and as this server
    returns it) follows the colon directly, so that it comes back as the tokens that were
    generated and its cached cells are reused.
    """
    system, is_client_system = VICUNA_SYSTEM, False
    convo: list[Turn] = []
    for turn in turns:
        if turn.role == "system":
            system, is_client_system = turn.content, True
        else:
            convo.append(turn)
    pieces: list[tuple[str, bool]] = [(system, is_client_system), (" ", False)]
    separators = (" ", eos_text)
    for i, turn in enumerate(convo):
        role = "USER" if turn.role == "user" else "ASSISTANT"
        if turn.content:
            colon = f"{role}:" if role == "ASSISTANT" and turn.content[0] == " " else f"{role}: "
            pieces += [(colon, False), (turn.content, True), (separators[i % 2], False)]
        else:
            pieces.append((f"{role}:", False))
    pieces.append(("ASSISTANT:", False))
    return _join(pieces, specials=(eos_text,))


def _join(pieces: Sequence[tuple[str, bool]], specials: tuple[str, ...]) -> RenderedPrompt:
    text, spans, pos = [], [], 0
    for piece, is_client in pieces:
        if is_client and piece:
            spans.append((pos, pos + len(piece)))
        text.append(piece)
        pos += len(piece)
    return RenderedPrompt("".join(text), tuple(spans), specials)


@dataclass(frozen=True, slots=True)
class VicunaTemplate:
    """The built-in template."""

    eos_text: str = "</s>"
    name: str = "vicuna"
    supports_tools: bool = False

    def render(
        self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None = None
    ) -> RenderedPrompt:
        return render_vicuna(turns, self.eos_text)


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


class JinjaTemplate:
    """A Hugging Face style jinja2 chat template, rendered in an immutable sandbox."""

    def __init__(self, source: str, bos_text: str, eos_text: str, name: str = "gguf") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.globals["raise_exception"] = _raise_exception
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise ValueError(f"chat template {name!r} does not parse: {e}") from e
        self.name = name
        self.supports_tools = "tools" in source  # it reads the `tools` variable
        self._bos_text = bos_text
        self._eos_text = eos_text

    def render(
        self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None = None
    ) -> RenderedPrompt:
        extra = {"tools": tools} if tools else {}
        try:
            text = self._template.render(
                messages=[_message(t) for t in turns],
                add_generation_prompt=True,
                bos_token=self._bos_text,
                eos_token=self._eos_text,
                **extra,
            )
        except TemplateError as e:
            raise ChatTemplateError(f"the chat template failed: {e}") from e
        spans = _find_spans(text, [t.content for t in turns])
        spans = _merge(spans, _occurrences(text, _client_strings(turns, tools)))
        template_text = _outside(text, spans)
        found = {m.group() for part in template_text for m in _SPECIAL_LIKE.finditer(part)}
        specials = tuple(s for s in (self._bos_text, self._eos_text) if s)
        return RenderedPrompt(text, spans, specials + tuple(sorted(found - set(specials))))


def _message(turn: Turn) -> dict[str, Any]:
    """A turn as the message dict Hugging Face templates read."""
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
            for c in turn.tool_calls
        ]  # fmt: skip
    if turn.tool_call_id is not None:
        message["tool_call_id"] = turn.tool_call_id
    if turn.name is not None:
        message["name"] = turn.name
    return message


def _arguments(text: str) -> Any:
    """Arguments as a dict (what most templates iterate over), or the text if not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _client_strings(turns: Sequence[Turn], tools: list[dict[str, Any]] | None) -> list[str]:
    """Client text a template may print besides the contents: calls, tool descriptions."""
    found = [c.arguments for t in turns for c in t.tool_calls]
    for tool in tools or ():
        function = tool.get("function", {})
        found += [function.get("description") or "", json.dumps(function.get("parameters"))]
    return [s for s in found if len(s) > 1]


def _occurrences(text: str, strings: Sequence[str]) -> list[tuple[int, int]]:
    spans = []
    for s in strings:
        start = text.find(s)
        while start >= 0:
            spans.append((start, start + len(s)))
            start = text.find(s, start + len(s))
    return spans


def _merge(
    spans: Sequence[tuple[int, int]], more: Sequence[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    """Sorted, non-overlapping spans covering both lists."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted([*spans, *more]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _find_spans(text: str, contents: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Where each message's content landed, searched in order (stripped if a template trims)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for content in contents:
        for candidate in (content, content.strip()):
            start = text.find(candidate, pos) if candidate else -1
            if start >= 0:
                spans.append((start, start + len(candidate)))
                pos = start + len(candidate)
                break
    return tuple(spans)


def _outside(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    parts, pos = [], 0
    for start, end in spans:
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    return parts


def select_template(spec: str | None, model: ModelInfo) -> ChatTemplate:
    """`--chat-template` (a file or "vicuna") wins, then the GGUF's own template, then Vicuna."""
    eos_text = model.eos_text or "</s>"
    if spec is None and model.chat_template:
        return JinjaTemplate(model.chat_template, model.bos_text, eos_text, "gguf")
    if spec is None or spec == "vicuna":
        return VicunaTemplate(eos_text)
    path = Path(spec)
    return JinjaTemplate(path.read_text(encoding="utf-8"), model.bos_text, eos_text, path.name)
