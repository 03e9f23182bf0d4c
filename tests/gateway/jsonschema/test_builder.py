"""Schema -> grammar: every sentence llama.cpp lets through validates, within the limits."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel, Field

from gateway.jsonschema import Limits, SchemaError, json_object_grammar, schema_grammar
from tests.gateway.jsonschema.gbnf_regex import to_regex
from tests.gateway.jsonschema.sampling import GrammarSampler

LIMITS = Limits(max_string=12)


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Item(BaseModel):
    color: Color
    qty: int = Field(ge=1, le=10)
    note: str | None = None


class Order(BaseModel):
    items: list[Item] = Field(max_length=3)
    total: float = Field(gt=0, lt=1000)
    code: str = Field(pattern=r"^[A-Z]{2}-\d{3}$")
    tags: set[str] = Field(default_factory=set, max_length=2)


class Node(BaseModel):
    name: str = Field(max_length=5)
    children: list[Node] = []


SCHEMAS: dict[str, Any] = {
    "pydantic nested": Order.model_json_schema(),
    "pydantic recursive": Node.model_json_schema(),
    "formats": {
        "type": "object",
        "properties": {
            f: {"type": "string", "format": f}
            for f in ("date", "date-time", "time", "uuid", "email", "ipv4", "uri", "hostname")
        },
        "required": ["date", "uuid"],
    },
    "numbers": {
        "type": "object",
        "properties": {
            "small": {"type": "integer", "minimum": -37, "maximum": 1234},
            "open": {"type": "integer", "exclusiveMinimum": 100},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "narrow": {"type": "number", "exclusiveMinimum": 0.25, "exclusiveMaximum": 0.5},
        },
        "required": ["small", "open", "ratio", "narrow"],
    },
    "unions": {
        "oneOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
                "required": ["kind", "x"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"kind": {"const": "b"}, "y": {"type": "boolean"}},
                "required": ["kind"],
            },
        ]
    },
    "allOf and nullable": {
        "allOf": [
            {
                "type": "object",
                "properties": {"a": {"type": ["integer", "null"]}},
                "required": ["a"],
            },
            {"properties": {"b": {"type": "string", "maxLength": 3}}, "required": ["b"]},
        ]
    },
    "dict": {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 3},
    "tuple": {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"enum": ["x", 2, None]}],
        "items": False,
        "minItems": 1,
    },
    "any": {"type": "object", "properties": {"anything": True}, "required": ["anything"]},
}


@pytest.mark.model
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_sample_of_the_grammar_validates(grammar_sampler: GrammarSampler, name: str) -> None:
    schema = SCHEMAS[name]
    grammar = schema_grammar(schema, LIMITS)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for seed in range(12):
        text = grammar_sampler.sample(grammar.gbnf, seed)
        assert text is not None, "a grammar with bounded strings must close"
        value = json.loads(text)
        if not grammar.unenforced:
            assert validator.is_valid(value), (text, list(validator.iter_errors(value))[:1])


@pytest.mark.model
def test_json_object_mode_yields_objects(grammar_sampler: GrammarSampler) -> None:
    gbnf = json_object_grammar(LIMITS)
    for seed in range(8):
        text = grammar_sampler.sample(gbnf, seed, max_tokens=1000)
        assert text is not None and isinstance(json.loads(text), dict)


def test_what_only_a_check_after_generation_enforces_is_listed() -> None:
    grammar = schema_grammar(Order.model_json_schema(), LIMITS)
    assert grammar.unenforced == ("uniqueItems at /properties/tags",)
    assert schema_grammar(Node.model_json_schema(), LIMITS).unenforced == ()


@pytest.mark.parametrize(
    ("schema", "keyword", "param"),
    [
        ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength", "maxLength"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems", "maxItems"),
        (
            {"type": "object", "properties": {"s": {"type": "string", "maxLength": "abc"}}},
            "maxLength",
            "properties.s.maxLength",
        ),
        ({"type": "string", "maxLength": [1]}, "maxLength", "maxLength"),
        ({"type": "string", "maxLength": float("inf")}, "maxLength", "maxLength"),
        ({"type": "string", "minLength": 10**9}, "minLength", "minLength"),
        ({"type": "array", "minItems": 5000}, "minItems", "minItems"),
        ({"enum": []}, "enum", "enum"),
        ({"enum": [float("nan")]}, "enum", "enum"),
        ({"type": "number", "minimum": float("inf")}, "minimum", "minimum"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "maximum", "maximum"),
        ({"type": "integer", "minimum": 0.2, "maximum": 0.8}, "maximum", "maximum"),
        ({"type": "string", "enum": [1, 2]}, "enum", "enum"),
        ({"not": {"type": "string"}}, "not", "not"),
        ({"type": "string", "pattern": "(?=a)"}, "pattern", "pattern"),
        ({"type": "string", "format": "credit-card"}, "format", "format"),
        ({"type": "date"}, "type", "type"),
        ({"$ref": "https://example.com/s.json"}, "$ref", "$ref"),
        (
            {"type": "object", "required": ["x"], "additionalProperties": False},
            "required",
            "required",
        ),
    ],
)
def test_a_schema_we_cannot_honour_is_refused_naming_the_keyword(
    schema: dict[str, Any], keyword: str, param: str
) -> None:
    with pytest.raises(SchemaError) as err:
        schema_grammar(schema, Limits())
    assert err.value.keyword == keyword and err.value.param == param


def test_recursion_unrolls_to_the_depth_limit_and_deeper_is_refused() -> None:
    language = to_regex(schema_grammar(Node.model_json_schema(), Limits(max_ref_depth=3)).gbnf)
    leaf = '{"name":"a"}'
    assert language.fullmatch(f'{{"name":"a","children":[{leaf},{leaf}]}}')
    assert language.fullmatch(f'{{"name":"a","children":[{{"name":"b","children":[{leaf}]}}]}}')
    four_levels = f'{{"name":"a","children":[{{"name":"b","children":[{{"name":"c","children":[{leaf}]}}]}}]}}'  # noqa: E501
    assert not language.fullmatch(four_levels)
    endless = {
        "$defs": {
            "a": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]}
        },
        "$ref": "#/$defs/a",
    }
    with pytest.raises(SchemaError, match="recursion deeper than 3"):
        schema_grammar(endless, Limits(max_ref_depth=3))


def test_many_optional_properties_build_a_grammar_linear_in_their_number() -> None:
    def build(n: int) -> tuple[int, float]:
        schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(n)}}
        start = time.perf_counter()
        size = len(schema_grammar(schema, Limits()).gbnf)
        return size, time.perf_counter() - start

    small, _ = build(50)
    large, seconds = build(500)
    assert large < 12 * small and seconds < 1.0
    with pytest.raises(SchemaError, match="more than 512 properties"):
        build(1000)


def test_a_document_too_deep_or_too_large_is_refused_before_walking_it() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaError, match="nests deeper"):
        schema_grammar(deep, Limits())
    wide = {"enum": [[i] for i in range(30_000)]}
    with pytest.raises(SchemaError, match="nodes"):
        schema_grammar(wide, Limits())


def test_free_strings_follow_max_string_and_large_max_lengths_are_checked_after() -> None:
    assert "char{0,12}" in schema_grammar({"type": "string"}, LIMITS).gbnf
    unbounded = schema_grammar({"type": "string", "maxLength": 100_000}, Limits())
    assert "char*" in unbounded.gbnf and unbounded.unenforced == ("maxLength at /",)
