"""JSON Schema -> GBNF grammar (llama.cpp's format), so that the output parses and validates.

Supported: type (one or a list), object with properties/required/additionalProperties, array
with items/minItems/maxItems, string with minLength/maxLength, number, integer, boolean, null,
enum, const, anyOf/oneOf, nested objects. Keywords that would need more (pattern, numeric
bounds, $ref, ...) are refused, rather than giving output that does not validate.

Properties come in schema order, required ones first. Whitespace is at most one space between
tokens and numbers have at most 16 digits, so a model cannot wander forever inside a value.
"""

from __future__ import annotations

import json
from typing import Any

_BASE_RULES = {
    "ws": r'" "?',
    "value": r"object | array | string | number | boolean | null",
    "object": r'"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? ws "}"',
    "array": r'"[" ws ( value ( "," ws value )* )? ws "]"',
    "string": r'"\"" char* "\""',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "integral": r'"0" | [1-9] [0-9]{0,15}',
    "integer": r'"-"? integral',
    "number": r'"-"? integral ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?',
    "boolean": r'"true" | "false"',
    "null": r'"null"',
}
_UNSUPPORTED = (
    "$ref", "allOf", "not", "if", "pattern", "patternProperties", "propertyNames",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "uniqueItems", "contains", "prefixItems", "minProperties", "maxProperties",
    "dependentRequired", "dependentSchemas",
)  # fmt: skip

JSON_OBJECT_GRAMMAR = "\n".join(
    ["root ::= object"] + [f"{name} ::= {body}" for name, body in _BASE_RULES.items()]
)


class SchemaError(ValueError):
    """The schema uses something this converter cannot enforce."""


def schema_to_gbnf(schema: dict[str, Any] | bool) -> str:
    """A GBNF grammar (root rule "root") whose every sentence validates against `schema`."""
    builder = _Builder()
    root = builder.visit(schema, "schema")
    lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in builder.rules.items()]
    return "\n".join(lines + [f"{name} ::= {body}" for name, body in _BASE_RULES.items()])


def _literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _json_literal(value: Any) -> str:
    return _literal(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _alternatives(options: list[str]) -> str:
    return "( " + " | ".join(options) + " )"


def _repeat(item: str, low: int, high: int | None) -> str:
    """`item` low..high times, comma separated, as the inside of a JSON array."""
    if high is not None and high <= 0:
        return ""
    rest = f'( "," ws {item} )'
    if high is None:
        more = f"{rest}{{{max(low - 1, 0)},}}"
    else:
        more = f"{rest}{{{max(low - 1, 0)},{high - 1}}}"
    inner = f"{item} {more}"
    return inner if low > 0 else f"( {inner} )?"


class _Builder:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        """Add a rule under a free name based on `name`; returns that name."""
        candidate, i = name, 1
        while candidate in self.rules or candidate in _BASE_RULES or candidate == "root":
            i += 1
            candidate = f"{name}-{i}"
        self.rules[candidate] = body
        return candidate

    def visit(self, schema: dict[str, Any] | bool, name: str) -> str:
        """A GBNF expression for `schema`; `name` seeds the names of the rules it adds."""
        if schema is True or schema == {}:
            return "value"
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be an object (or true)")
        for keyword in _UNSUPPORTED:
            if keyword in schema:
                raise SchemaError(f"JSON schema keyword {keyword!r} is not supported")
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            return _alternatives([_json_literal(v) for v in schema["enum"]])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                subs = [self.visit(s, f"{name}-{i}") for i, s in enumerate(schema[key])]
                return _alternatives(subs)
        kind = schema.get("type")
        if isinstance(kind, list):
            subs = [self.visit({**schema, "type": k}, f"{name}-{k}") for k in kind]
            return _alternatives(subs)
        return self._visit_type(schema, kind, name)

    def _visit_type(self, schema: dict[str, Any], kind: Any, name: str) -> str:
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, name)
        if kind == "array":
            items = self.visit(schema.get("items", True), f"{name}-item")
            low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
            inner = _repeat(items, low, None if high is None else int(high))
            return self.add(name, f'"[" ws {inner} ws "]"')
        if kind == "string":
            low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
            if high is None:
                count = "*" if low == 0 else f"{{{low},}}"
            else:
                count = f"{{{low},{int(high)}}}"
            return self.add(name, f'"\\"" char{count} "\\""')
        if kind in ("number", "integer", "boolean", "null"):
            return str(kind)
        if kind is None:
            return "value"
        raise SchemaError(f"JSON schema type {kind!r} is not supported")

    def _object(self, schema: dict[str, Any], name: str) -> str:
        props: dict[str, Any] = dict(schema.get("properties") or {})
        required = list(schema.get("required") or [])
        for key in required:
            props.setdefault(key, True)
        if not props:
            extra = schema.get("additionalProperties", True)
            if extra is False:
                return self.add(name, r'"{" ws "}"')
            value = self.visit(extra, f"{name}-value")
            pair = f'string ":" ws {value}'
            return self.add(name, f'"{{" ws ( {pair} ( "," ws {pair} )* )? ws "}}"')
        pairs = {
            key: f'{_json_literal(key)} ":" ws {self.visit(sub, f"{name}-{_slug(key)}")}'
            for key, sub in props.items()
        }
        must = [pairs[k] for k in props if k in required]
        optional = [pairs[k] for k in props if k not in required]
        if must:
            body = ' "," ws '.join(must) + "".join(f' ( "," ws {p} )?' for p in optional)
        else:
            # No required key: the first present key decides where the commas go.
            heads = [
                p + "".join(f' ( "," ws {q} )?' for q in optional[i + 1 :])
                for i, p in enumerate(optional)
            ]
            body = f"{_alternatives(heads)}?"
        return self.add(name, f'"{{" ws {body} ws "}}"')


def _slug(key: str) -> str:
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in key).strip("-")
    return slug or "key"
