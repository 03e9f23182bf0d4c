"""Which keywords mean what, typed reads of their values, and the document's shape check."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as MetaSchemaError
from jsonschema.exceptions import best_match

from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.limits import Limits

Path = tuple[str, ...]

# Assertions no grammar here can honour: refused rather than silently not enforced.
REFUSED = {
    "not": "negation",
    "if": "conditionals", "then": "conditionals", "else": "conditionals",
    "dependentRequired": "dependencies", "dependentSchemas": "dependencies",
    "dependencies": "dependencies", "patternProperties": "pattern-keyed properties",
    "contains": "'contains'", "minContains": "'contains'", "maxContains": "'contains'",
    "unevaluatedItems": "'unevaluatedItems'", "$dynamicRef": "dynamic refs",
    "$recursiveRef": "recursive refs", "$dynamicAnchor": "dynamic refs",
}  # fmt: skip
OBJECT_KEYWORDS = ("properties", "required", "additionalProperties", "propertyNames",
                   "minProperties", "maxProperties", "unevaluatedProperties")  # fmt: skip
ARRAY_KEYWORDS = ("items", "prefixItems", "minItems", "maxItems", "uniqueItems", "additionalItems")
STRING_KEYWORDS = ("minLength", "maxLength", "pattern", "format")
NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
# Keywords with a meaning here; any other keyword (title, description, x-...) is annotation.
ASSERTIONS = frozenset(
    ("type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "nullable",
     *OBJECT_KEYWORDS, *ARRAY_KEYWORDS, *STRING_KEYWORDS, *NUMBER_KEYWORDS)
)  # fmt: skip


def assertions(schema: dict[str, Any]) -> dict[str, Any]:
    """The keywords of `schema` that constrain values."""
    return {k: v for k, v in schema.items() if k in ASSERTIONS}


def check_document(schema: Any, limits: Limits, path: Path = ()) -> None:
    """Refuse a document too deep or too large to walk, then one the meta-schema rejects."""
    stack: list[tuple[Any, int]] = [(schema, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > limits.max_schema_depth:
            raise SchemaError(f"the schema nests deeper than {limits.max_schema_depth}", None, path)
        if count > limits.max_schema_nodes:
            raise SchemaError(
                f"the schema has more than {limits.max_schema_nodes} nodes", None, path
            )
        if isinstance(node, dict):
            stack += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, depth + 1) for v in node]
    if not isinstance(schema, (dict, bool)):
        raise SchemaError("a schema must be a JSON object or a boolean", None, path)
    error = best_match(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(schema))
    if error is not None:
        _raise_meta(error, path)


def _raise_meta(error: MetaSchemaError | Any, path: Path) -> None:
    where = [str(p) for p in error.path]
    keyword = where.pop() if where else None
    raise SchemaError(
        f"{keyword or 'the schema'} is invalid: {error.message[:200]}", keyword, path + tuple(where)
    )


def count(schema: dict[str, Any], keyword: str, path: Path) -> int | None:
    """A non-negative integer keyword (minLength, maxItems, ...), or None if absent."""
    value = schema.get(keyword)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{keyword} must be a non-negative integer", keyword, path)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise SchemaError(f"{keyword} must be a non-negative integer", keyword, path)
    if value < 0:
        raise SchemaError(f"{keyword} must be a non-negative integer", keyword, path)
    return int(value)


def number(schema: dict[str, Any], keyword: str, path: Path) -> Decimal | None:
    """A finite number keyword (minimum, multipleOf, ...), or None if absent."""
    value = schema.get(keyword)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{keyword} must be a number", keyword, path)
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"{keyword} must be a finite number", keyword, path)
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def bounds_pair(
    schema: dict[str, Any], low_kw: str, high_kw: str, path: Path
) -> tuple[int, int | None]:
    """(low, high) of a min/max count pair, refusing high < low."""
    low = count(schema, low_kw, path) or 0
    high = count(schema, high_kw, path)
    if high is not None and high < low:
        raise SchemaError(f"{high_kw} ({high}) is less than {low_kw} ({low})", high_kw, path)
    return low, high


def types_of(schema: dict[str, Any], path: Path) -> list[str] | None:
    """The schema's `type` as a list (None when absent)."""
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = kind if isinstance(kind, list) else [kind]
    for k in kinds:
        if k not in TYPES:
            raise SchemaError(f"type {str(k)[:50]!r} is not a JSON Schema type", "type", path)
    if not kinds:
        raise SchemaError("type is an empty list: no value can satisfy it", "type", path)
    return list(dict.fromkeys(kinds))


def inferred_types(schema: dict[str, Any]) -> list[str]:
    """The types a schema without `type` constrains, judged by its keywords."""
    found = []
    for kind, keywords in (
        ("object", OBJECT_KEYWORDS),
        ("array", ARRAY_KEYWORDS),
        ("string", STRING_KEYWORDS),
        ("number", NUMBER_KEYWORDS),
    ):
        if any(k in schema for k in keywords):
            found.append(kind)
    return found
