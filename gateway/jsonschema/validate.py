"""The check after generation, for keywords a grammar could only approximate."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match


class OutputCheck:
    """Validates generated JSON text against the schema it was generated for."""

    def __init__(self, schema: Any) -> None:
        schema = _without_nullable(schema)
        self._validator = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def problem(self, text: str) -> str | None:
        """Why `text` does not satisfy the schema (keyword and place), or None if it does."""
        try:
            value = json.loads(text)
        except ValueError:
            return "the output is not valid JSON"
        return self.value_problem(value)

    def value_problem(self, value: Any) -> str | None:
        """Why `value` does not satisfy the schema, or None if it does."""
        error = best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        return f"{error.validator} at {error.json_path}: {error.message[:200]}"


def _without_nullable(schema: Any) -> Any:
    """OpenAPI's `nullable: true` as JSON Schema says it (the grammar reads both)."""
    if isinstance(schema, list):
        return [_without_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _without_nullable(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out
