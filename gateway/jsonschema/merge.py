"""`allOf`: the subschemas folded into one schema that asks for all of them at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.keywords import Path, assertions

_BOUNDS = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "minProperties", "maxProperties",
})  # fmt: skip
Resolver = Callable[[dict[str, Any], Path], tuple[dict[str, Any], Path]]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _types(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = set(kind if isinstance(kind, list) else [kind])
    return kinds | {"integer"} if "number" in kinds else kinds


def _merge_type(a: Any, b: Any, path: Path) -> Any:
    ta, tb = _types({"type": a}), _types({"type": b})
    assert ta is not None and tb is not None
    both = sorted(ta & tb)
    if not both:
        raise SchemaError(f"allOf asks for types {a!r} and {b!r} at once", "allOf", path)
    return both[0] if len(both) == 1 else both


def _tighter(keyword: str, a: Any, b: Any) -> Any:
    smaller = Decimal(repr(a)) <= Decimal(repr(b))
    if keyword.startswith(("min", "exclusiveMin")):
        return b if smaller else a
    return a if smaller else b


def _merge_value(keyword: str, a: Any, b: Any, path: Path) -> Any:
    if keyword == "type":
        return _merge_type(a, b, path)
    if keyword == "required":
        return list(dict.fromkeys([*a, *b]))
    if keyword == "properties":
        merged = dict(a)
        for key, sub in b.items():
            merged[key] = {"allOf": [merged[key], sub]} if key in merged else sub
        return merged
    if keyword in ("items", "additionalProperties", "propertyNames"):
        if a is False or b is False:
            return False
        return b if a is True else a if b is True else {"allOf": [a, b]}
    if keyword in _BOUNDS:
        return _tighter(keyword, a, b)
    if keyword == "enum":
        keep = {_canon(v) for v in b}
        return [v for v in a if _canon(v) in keep]
    if keyword == "uniqueItems":
        return bool(a) or bool(b)
    if _canon(a) == _canon(b):
        return a
    raise SchemaError(f"allOf combines two different values of {keyword!r}", keyword, path)


MAX_NESTING = 32  # allOf inside allOf


def merge_all(
    schema: dict[str, Any], path: Path, resolve: Resolver, level: int = 0
) -> dict[str, Any]:
    """`schema` with its `allOf` (and the `$ref`s at the top of each member) folded in."""
    if level > MAX_NESTING:
        raise SchemaError(f"allOf nests deeper than {MAX_NESTING} levels", "allOf", path)
    members = schema.get("allOf")
    if not isinstance(members, list):
        raise SchemaError("allOf must be a list of schemas", "allOf", path)
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for i, member in enumerate(members):
        sub_path = (*path, "allOf", str(i))
        if member is True:
            continue
        if member is False:
            raise SchemaError("allOf holds `false`: no value can satisfy it", "allOf", sub_path)
        member, sub_path = resolve(member, sub_path)
        if "allOf" in member:
            member = merge_all(member, sub_path, resolve, level + 1)
        for keyword, value in assertions(member).items():
            if keyword in ("anyOf", "oneOf") and keyword in merged:
                raise SchemaError(
                    f"allOf with {keyword} in two members is not supported", keyword, sub_path
                )
            merged[keyword] = (
                _merge_value(keyword, merged[keyword], value, sub_path)
                if keyword in merged
                else value
            )
    return merged
