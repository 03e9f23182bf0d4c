"""The visitor from one schema document to grammar expressions, and the grammar around them.

`visit` returns a GBNF expression, or None when no value can satisfy the subschema (a `false`
schema, or a recursive `$ref` cut at the depth limit): an optional property or array item
with such a schema is left out, and a required one makes its parent impossible too.
`$ref`s become rules keyed by (target, depth), so recursion unrolls to `max_ref_depth` levels
and the grammar holds no cycle. Keywords a grammar cannot fully enforce but that can be checked
after generation (uniqueItems, multipleOf, ...) are recorded in `unenforced`.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from gateway.jsonschema.containers import array, object_
from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.gbnf import (
    ESCAPE,
    RAW_CHAR,
    WS,
    Rules,
    alternatives,
    check_bounded,
    literal_trie,
    repeat,
)
from gateway.jsonschema.keywords import (
    REFUSED,
    Path,
    assertions,
    inferred_types,
    types_of,
)
from gateway.jsonschema.limits import Limits
from gateway.jsonschema.merge import merge_all
from gateway.jsonschema.refs import resolve
from gateway.jsonschema.scalars import numeric, string


def base_rules(limits: Limits) -> dict[str, str]:
    """The rules every grammar ends with: any JSON value, strings bounded by `max_string`."""
    chars = repeat("char", 0, limits.max_string)
    pair = f'string ":" {WS} value'
    return {
        WS: '" "?',
        "value": "object | array | string | number | boolean | null",
        "object": f'"{{" {WS} ( {pair} ( "," {WS} {pair} )* )? {WS} "}}"',
        "array": f'"[" {WS} ( value ( "," {WS} value )* )? {WS} "]"',
        "string": f'"\\"" {chars} "\\""',
        "char": f"{RAW_CHAR} | {ESCAPE}",
        "integral": f'"0" | [1-9] [0-9]{{0,{limits.max_digits - 1}}}',
        "integer": '"-"? integral',
        "number": f'"-"? integral ( "." [0-9]{{1,{limits.max_fraction_digits}}} )?'
        " ( [eE] [-+]? [0-9]{1,3} )?",
        "boolean": '"true" | "false"',
        "null": '"null"',
    }


def new_rules(limits: Limits) -> Rules:
    """An empty rule table that will not reuse the base rules' names."""
    return Rules(limits, reserved=base_rules(limits))


def finish(rules: Rules, root: str, limits: Limits) -> str:
    """The grammar text, checked against the limits."""
    gbnf = rules.render(root, base_rules(limits))
    try:
        check_bounded(gbnf, limits)
    except ValueError as e:
        raise SchemaError(f"the grammar is out of bounds: {e}") from e
    return gbnf


class Builder:
    """Expressions for the subschemas of one document (`root`), added to a shared rule table."""

    def __init__(self, root: Any, rules: Rules, path: Path = ()) -> None:
        self.root = root
        self.rules = rules
        self.limits = rules.limits
        self.path = path  # where `root` sits in the request, for error messages
        self.unenforced_keywords: list[str] = []
        self._nodes = 0
        self._refs: dict[tuple[Path, int], str | None] = {}

    def unenforced(self, keyword: str, path: Path) -> None:
        """Note a keyword that only the check after generation enforces."""
        self.unenforced_keywords.append(f"{keyword} at /{'/'.join(path)}")

    def free_string(self) -> str:
        """Any string, as long as `max_string` allows."""
        return "string"

    def build(self) -> str:
        """The root's expression; SchemaError if no value satisfies it."""
        try:
            expr = self.visit(self.root, (), 0)
        except RecursionError:
            raise SchemaError("the schema nests too deeply", None, self.path) from None
        except SchemaError as e:
            raise e.under(self.path) from e
        if expr is None:
            raise SchemaError(
                "no value satisfies this schema (a required `false` schema, or $ref recursion "
                f"deeper than {self.limits.max_ref_depth} levels)",
                None,
                self.path,
            )
        return expr

    def visit(self, schema: Any, path: Path, depth: int) -> str | None:
        """A grammar expression for `schema`, or None if no value satisfies it."""
        self._nodes += 1
        if self._nodes > self.limits.max_schema_nodes:
            raise SchemaError(
                f"the schema expands to more than {self.limits.max_schema_nodes} subschemas",
                None,
                path,
            )
        if schema is True or schema == {}:
            return "value"
        if schema is False:
            return None
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be a JSON object or a boolean", None, path)
        for keyword in schema:
            if keyword in REFUSED:
                raise SchemaError(
                    f"{keyword!r} ({REFUSED[keyword]}) cannot be enforced by a grammar",
                    keyword,
                    path,
                )
        if "$ref" in schema:
            return self._ref(schema, path, depth)
        if "allOf" in schema:
            members = schema["allOf"] if isinstance(schema["allOf"], list) else []
            if any(isinstance(m, dict) and "$ref" in m for m in members):
                if depth >= self.limits.max_ref_depth:
                    return None  # a $ref folded in counts as one level, as a plain one does
                depth += 1
            return self.visit(merge_all(schema, path, self._deref), path, depth)
        if schema.get("nullable") is True:
            inner = self.visit({k: v for k, v in schema.items() if k != "nullable"}, path, depth)
            return alternatives([inner, "null"]) if inner is not None else "null"
        if "const" in schema or "enum" in schema:
            return self._enum(schema, path)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self._union(schema, key, path, depth)
        return self._typed(schema, path, depth)

    def _typed(self, schema: dict[str, Any], path: Path, depth: int) -> str | None:
        kinds = types_of(schema, path) or inferred_types(schema)
        if not kinds:
            return "value"
        hint = _hint(path)
        options = []
        for kind in kinds:
            if kind in ("null", "boolean"):
                options.append(kind)
            elif kind in ("integer", "number"):
                options.append(numeric(self, schema, path, kind, hint))
            elif kind == "string":
                options.append(string(self, schema, path, hint))
            else:
                build = array if kind == "array" else object_
                expr = build(self, schema, path, depth, hint)
                if expr is not None:
                    options.append(expr)
        return alternatives(options) if options else None

    def _ref(self, schema: dict[str, Any], path: Path, depth: int) -> str | None:
        siblings = {k: v for k, v in assertions(schema).items() if k != "$ref"}
        if siblings:
            return self.visit({"allOf": [{"$ref": schema["$ref"]}, siblings]}, path, depth)
        target, target_path = resolve(self.root, schema["$ref"], path)
        if depth >= self.limits.max_ref_depth:
            return None  # recursion cut here: optional places drop it, required ones fail
        key = (target_path, depth)
        if key not in self._refs:
            expr = self.visit(target, target_path, depth + 1)
            if expr is not None and not _is_name(expr):
                expr = self.rules.add(_hint(target_path), expr)
            self._refs[key] = expr
        return self._refs[key]

    def _deref(self, schema: Any, path: Path, level: int = 0) -> tuple[dict[str, Any], Path]:
        """`schema` with a `$ref` at its top replaced by its target (siblings kept)."""
        if not isinstance(schema, dict):
            raise SchemaError("allOf members must be schemas", "allOf", path)
        if "$ref" not in schema:
            return schema, path
        if level >= self.limits.max_ref_depth:
            raise SchemaError("$ref chains inside allOf go too deep", "$ref", path)
        target, target_path = resolve(self.root, schema["$ref"], path)
        if target is True:
            target = {}
        target, target_path = self._deref(target, target_path, level + 1)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return ({"allOf": [target, siblings]} if siblings else target), target_path

    def _enum(self, schema: dict[str, Any], path: Path) -> str:
        if "const" in schema:
            values = [schema["const"]]
            if "enum" in schema and schema["const"] not in schema["enum"]:
                values = []
        else:
            values = list(schema["enum"])
        keyword = "const" if "const" in schema else "enum"
        if not values:
            raise SchemaError(f"{keyword} allows no value: nothing can satisfy it", keyword, path)
        if len(values) > self.limits.max_enum:
            raise SchemaError(f"more than {self.limits.max_enum} enum values", keyword, path)
        try:
            json.dumps(values, allow_nan=False)
        except ValueError:
            raise SchemaError(
                f"{keyword} holds NaN or Infinity, which JSON cannot", keyword, path
            ) from None
        rest = {k: v for k, v in assertions(schema).items() if k not in ("enum", "const")}
        if rest and "$ref" not in str(rest):
            validator = Draft202012Validator(rest)
            values = [v for v in values if validator.is_valid(v)]
            if not values:
                raise SchemaError(
                    f"no value of {keyword} satisfies the rest of the schema", keyword, path
                )
        return literal_trie(
            [json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values]
        )

    def _union(self, schema: dict[str, Any], key: str, path: Path, depth: int) -> str | None:
        options = schema[key]
        base = {k: v for k, v in assertions(schema).items() if k != key}
        exprs = []
        for i, sub in enumerate(options):
            if sub is False:
                continue
            target = ({"allOf": [base, sub]} if sub is not True else base) if base else sub
            expr = self.visit(target, (*path, key, str(i)), depth)
            if expr is not None:
                exprs.append(expr)
        if key == "oneOf" and len(exprs) > 1:
            self.unenforced("oneOf", path)
        return alternatives(exprs) if exprs else None


def _is_name(expr: str) -> bool:
    return all(c.isalnum() or c == "-" for c in expr)


def _hint(path: Path) -> str:
    named = [p for p in path if p not in ("properties", "items", "$defs", "definitions")]
    return named[-1] if named else "schema"
