"""The check after generation names the keyword and the place an answer breaks."""

from __future__ import annotations

from gateway.jsonschema.validate import OutputCheck

TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
}


def test_a_valid_answer_has_no_problem() -> None:
    assert OutputCheck(TAGS).problem('{"tags": ["a", "b"]}') is None


def test_a_broken_keyword_is_named_with_its_place() -> None:
    problem = OutputCheck(TAGS).problem('{"tags": ["a", "a"]}')
    assert problem is not None and problem.startswith("uniqueItems at $.tags")
    assert OutputCheck(TAGS).problem('{"tags": [') == "the output is not valid JSON"


def test_formats_and_openapi_nullable_are_understood() -> None:
    check = OutputCheck({"type": "string", "format": "date", "nullable": True})
    assert check.problem('"2024-02-29"') is None and check.problem("null") is None
    assert check.problem('"2023-02-29"') is not None
