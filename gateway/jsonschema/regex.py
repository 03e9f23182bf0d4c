"""`pattern` (the ECMA-262 subset a grammar can express) -> the grammar of a JSON string's body.

Supported: literals, `.`, escapes (`\\d \\w \\s` and their negations, `\\n \\t \\xHH \\uHHHH`,
escaped punctuation), classes `[a-z_]` and `[^...]`, groups `(...)`, `(?:...)`, `(?<name>...)`,
alternation, the quantifiers `* + ? {n} {n,} {n,m}` (lazy ones too: the language is the same),
`^` at the start and `$` at the end. A pattern that is not anchored matches anywhere in the
string (JSON Schema's rule), so free characters may come before or after it. Refused with a
SchemaError naming `pattern`: backreferences, lookaround, `\\b`, `\\p{...}`, inline flags and
anchors elsewhere. Every character is written the way JSON needs it (`"` as `\\"`, control
characters escaped; the grammar leaves control characters out where a class would allow them).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.jsonschema.gbnf import (
    NOT_TEXT,
    Ranges,
    alternatives,
    char_class,
    group,
    literal,
    repeat,
    seq,
)

MAX_CODE = 0x10FFFF
_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Ranges = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x2028, 0x2029), (0xFEFF, 0xFEFF)]
_NOT_LINE: Ranges = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]  # what `.` does not match
# Characters JSON must escape, each as the literal of its escape sequence.
_ESCAPED = {code: literal("\\" + letter) for code, letter in [
    (0x22, '"'), (0x5C, "\\"), (0x08, "b"), (0x09, "t"), (0x0A, "n"), (0x0C, "f"), (0x0D, "r")
]}  # fmt: skip
_SIMPLE_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B, "0": 0x00}


class PatternError(ValueError):
    """The pattern uses something a grammar cannot express (or is not a valid regex)."""


def complement(ranges: Ranges) -> Ranges:
    """Every code point not in `ranges`."""
    out, start = [], 0
    for lo, hi in sorted(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = max(start, hi + 1)
    if start <= MAX_CODE:
        out.append((start, MAX_CODE))
    return out


def _normalise(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _cut(ranges: Ranges, lo: int, hi: int) -> Ranges:
    """`ranges` without [lo, hi]."""
    out: Ranges = []
    for a, b in ranges:
        if b < lo or a > hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if b > hi:
            out.append((hi + 1, b))
    return out


def json_chars(ranges: Ranges) -> str | None:
    """One JSON-encoded character from `ranges` (control characters other than \\t\\n\\r\\b\\f
    are left out); None if nothing is left."""
    ranges = _normalise(ranges)
    options = [e for code, e in _ESCAPED.items() if any(a <= code <= b for a, b in ranges)]
    raw = ranges
    for lo, hi in NOT_TEXT:
        raw = _cut(raw, lo, hi)
    if len(raw) == 1 and raw[0][0] == raw[0][1] and not options:
        return literal(chr(raw[0][0]))
    if raw:
        # a long positive list is shorter written as the complement
        others = complement(raw)
        for lo, hi in NOT_TEXT:
            others = _cut(others, lo, hi)
        if len(others) < len(raw):
            options.insert(0, char_class(_normalise([*NOT_TEXT, *others]), True))
        else:
            options.insert(0, char_class(raw))
    return alternatives(options) if options else None


class _Parser:
    def __init__(self, pattern: str, max_repeat: int, max_free: int | None) -> None:
        self.text = pattern
        self.pos = 0
        self.max_repeat = max_repeat
        self.max_free = max_free  # bound of `*` and `+` (None: unbounded)

    def fail(self, message: str) -> PatternError:
        return PatternError(f"pattern {self.text!r}: {message} (at offset {self.pos})")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def take(self) -> str:
        if self.pos >= len(self.text):
            raise self.fail("unexpected end")
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def alternation(self) -> str:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return alternatives([o or '""' for o in options])

    def sequence(self) -> str:
        parts: list[str] = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            if self.peek() in "^$":
                raise self.fail(f"the anchor {self.peek()!r} is only supported at the ends")
            atom = self.atom()
            parts.append(self.quantified(atom))
        return seq(*parts)

    def quantified(self, atom: str) -> str:
        ch = self.peek()
        if ch == "{" and self._is_count():
            low, high = self.count()
        elif ch in ("*", "+", "?"):
            self.pos += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        else:
            return atom
        if self.peek() == "?":
            self.pos += 1  # lazy: the same set of strings
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._is_count()):
            raise self.fail("a quantifier cannot follow another")
        if high is None and self.max_free is not None:
            high = max(low, self.max_free)
        return repeat(group(atom), low, high)

    def _is_count(self) -> bool:
        end = self.text.find("}", self.pos)
        body = self.text[self.pos + 1 : end] if end > 0 else ""
        return bool(body) and all(c.isdigit() or c == "," for c in body) and body[0] != ","

    def count(self) -> tuple[int, int | None]:
        end = self.text.index("}", self.pos)
        low_text, comma, high_text = self.text[self.pos + 1 : end].partition(",")
        self.pos = end + 1
        low = int(low_text)
        high = int(high_text) if high_text else (None if comma else low)
        if high is not None and high < low:
            raise self.fail(f"the count {{{low},{high}}} has its maximum below its minimum")
        if low > self.max_repeat or (high or 0) > self.max_repeat:
            raise self.fail(f"counts above {self.max_repeat} are not supported")
        return low, high

    def atom(self) -> str:
        ch = self.take()
        if ch == "(":
            return self.group()
        if ch == "[":
            return self.char_set(self.class_ranges())
        if ch == ".":
            return self.char_set(complement(_NOT_LINE))
        if ch == "\\":
            return self.char_set(self.escape(in_class=False))
        if ch in "*+?":
            raise self.fail(f"nothing to repeat before {ch!r}")
        return self.char_set([(ord(ch), ord(ch))])

    def char_set(self, ranges: Ranges) -> str:
        expr = json_chars(ranges)
        if expr is None:
            raise self.fail("a character class matches no character JSON can hold")
        return expr

    def group(self) -> str:
        if self.peek() == "?":
            for prefix in ("?:", "?<", "?P<"):
                if self.text.startswith(prefix, self.pos) and not self.text.startswith(
                    ("?<=", "?<!"), self.pos
                ):
                    self.pos += len(prefix)
                    if prefix != "?:":
                        self.pos = self.text.index(">", self.pos) + 1  # a named group
                    break
            else:
                raise self.fail("lookaround and inline flags are not supported")
        inner = self.alternation()
        if self.take() != ")":
            raise self.fail("unbalanced parenthesis")
        return group(inner) if inner else '""'

    def class_ranges(self) -> Ranges:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: Ranges = []
        first = True
        while first or self.peek() != "]":
            first = False
            item = self.class_item()
            if self.peek() == "-" and self.peek(2) not in ("-]", "-"):
                self.pos += 1
                end = self.class_item()
                if len(item) != 1 or len(end) != 1 or item[0][0] != item[0][1]:
                    raise self.fail("a range needs single characters at both ends")
                if end[0][0] < item[0][0]:
                    raise self.fail("a range out of order")
                item = [(item[0][0], end[0][1])]
            ranges += item
        self.pos += 1
        return complement(ranges) if negated else ranges

    def class_item(self) -> Ranges:
        ch = self.take()
        if ch == "\\":
            return self.escape(in_class=True)
        if ch == "[" and self.peek() == ":":
            raise self.fail("POSIX classes are not supported")
        return [(ord(ch), ord(ch))]

    def escape(self, in_class: bool) -> Ranges:
        ch = self.take()
        classes: dict[str, Callable[[], Ranges]] = {
            "d": lambda: _DIGIT, "D": lambda: complement(_DIGIT),
            "w": lambda: _WORD, "W": lambda: complement(_WORD),
            "s": lambda: _SPACE, "S": lambda: complement(_SPACE),
        }  # fmt: skip
        if ch in classes:
            return classes[ch]()
        if ch in _SIMPLE_ESCAPES:
            return [(_SIMPLE_ESCAPES[ch],) * 2]
        if ch == "b" and in_class:
            return [(0x08, 0x08)]
        if ch in ("x", "u"):
            return [(self.hex_code(ch),) * 2]
        if ch.isalnum():
            raise self.fail(f"the escape \\{ch} is not supported")
        return [(ord(ch), ord(ch))]

    def hex_code(self, kind: str) -> int:
        if kind == "u" and self.peek() == "{":
            end = self.text.index("}", self.pos)
            digits, self.pos = self.text[self.pos + 1 : end], end + 1
        else:
            n = 2 if kind == "x" else 4
            digits, self.pos = self.text[self.pos : self.pos + n], self.pos + n
        try:
            code = int(digits, 16)
        except ValueError:
            raise self.fail(f"a bad \\{kind} escape") from None
        if code > MAX_CODE:
            raise self.fail(f"a bad \\{kind} escape")
        return code


def pattern_to_gbnf(pattern: str, free: str, max_repeat: int, max_free: int | None) -> str:
    """The body of a JSON string matching `pattern`; `free` is one free character."""
    parser = _Parser(pattern, max_repeat, max_free)
    is_start_anchored = parser.peek() == "^"
    if is_start_anchored:
        parser.pos = 1
    is_end_anchored = pattern.endswith("$") and not pattern.endswith("\\$")
    if is_end_anchored:
        parser.text = pattern[:-1]
    try:
        body = parser.alternation()
    except (IndexError, ValueError) as e:
        if isinstance(e, PatternError):
            raise
        raise parser.fail("not a valid regular expression") from e
    if parser.pos != len(parser.text):
        raise parser.fail("unbalanced parenthesis")
    padding = repeat(free, 0, max_free)
    return seq(
        "" if is_start_anchored else padding,
        body,  # alternatives come grouped: no bare `|` at the top
        "" if is_end_anchored else padding,
    )
