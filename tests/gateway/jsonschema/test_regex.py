"""`pattern` to grammar: the strings it allows are those the regex matches, JSON-escaped."""

from __future__ import annotations

import json
import re

import pytest

from gateway.jsonschema.regex import PatternError, pattern_to_gbnf
from tests.gateway.jsonschema.gbnf_regex import to_regex

CHAR = r'[^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )'
SAMPLES = [
    "", "a", "ab", "abc", "abbbc", "xabcx", "AB-123", "AB-12345", "AB-123x", "AB-123yz",
    "ab-123", "A1-123", "foo", "bar", "baz", "foobaz", "barbaz", "foobarbaz", "12:30",
    "a.b", "a\nb", 'a"b', "a\\b", "tab\there", "é", "日本", "x_y", " ", "a b",
]  # fmt: skip
PATTERNS = [
    "^[A-Z]{2}-[0-9]{3,5}(x|yz)?$", "ab+c", "^ab+c$", "^(foo|bar)?baz$", r"^\d\d:\d\d$",
    r"^a\.b$", "^a.b$", r'^[^"\\]*$', r"^\w+$", r"^\S+$", r"^[\s\S]{0,3}$", "^(?:ab)*c?$",
    r"^(?<word>[a-z]+)\s?$", "^[é日本]+$", r"^\u00e9$", "^x{2}$", "^[a-]+$", "b$", "^a",
]  # fmt: skip


def _grammar(pattern: str) -> re.Pattern[str]:
    body = pattern_to_gbnf(pattern, "char", max_repeat=100, max_free=None)
    return to_regex(f"root ::= {body or chr(34) * 2}\nchar ::= {CHAR}\n")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_grammar_allows_what_the_pattern_matches(pattern: str) -> None:
    grammar = _grammar(pattern)
    for text in SAMPLES:
        encoded = json.dumps(text, ensure_ascii=False)[1:-1]  # as it stands in JSON
        python_pattern = pattern.replace("(?<", "(?P<")  # JS names groups without the P
        expected = re.search(python_pattern, text, re.ASCII) is not None  # \w is ASCII, as in JS
        assert bool(grammar.fullmatch(encoded)) == expected, (pattern, text)


def test_free_repetitions_are_bounded_when_asked() -> None:
    body = pattern_to_gbnf("^a+$", "char", max_repeat=100, max_free=8)
    assert body == '"a"{1,8}'


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [
        (r"^(a)\1$", r"escape \\1"),
        ("^(?=a)a$", "lookaround"),
        (r"\bword", r"escape \\b"),
        (r"^\p{L}+$", r"escape \\p"),
        ("a^b", "anchor"),
        ("^(a$", "unexpected end"),
        ("^a{5,2}$", "maximum below its minimum"),
        ("^a{0,5000}$", "counts above 100"),
        ("^*$", "nothing to repeat"),
        ("(?i)abc", "lookaround and inline flags"),
    ],
)
def test_what_a_grammar_cannot_express_is_refused_by_name(pattern: str, complaint: str) -> None:
    with pytest.raises(PatternError, match=complaint):
        pattern_to_gbnf(pattern, "char", max_repeat=100, max_free=None)
