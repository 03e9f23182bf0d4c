"""GBNF text: literals, character classes, repetitions, a rule table, and the bounds check.

Grammars here are llama.cpp's GBNF. Expressions are plain strings; a rule table names shared
sub-expressions (identical bodies share one rule) and tracks the grammar's size as it grows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.limits import Limits

Ranges = list[tuple[int, int]]  # inclusive code point ranges

# One character inside a JSON string, raw or escaped (the decoded string has one character).
ESCAPE = r'"\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )'
# llama.cpp decodes any byte sequence to a code point; surrogates and values past U+10FFFF are
# what invalid UTF-8 (lone bytes from a byte-fallback vocabulary) decodes to: never valid text.
NOT_TEXT = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0xD800, 0xDFFF), (0x110000, 0x3FFFFF)]
RAW_CHAR = r'[^"\\\x00-\x1F\uD800-\uDFFF\U00110000-\U003FFFFF]'
WS = "ws"  # at most one space between tokens: a model cannot wander in whitespace


def literal(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def json_literal(value: Any) -> str:
    """A literal matching `value` as compact JSON."""
    return literal(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def literal_trie(texts: list[str]) -> str:
    """One expression matching exactly `texts`, written as a trie: alternatives that share a
    beginning share its literal, so llama.cpp follows one branch instead of one per text
    (an enum of 1,000 values with a common prefix costs ~10x less per token this way)."""
    unique = sorted(set(texts))
    if len(unique) == 1:
        return literal(unique[0])
    may_end = "" in unique
    groups: dict[str, list[str]] = {}
    for text in unique:
        if text:
            groups.setdefault(text[0], []).append(text)
    options = []
    for members in groups.values():
        prefix = _common_prefix(members)
        rest = [m[len(prefix) :] for m in members]
        options.append(
            seq(literal(prefix), literal_trie(rest)) if rest != [""] else literal(prefix)
        )
    expr = alternatives(options)
    return f"{group(expr)}?" if may_end else expr


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def _class_char(code: int) -> str:
    if code < 0x80 and chr(code).isalnum():
        return chr(code)
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def char_class(ranges: Iterable[tuple[int, int]], negated: bool = False) -> str:
    """`[...]` over code point ranges (every non-alphanumeric character escaped)."""
    body = "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges
    )
    return f"[{'^' if negated else ''}{body}]"


def alternatives(options: list[str]) -> str:
    """One expression matching any of `options` (which must not be empty)."""
    unique = list(dict.fromkeys(options))
    return unique[0] if len(unique) == 1 else "( " + " | ".join(unique) + " )"


def repeat(item: str, low: int, high: int | None) -> str:
    """`item` low..high times (high None = no upper bound); `item` must be one symbol/group."""
    if high is not None and high < low:
        raise ValueError(f"repeat({low}, {high})")  # callers refuse such bounds first
    if high == 0:
        return ""
    if (low, high) == (0, None):
        return f"{item}*"
    if (low, high) == (1, None):
        return f"{item}+"
    if (low, high) == (0, 1):
        return f"{item}?"
    if low == high == 1:
        return item
    if high is None:
        return f"{item}{{{low},}}"
    return f"{item}{{{low}}}" if low == high else f"{item}{{{low},{high}}}"


def seq(*parts: str) -> str:
    """Parts in sequence, empty parts left out."""
    return " ".join(p for p in parts if p)


def group(expr: str) -> str:
    """`expr` as one symbol (parenthesised unless it already is one)."""
    if re.fullmatch(r'[a-zA-Z0-9-]+|"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]', expr):
        return expr
    if expr.startswith("( ") and expr.endswith(" )") and _is_one_group(expr):
        return expr
    return f"( {expr} )"


def _is_one_group(expr: str) -> bool:
    depth, i = 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch == '"' or ch == "[":
            i = _skip_literal(expr, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i != len(expr) - 1:
                return False
        i += 1
    return True


def _skip_literal(text: str, i: int) -> int:
    """The index after the literal or class starting at text[i]."""
    close = '"' if text[i] == '"' else "]"
    i += 1
    while i < len(text) and text[i] != close:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _slug(hint: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", hint).strip("-").lower()
    return (slug or "r")[:32].rstrip("-") or "r"


class Rules:
    """Named rules of one grammar; identical bodies share a name; the size is capped."""

    def __init__(self, limits: Limits, reserved: Iterable[str] = ()) -> None:
        self.limits = limits
        self.bodies: dict[str, str] = {}
        self._names_by_body: dict[str, str] = {}
        self._taken = {"root", *reserved}
        self.size = 0

    def add(self, hint: str, body: str) -> str:
        """A rule for `body` (an existing one if the body is known); returns its name."""
        if body in self._names_by_body:
            return self._names_by_body[body]
        name = self.reserve(hint)
        self.define(name, body)
        return name

    def reserve(self, hint: str) -> str:
        """A fresh name, for a rule whose body is defined later (recursion)."""
        base, i = _slug(hint), 1
        name = base
        while name in self._taken:
            i += 1
            name = f"{base}-{i}"
        self._taken.add(name)
        return name

    def define(self, name: str, body: str) -> None:
        """Give a reserved name its body."""
        self.bodies[name] = body
        self._names_by_body.setdefault(body, name)
        self.size += len(name) + len(body) + 6
        if self.size > self.limits.max_grammar_bytes:
            raise SchemaError(
                f"the grammar for this schema would exceed {self.limits.max_grammar_bytes} bytes"
            )

    def render(self, root: str, base: dict[str, str]) -> str:
        """The grammar text: `root ::= <root>`, these rules, then the base rules."""
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.bodies.items()]
        lines += [f"{name} ::= {body}" for name, body in base.items()]
        return "\n".join(lines) + "\n"


# llama.cpp's parser refuses a repetition whose count times the rules inside its group exceeds
# this, and silently drops a maximum count above it; we stay inside it (src/llama-grammar.cpp).
LLAMA_REPETITION_BUDGET = 2000
_COUNTS = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}")


def check_bounded(gbnf: str, limits: Limits) -> None:
    """Refuse a grammar whose size or repetitions are beyond `limits` or llama.cpp's budget.

    The last line of defence before llama.cpp's parser, which expands `x{m,n}` into n - m rules
    (so `{5,2}` never ends): walk every rule body as llama.cpp will and raise ValueError for a
    count above `max_repeat`, a maximum below its minimum, or a nested repetition past the
    parser's budget.
    """
    if len(gbnf.encode()) > limits.max_grammar_bytes:
        raise ValueError(f"the grammar is larger than {limits.max_grammar_bytes} bytes")
    for line in gbnf.splitlines():
        name, sep, body = line.partition("::=")
        if not sep:
            if line.strip() and not line.lstrip().startswith("#"):
                raise ValueError(f"not a rule: {line[:80]!r}")
            continue
        end, _ = _scan(body, 0, limits.max_repeat)
        if end != len(body):
            raise ValueError(f"unbalanced ')' in rule {name.strip()!r}")


def _scan(body: str, i: int, max_repeat: int) -> tuple[int, int]:
    """Walk alternatives from body[i] to the closing ')' (or the end): (index, rules made)."""
    made, previous = 0, 1  # rules generated so far; rules the last symbol stands for
    while i < len(body):
        ch = body[i]
        if ch in " \t":
            i += 1
        elif ch in '"[':
            i, previous = _skip_literal(body, i), 1
        elif ch == "(":
            i, inner = _scan(body, i + 1, max_repeat)
            if i >= len(body) or body[i] != ")":
                raise ValueError("unbalanced '('")
            i, made, previous = i + 1, made + inner + 1, inner + 1
        elif ch == ")":
            return i, made
        elif ch == "|":
            i, previous = i + 1, 1
        elif ch in "*+?{":
            low, high, i = _counts(body, i, max_repeat)
            total = high if high else (low or 1)
            if previous * total > LLAMA_REPETITION_BUDGET:
                raise ValueError(
                    f"a repetition of {total} over {previous} rules is past llama.cpp's budget"
                )
            made += 1 if high is None else high - low
            previous *= total
        elif ch.isalnum() or ch == "-":
            while i < len(body) and (body[i].isalnum() or body[i] == "-"):
                i += 1
            previous = 1
        else:
            raise ValueError(f"unexpected {ch!r} in a rule")
    return i, made


def _counts(body: str, i: int, max_repeat: int) -> tuple[int, int | None, int]:
    """(min, max or None, index after) of the quantifier at body[i]."""
    ch = body[i]
    if ch != "{":
        return {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch] + (i + 1,)
    match = _COUNTS.match(body, i)
    if match is None:
        raise ValueError("a malformed repetition")
    low_text, comma, high_text = match.groups()
    low = int(low_text)
    high = int(high_text) if high_text else (None if comma else low)
    if low > max_repeat or (high is not None and (high > max_repeat or high < low)):
        raise ValueError(f"the repetition {match.group()} is outside [0, {max_repeat}]")
    return low, high, match.end()
