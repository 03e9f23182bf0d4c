"""GBNF text: literals, repetitions, and the bounds check in front of llama.cpp's parser."""

from __future__ import annotations

import pytest

from gateway.jsonschema import Limits
from gateway.jsonschema.gbnf import check_bounded, json_literal, literal, literal_trie, repeat
from tests.gateway.jsonschema.gbnf_regex import expr_regex


def test_literals_match_their_text_exactly() -> None:
    for text in ['say "hi"', "back\\slash", "new\nline", "tab\t", "café", "\x7f"]:
        assert expr_regex(literal(text)).fullmatch(text)
    assert json_literal({"a": [1, "x"]}) == '"{\\"a\\":[1,\\"x\\"]}"'


def test_repeat_writes_the_shortest_quantifier() -> None:
    assert [repeat("x", 0, None), repeat("x", 1, None), repeat("x", 0, 1)] == ["x*", "x+", "x?"]
    assert [repeat("x", 3, 3), repeat("x", 2, 5), repeat("x", 2, None)] == [
        "x{3}",
        "x{2,5}",
        "x{2,}",
    ]
    assert repeat("x", 0, 0) == "" and repeat("x", 1, 1) == "x"


@pytest.mark.parametrize(
    ("gbnf", "complaint"),
    [
        ('root ::= "a"{5,2}', "outside"),  # llama.cpp would loop making rules
        ('root ::= "a"{0,5000}', "outside"),
        ('root ::= "a"{1001}', "outside"),
        ("root ::= ( [0-9]{0,100} ){0,100}", "budget"),
        ('root ::= ( "a"', "unbalanced"),
        ('root ::= "a" )', "unbalanced"),
        ("just text", "not a rule"),
        ('root ::= "' + "a" * 600_000 + '"', "larger than"),
    ],
)
def test_unbounded_grammars_never_reach_llama_cpp(gbnf: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        check_bounded(gbnf, Limits())


def test_bounded_grammars_pass() -> None:
    check_bounded('root ::= "[" x{0,999} "]"\nx ::= [{}] | "\\"{"', Limits())
    check_bounded('root ::= ( "," ws [0-9] ){0,999}\nws ::= " "?', Limits())


def test_a_literal_trie_matches_exactly_its_texts() -> None:
    texts = ['"red"', '"green"', '"grey"', "1", "12", "null", '"a\\"b"', ""]
    expr = literal_trie(texts)
    assert expr.count('"gre') == 1  # the shared beginning is written once
    pattern = expr_regex(expr)
    for text in [*texts, '"gre"', "2", "nul", '"red', "123"]:
        assert bool(pattern.fullmatch(text)) == (text in texts), text
