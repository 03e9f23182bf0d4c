"""JSON Schema -> GBNF: the shapes of the rules (llama.cpp enforces them in the e2e tests)."""

from __future__ import annotations

import re

import pytest

from gateway.jsonschema_gbnf import JSON_OBJECT_GRAMMAR, SchemaError, schema_to_gbnf

PERSON = {
    "type": "object",
    "properties": {
        "first_name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
        "nick": {"type": ["string", "null"], "maxLength": 4},
    },
    "required": ["first_name", "age"],
}


def rules(grammar: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in grammar.splitlines())


def test_every_rule_is_defined_once_with_a_name_llama_cpp_accepts() -> None:
    lines = schema_to_gbnf(PERSON).splitlines()
    names = [line.split(" ::= ")[0] for line in lines]
    assert len(names) == len(set(names)) and names[0] == "root"
    assert all(re.fullmatch(r"[a-zA-Z0-9-]+", name) for name in names)  # no underscores
    bodies = " ".join(line.split(" ::= ", 1)[1] for line in lines)
    bare = re.sub(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]', " ", bodies)  # literals out
    assert set(re.findall(r"[a-z][a-z0-9-]*", bare)) <= set(names)


def test_required_properties_come_in_order_and_optional_ones_may_be_left_out() -> None:
    grammar = rules(schema_to_gbnf(PERSON))
    obj = grammar[grammar["root"]]
    assert obj.index('"\\"first_name\\""') < obj.index('"\\"age\\""') < obj.index('"\\"pets\\""')
    assert '( "," ws "\\"pets\\""' in obj and '( "," ws "\\"nick\\""' in obj


def test_strings_arrays_and_enums_are_bounded_as_the_schema_says() -> None:
    grammar = schema_to_gbnf(PERSON)
    assert "char{0,8}" in grammar and "char{0,4}" in grammar
    assert '( "\\"cat\\"" | "\\"dog\\"" )' in grammar
    assert "){0,1}" in grammar  # at most one more pet after the first


def test_an_object_without_required_properties_may_be_empty() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"const": 1}}}
    obj = rules(schema_to_gbnf(schema))["schema"]
    assert obj.startswith('"{" ws (') and obj.endswith(')? ws "}"')


def test_unsupported_keywords_are_refused_not_ignored() -> None:
    with pytest.raises(SchemaError, match="'pattern'"):
        schema_to_gbnf({"type": "string", "pattern": "^a+$"})
    with pytest.raises(SchemaError, match="'\\$ref'"):
        schema_to_gbnf({"type": "object", "properties": {"x": {"$ref": "#/defs/x"}}})
    with pytest.raises(SchemaError, match="type 'date'"):
        schema_to_gbnf({"type": "date"})


def test_json_object_grammar_only_allows_an_object_at_the_top() -> None:
    grammar = rules(JSON_OBJECT_GRAMMAR)
    assert grammar["root"] == "object"
    assert grammar["ws"] == '" "?'  # at most one space: no endless whitespace
