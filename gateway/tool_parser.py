"""Reading the JSON envelope a tool-enabled answer is written in, as it streams.

The grammar (tool_grammar.py) makes the model write `{"tool_calls": [{"name": N, "arguments":
{...}}, ...]}` or (tool_choice auto) `{"response": ...}`. The parser reads it one character at a
time and reports what a client sees: text of the response (unescaped), the start of each call
(its name), and fragments of its arguments (the JSON text as the model wrote it), so streamed
and whole answers are built from the same events.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

_ID_CHARS = string.ascii_letters + string.digits
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

Machine = Generator[None, str, None]


def new_call_id() -> str:
    """A call id in OpenAI's style: call_ and 24 letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(24))


@dataclass(slots=True)
class ParsedCall:
    """One call read so far: its index, the id we gave it, its name and arguments."""

    index: int
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    @property
    def arguments_text(self) -> str:
        """The arguments as the model wrote them (a JSON object's text)."""
        return "".join(self.arguments)


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call's name is complete: the first delta of that call."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    """More of a call's arguments text."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """More of the answer's text (the envelope's `response`)."""

    text: str


Event = CallStarted | ArgumentsDelta | ContentDelta


class _Malformed(Exception):
    pass


class EnvelopeParser:
    """Feeds on the answer's text; `feed` returns the events the new text completes."""

    def __init__(self, is_text_response: bool = True) -> None:
        self.is_text_response = is_text_response
        self.calls: list[ParsedCall] = []
        self.content: list[str] = []
        self.is_malformed = False
        self.is_complete = False
        self.raw: list[str] = []
        self._events: list[Event] = []
        self._machine = self._run()
        next(self._machine)

    @property
    def is_tool_calls(self) -> bool:
        """Whether the answer calls tools (at least one call has started)."""
        return bool(self.calls)

    def feed(self, text: str) -> list[Event]:
        """Read the next piece of the answer; the events it completes."""
        self.raw.append(text)
        for ch in text:
            if self.is_complete or self.is_malformed:
                break
            try:
                self._machine.send(ch)
            except (_Malformed, StopIteration):
                self.is_malformed = not self.is_complete
        events, self._events = self._events, []
        return _coalesced(events)

    # -- the machine: each `yield` takes the next character --------------------------------

    def _run(self) -> Machine:
        yield from self._expect("{")
        key = yield from self._key()
        if key == "response":
            ch = yield from self._after_space()
            if self.is_text_response:
                if ch != '"':
                    raise _Malformed
                yield from self._string(self._content)
            else:
                yield from self._value(ch, self._content)
        elif key == "tool_calls":
            yield from self._expect("[")
            yield from self._calls()
        else:
            raise _Malformed
        self.is_complete = True
        while True:
            yield

    def _calls(self) -> Machine:
        ch = yield from self._after_space()
        while ch != "]":
            if ch != "{":
                raise _Malformed
            if (yield from self._key()) != "name":
                raise _Malformed
            ch = yield from self._after_space()
            if ch != '"':
                raise _Malformed
            name: list[str] = []
            yield from self._string(name.append)
            call = ParsedCall(len(self.calls), new_call_id(), "".join(name))
            self.calls.append(call)
            self._events.append(CallStarted(call.index, call.id, call.name))
            yield from self._expect(",")
            if (yield from self._key()) != "arguments":
                raise _Malformed
            ch = yield from self._after_space()
            yield from self._value(ch, self._arguments_of(call))
            yield from self._expect("}")
            ch = yield from self._after_space()
            if ch == ",":
                ch = yield from self._after_space()

    def _arguments_of(self, call: ParsedCall) -> Callable[[str], None]:
        def emit(text: str) -> None:
            call.arguments.append(text)
            self._events.append(ArgumentsDelta(call.index, text))

        return emit

    def _content(self, text: str) -> None:
        self.content.append(text)
        self._events.append(ContentDelta(text))

    def _after_space(self) -> Generator[None, str, str]:
        ch = yield
        while ch in " \t\n\r":
            ch = yield
        return ch

    def _expect(self, wanted: str) -> Machine:
        if (yield from self._after_space()) != wanted:
            raise _Malformed

    def _key(self) -> Generator[None, str, str]:
        """A `"key":` pair's key."""
        if (yield from self._after_space()) != '"':
            raise _Malformed
        key: list[str] = []
        yield from self._string(key.append)
        yield from self._expect(":")
        return "".join(key)

    def _string(self, emit: Callable[[str], None]) -> Machine:
        """A JSON string's characters after the opening quote, unescaped, up to the close."""
        while True:
            ch = yield
            if ch == '"':
                return
            if ch != "\\":
                emit(ch)
                continue
            ch = yield
            if ch in _ESCAPES:
                emit(_ESCAPES[ch])
            elif ch == "u":
                emit((yield from self._unicode()))
            else:
                raise _Malformed

    def _unicode(self) -> Generator[None, str, str]:
        code = yield from self._hex4()
        if not 0xD800 <= code < 0xDC00:
            return chr(code)
        # a high surrogate: a low one must follow as \uDCxx to make one character
        if (yield) != "\\" or (yield) != "u":
            raise _Malformed
        low = yield from self._hex4()
        if not 0xDC00 <= low < 0xE000:
            raise _Malformed
        return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))

    def _hex4(self) -> Generator[None, str, int]:
        digits = []
        for _ in range(4):
            digits.append((yield))
        try:
            return int("".join(digits), 16)
        except ValueError:
            raise _Malformed from None

    def _value(self, first: str, emit: Callable[[str], None]) -> Machine:
        """A JSON value passed on as written, starting at `first`. A number, true, false or
        null ends at the character after it, which must close the envelope."""
        if first not in '{["':
            emit(first)
            ch = yield
            while ch not in " \t\n\r}":
                emit(ch)
                ch = yield
            return
        emit(first)
        if first == '"':
            yield from self._string(lambda text: emit(_escaped(text)))
            emit('"')
            return
        depth, in_string, escaped = 1, False, False
        while depth:
            ch = yield
            emit(ch)
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1


def _escaped(text: str) -> str:
    """`text` as it stands inside a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _coalesced(events: list[Event]) -> list[Event]:
    """Adjacent fragments of one kind joined (one chunk per call and step, not per char)."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, ContentDelta) and isinstance(last, ContentDelta):
            out[-1] = ContentDelta(last.text + event.text)
        elif (
            isinstance(event, ArgumentsDelta)
            and isinstance(last, ArgumentsDelta)
            and last.index == event.index
        ):
            out[-1] = ArgumentsDelta(event.index, last.text + event.text)
        else:
            out.append(event)
    return out
