"""Strings, integers and numbers of a schema as grammar expressions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from gateway.jsonschema.errors import SchemaError
from gateway.jsonschema.gbnf import Rules
from gateway.jsonschema.keywords import Path, bounds_pair, number
from gateway.jsonschema.limits import Limits
from gateway.jsonschema.numbers import Bound, decimal_range, integer_range
from gateway.jsonschema.regex import PatternError, pattern_to_gbnf
from gateway.jsonschema.strings import CHAR, FORMATS, length_body

QUOTE = '"\\""'


class Context(Protocol):
    """What the type builders need from the builder."""

    limits: Limits
    rules: Rules

    def unenforced(self, keyword: str, path: Path) -> None: ...


def string(ctx: Context, schema: dict[str, Any], path: Path, hint: str) -> str:
    """A JSON string with the schema's length, format or pattern."""
    limits = ctx.limits
    low, high = bounds_pair(schema, "minLength", "maxLength", path)
    if low > limits.max_repeat:
        raise SchemaError(
            f"minLength above {limits.max_repeat} is beyond this server's grammar limit",
            "minLength",
            path,
        )
    if "format" in schema:
        body = _format(ctx, schema, path, low, high)
    elif "pattern" in schema:
        body = _pattern(ctx, schema, path)
        for keyword in ("minLength", "maxLength"):
            if keyword in schema:
                ctx.unenforced(keyword, path)
    else:
        if high is not None and high > limits.max_repeat:
            if limits.max_string is None:
                ctx.unenforced("maxLength", path)
            high = None
        if high is None and limits.max_string is not None:
            high = max(low, limits.max_string)
        body = length_body(low, high)
    return ctx.rules.add(hint, f"{QUOTE} {body} {QUOTE}".replace("  ", " "))


def _format(ctx: Context, schema: dict[str, Any], path: Path, low: int, high: int | None) -> str:
    name = schema["format"]
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        supported = ", ".join(sorted(FORMATS))
        raise SchemaError(
            f"format {str(name)[:50]!r} is not supported (supported: {supported})", "format", path
        )
    if low > fmt.max_length or (high is not None and high < fmt.min_length):
        raise SchemaError(
            f"format {name!r} strings have {fmt.min_length} to {fmt.max_length} characters, "
            "which minLength/maxLength exclude",
            "maxLength" if high is not None and high < fmt.min_length else "minLength",
            path,
        )
    if low > fmt.min_length:
        ctx.unenforced("minLength", path)
    if high is not None and high < fmt.max_length:
        ctx.unenforced("maxLength", path)
    if "pattern" in schema:
        ctx.unenforced("pattern", path)
    return fmt.body


def _pattern(ctx: Context, schema: dict[str, Any], path: Path) -> str:
    pattern = schema["pattern"]
    if not isinstance(pattern, str):
        raise SchemaError("pattern must be a string", "pattern", path)
    limits = ctx.limits
    try:
        return pattern_to_gbnf(pattern, CHAR, limits.max_repeat, limits.max_string)
    except PatternError as e:
        raise SchemaError(str(e), "pattern", path) from e


def _bounds(schema: dict[str, Any], path: Path) -> tuple[Bound | None, Bound | None]:
    """The tightest lower and upper bounds of minimum/maximum/exclusive*."""
    low = high = None
    for keyword, is_low, is_exclusive in (
        ("minimum", True, False),
        ("exclusiveMinimum", True, True),
        ("maximum", False, False),
        ("exclusiveMaximum", False, True),
    ):
        value = number(schema, keyword, path)
        if value is None:
            continue
        bound = Bound(value, is_exclusive)
        if is_low:
            if low is None or (value, is_exclusive) > (low.value, low.is_exclusive):
                low = bound
        elif high is None or (value, not is_exclusive) < (high.value, not high.is_exclusive):
            high = bound
    return low, high


def _check_digits(ctx: Context, bound: Bound | None, keyword: str, path: Path) -> None:
    if bound is not None and abs(bound.value) >= Decimal(10) ** ctx.limits.max_digits:
        raise SchemaError(
            f"{keyword} has more than {ctx.limits.max_digits} integer digits", keyword, path
        )


def numeric(ctx: Context, schema: dict[str, Any], path: Path, kind: str, hint: str) -> str:
    """An integer or number within the schema's bounds."""
    low, high = _bounds(schema, path)
    multiple = number(schema, "multipleOf", path)
    if multiple is not None:
        if multiple <= 0:
            raise SchemaError("multipleOf must be greater than 0", "multipleOf", path)
        if multiple == 1:
            kind = "integer"
        else:
            ctx.unenforced("multipleOf", path)
    if low is None and high is None:
        return kind
    _check_digits(ctx, low, "minimum", path)
    _check_digits(ctx, high, "maximum", path)
    limits = ctx.limits
    if kind == "integer":
        expr = integer_range(low, high, limits.max_digits)
    else:
        expr = decimal_range(low, high, limits.max_digits, limits.max_fraction_digits)
    if expr is None:
        raise SchemaError(f"no {kind} lies within minimum/maximum", "maximum", path)
    return ctx.rules.add(hint, expr)
