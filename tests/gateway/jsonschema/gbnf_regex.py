"""A test helper: a grammar without recursion as one Python regex, to check its language."""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r'\s+|"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[a-zA-Z0-9-]+|\{[0-9,]*\}|[()|*+?]'
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "[": "[", "]": "]"}


def _literal(token: str) -> str:
    out, i, body = [], 0, token[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "(?:" + re.escape("".join(out)) + ")"  # a quantifier applies to all of it


def _class(token: str) -> str:
    # Python's re reads \xHH and \uHHHH as llama.cpp does; code points past U+10FFFF do not
    # exist for Python strings, so those ranges are dropped.
    return re.sub(r"\\U00[1-3][0-9A-F]{5}-\\U00[1-3][0-9A-F]{5}", "", token)


def to_regex(gbnf: str, root: str = "root") -> re.Pattern[str]:
    """The language of `root` as a compiled regex (fullmatch it)."""
    rules = dict(line.split(" ::= ", 1) for line in gbnf.strip().splitlines())
    cache: dict[str, str] = {}

    def expand(name: str, stack: tuple[str, ...]) -> str:
        if name in stack:
            raise ValueError(f"rule {name} is recursive")
        if name not in cache:
            parts = []
            for token in _TOKEN.findall(rules[name]):
                if token.isspace():
                    continue
                if token.startswith('"'):
                    parts.append(_literal(token))
                elif token.startswith("["):
                    parts.append(_class(token))
                elif token == "(":
                    parts.append("(?:")
                elif token.startswith("{") or token in ")|*+?":
                    parts.append(token)
                else:
                    parts.append(f"(?:{expand(token, (*stack, name))})")
            cache[name] = "".join(parts)
        return cache[name]

    return re.compile(expand(root, ()), re.DOTALL)


def expr_regex(expr: str) -> re.Pattern[str]:
    """The language of one expression that refers to no rule."""
    return to_regex(f"root ::= {expr}")
