"""Arrays and objects of a schema as grammar expressions.

Objects write their properties in the schema's order. Optional properties use two rules per
property ("the rest, nothing written yet" and "the rest, after a comma"), so the grammar grows
linearly with the number of properties. When `properties` is given, the grammar writes only
those (extra properties are allowed by the schema, never required); free keys are written
only for objects without `properties` (dict-like schemas).
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.gbnf import WS, Rules, group, json_literal, repeat, seq
from gateway.jsonschema.keywords import Path, bounds_pair
from gateway.jsonschema.limits import Limits

COMMA = f'"," {WS}'


class Visitor(Protocol):
    """What arrays and objects need from the builder."""

    limits: Limits
    rules: Rules

    def visit(self, schema: Any, path: Path, depth: int) -> str | None: ...

    def unenforced(self, keyword: str, path: Path) -> None: ...

    def free_string(self) -> str: ...


def _upper(v: Visitor, high: int | None, keyword: str, path: Path) -> int | None:
    """A maximum count the grammar can hold; a larger one is checked after generation."""
    if high is not None and high > v.limits.max_repeat:
        v.unenforced(keyword, path)
        return None
    return high


def _lower(v: Visitor, low: int, keyword: str, path: Path) -> int:
    if low > v.limits.max_repeat:
        raise SchemaError(
            f"{keyword} above {v.limits.max_repeat} is beyond this server's grammar limit",
            keyword,
            path,
        )
    return low


def array(v: Visitor, schema: dict[str, Any], path: Path, depth: int, hint: str) -> str | None:
    """`[...]` with prefixItems, items and the item counts."""
    low, high = bounds_pair(schema, "minItems", "maxItems", path)
    low = _lower(v, low, "minItems", path)
    high = _upper(v, high, "maxItems", path)
    if schema.get("uniqueItems") is True:
        v.unenforced("uniqueItems", path)
    items = schema.get("items", True)
    prefix_schemas = schema.get("prefixItems", [])
    rest_key = "items"
    if isinstance(items, list):  # draft 7 tuples
        prefix_schemas, items, rest_key = (
            items,
            schema.get("additionalItems", True),
            "additionalItems",
        )
    prefix = [
        v.visit(s, (*path, "prefixItems", str(i)), depth) for i, s in enumerate(prefix_schemas)
    ]
    rest = _named(v, v.visit(items, (*path, rest_key), depth), f"{hint}-item")
    elements = _elements(prefix, rest, low, high)
    if elements is None:
        raise SchemaError("no array satisfies minItems with these item schemas", "minItems", path)
    return v.rules.add(hint, seq('"["', WS, elements, WS, '"]"'))


def _named(v: Visitor, expr: str | None, hint: str) -> str | None:
    """`expr` as a rule name: a repeated group then holds one rule (llama.cpp's budget)."""
    if expr is None or all(c.isalnum() or c == "-" for c in expr):
        return expr
    return v.rules.add(hint, expr)


def _elements(prefix: list[str | None], rest: str | None, low: int, high: int | None) -> str | None:
    """Comma-separated elements: the prefix items in order, then `rest` items; None if no
    count in [low, high] is possible."""
    count = len(prefix) if high is None else min(len(prefix), high)
    count = next((i for i in range(count) if prefix[i] is None), count)  # stop before `false`
    has_more = rest is not None and count == len(prefix) and (high is None or high > count)
    if not has_more and count < low:
        return None
    tail = ""
    if has_more:
        assert rest is not None
        more_low = max(low - count, 0)
        more_high = None if high is None else high - count
        if count == 0:
            inner = seq(
                rest,
                repeat(group(seq(COMMA, rest)), max(more_low - 1, 0),
                       None if more_high is None else more_high - 1),
            )  # fmt: skip
            return inner if low > 0 else f"( {inner} )?"
        tail = repeat(group(seq(COMMA, rest)), more_low, more_high)
    for i in reversed(range(count)):
        item = prefix[i]
        assert item is not None
        part = seq(COMMA if i else "", item, tail)
        tail = part if i < low else f"( {part} )?"
    return tail


def object_(v: Visitor, schema: dict[str, Any], path: Path, depth: int, hint: str) -> str | None:
    """`{...}` with properties, required, additionalProperties and the property counts."""
    props = schema.get("properties") or {}
    required = schema.get("required") or []
    extra = schema.get("additionalProperties", True)
    if schema.get("unevaluatedProperties") is False:
        extra = False
    elif "unevaluatedProperties" in schema:
        raise SchemaError(
            "unevaluatedProperties other than false is not supported", "unevaluatedProperties", path
        )
    low, high = bounds_pair(schema, "minProperties", "maxProperties", path)
    for key in required:
        if key not in props:
            if extra is False:
                raise SchemaError(
                    f"required property {key[:50]!r} is not allowed by additionalProperties false",
                    "required",
                    path,
                )
            props = {**props, key: extra}
    if len(props) > v.limits.max_properties:
        raise SchemaError(
            f"more than {v.limits.max_properties} properties in one object", "properties", path
        )
    if not props:
        return _free_object(v, schema, extra, (low, high), path, depth, hint)
    return _listed_object(v, props, set(required), (low, high), path, depth, hint)


def _listed_object(
    v: Visitor,
    props: dict[str, Any],
    required: set[str],
    counts: tuple[int, int | None],
    path: Path,
    depth: int,
    hint: str,
) -> str | None:
    pairs: list[tuple[str, bool]] = []  # (the "key": value expression, is it required)
    for key, sub in props.items():
        value = v.visit(sub, (*path, "properties", key), depth)
        if value is None:
            if key in required:
                return None
            continue
        pairs.append((seq(json_literal(key), '":"', WS, value), key in required))
    num_required = sum(1 for _, r in pairs if r)
    low, high = counts
    if high is not None and high < num_required:
        raise SchemaError(
            f"maxProperties ({high}) is below the {num_required} required", "maxProperties", path
        )
    if low > num_required:
        v.unenforced("minProperties", path)
    if high is not None and high < len(pairs):
        v.unenforced("maxProperties", path)
    body = _ordered(v, pairs, hint)
    return v.rules.add(hint, seq('"{"', WS, body, WS, '"}"'))


def _ordered(v: Visitor, pairs: list[tuple[str, bool]], hint: str) -> str:
    """Properties in order; each optional one may be left out. Linear in the property count.

    after[i]: properties i.. when one was written before (each then needs a comma).
    first: properties i.. when none was written yet; only needed up to the first required one.
    """
    n = len(pairs)
    last_head = next((i for i, (_, is_required) in enumerate(pairs) if is_required), n - 1)
    after = [""] * (n + 1)
    for i in reversed(range(1, n)):
        pair, is_required = pairs[i]
        with_comma = seq(COMMA, pair)
        body = seq(with_comma if is_required else f"( {with_comma} )?", after[i + 1])
        # referenced twice (by after[i - 1] and a head) up to the first required property
        after[i] = v.rules.add(f"{hint}-after", body) if i <= last_head + 1 else body
    first = ""
    for i in reversed(range(last_head + 1)):
        pair, is_required = pairs[i]
        option = seq(pair, after[i + 1])
        if is_required:
            first = option
        elif not first:
            first = f"( {option} )?"
        else:
            first = v.rules.add(f"{hint}-first", f"{option} | {first}")
    return first


def _free_object(
    v: Visitor,
    schema: dict[str, Any],
    extra: Any,
    counts: tuple[int, int | None],
    path: Path,
    depth: int,
    hint: str,
) -> str | None:
    """A dict-like object: free keys (or propertyNames) with additionalProperties values."""
    low, high = counts
    low = _lower(v, low, "minProperties", path)
    high = _upper(v, high, "maxProperties", path)
    value = None if extra is False else v.visit(extra, (*path, "additionalProperties"), depth)
    key = _key(v, schema, path, depth)
    if value is None or key is None:
        if low > 0:
            raise SchemaError("no object satisfies minProperties here", "minProperties", path)
        return v.rules.add(f"{hint}-empty", seq('"{"', WS, '"}"'))
    if low > 1:
        v.unenforced("minProperties", path)  # the grammar cannot keep keys distinct
    pair = _named(v, seq(key, '":"', WS, value), f"{hint}-pair")
    pairs = _elements([], pair, low, high)
    return v.rules.add(hint, seq('"{"', WS, pairs or "", WS, '"}"'))


def _key(v: Visitor, schema: dict[str, Any], path: Path, depth: int) -> str | None:
    names = schema.get("propertyNames")
    if names is None or names is True:
        return v.free_string()
    if isinstance(names, dict):
        kind = names.get("type", "string")
        if kind != "string":
            raise SchemaError("propertyNames must describe strings", "propertyNames", path)
        if "enum" not in names and "const" not in names:
            names = {**names, "type": "string"}
    return v.visit(names, (*path, "propertyNames"), depth)
