"""Integers and decimals between bounds, as grammars over their digits.

A range is split at zero (a negative value is "-" and a magnitude), then by the number of
digits, then digit by digit (`[3-9] | "1" [0-2]`-style alternatives), so the grammar is
linear in the number of digits. Bounded numbers never use an exponent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from gateway.jsonschema.gbnf import alternatives, group, literal, repeat, seq

ANY_DIGIT = "[0-9]"


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of a range: its value and whether the value itself is excluded."""

    value: Decimal
    is_exclusive: bool = False


def _digits(low: int, high: int) -> str:
    return f"[{low}]" if low == high else f"[{low}-{high}]"


def _any(count: int) -> str:
    return repeat(ANY_DIGIT, count, count)


def _at_least(s: str) -> str:
    """Digit strings of len(s) that are >= s."""
    if s.strip("0") == "":
        return _any(len(s))
    d, rest = int(s[0]), s[1:]
    options = [seq(literal(s[0]), _at_least(rest))] if rest else [literal(s[0])]
    if d < 9:
        options.append(seq(_digits(d + 1, 9), _any(len(rest))))
    return alternatives(options)


def _at_most(s: str) -> str:
    """Digit strings of len(s) that are <= s."""
    if s.strip("9") == "":
        return _any(len(s))
    d, rest = int(s[0]), s[1:]
    options = [seq(literal(s[0]), _at_most(rest))] if rest else [literal(s[0])]
    if d > 0:
        options.append(seq(_digits(0, d - 1), _any(len(rest))))
    return alternatives(options)


def _same_length(low: str, high: str) -> str:
    """Digit strings of one length between low and high (inclusive)."""
    k = 0
    while k < len(low) and low[k] == high[k]:
        k += 1
    if k == len(low):
        return literal(low)
    prefix = literal(low[:k]) if k else ""
    d1, d2, rest = int(low[k]), int(high[k]), len(low) - k - 1
    if rest == 0 or (low[k + 1 :].strip("0") == "" and high[k + 1 :].strip("9") == ""):
        return seq(prefix, _digits(d1, d2), _any(rest))
    options = [seq(literal(str(d1)), _at_least(low[k + 1 :]))]
    if d2 - d1 >= 2:
        options.append(seq(_digits(d1 + 1, d2 - 1), _any(rest)))
    options.append(seq(literal(str(d2)), _at_most(high[k + 1 :])))
    return seq(prefix, alternatives(options))


def natural_range(low: int, high: int | None, max_digits: int) -> str | None:
    """Non-negative integers in [low, high] (high None: up to max_digits digits), no leading 0s."""
    if high is not None and high < low:
        return None
    options = []
    last = len(str(high)) if high is not None else max_digits
    for length in range(len(str(low)), last + 1):
        first = max(low, 10 ** (length - 1) if length > 1 else 0)
        final = 10**length - 1 if high is None else min(high, 10**length - 1)
        if high is None and first == 10 ** (length - 1) and length > 1:
            # every longer length is free: one repetition covers them all
            options.append(seq("[1-9]", repeat(ANY_DIGIT, length - 1, max_digits - 1)))
            break
        options.append(_same_length(str(first), str(final)))
    return alternatives(options) if options else None


def integer_range(low: Bound | None, high: Bound | None, max_digits: int) -> str | None:
    """Integers within the bounds; None if there is none."""
    lo = None if low is None else _int_above(low)
    hi = None if high is None else _int_below(high)
    if lo is not None and hi is not None and lo > hi:
        return None
    options = []
    if hi is None or hi >= 0:
        natural = natural_range(max(lo or 0, 0), hi, max_digits)
        if natural is not None:
            options.append(natural)
    if lo is None or lo < 0:
        smallest = 1 if hi is None or hi >= 0 else -hi  # magnitudes of the negative values
        magnitude = natural_range(smallest, None if lo is None else -lo, max_digits)
        if magnitude is not None:
            options.append(seq('"-"', group(magnitude)))
    return alternatives(options) if options else None


def _int_above(bound: Bound) -> int:
    n = math.ceil(bound.value)
    return n + 1 if bound.is_exclusive and n == bound.value else n


def _int_below(bound: Bound) -> int:
    n = math.floor(bound.value)
    return n - 1 if bound.is_exclusive and n == bound.value else n


# -- decimals -------------------------------------------------------------------------------
# A fraction is the digit string F after the point (value 0.F); "" means no fraction part.
# Each helper returns (may F be "", grammar of the non-empty F or None).
Fraction = tuple[bool, str | None]


def _fraction_digits(value: Decimal) -> str:
    """The digits after the point of a non-negative decimal, trailing zeros dropped."""
    text = format(value - int(value), "f")
    return text.partition(".")[2].rstrip("0")


def _tail(k: int) -> str:
    return repeat(ANY_DIGIT, 0, k)


def _then(digit: str, rest: Fraction) -> str | None:
    """`digit` followed by a fraction of `rest`."""
    may_end, more = rest
    if more is None:
        return literal(digit) if may_end else None
    return seq(literal(digit), f"{group(more)}?" if may_end else group(more))


def _fraction_at_most(f: str, strict: bool, k: int) -> Fraction:
    """0.F <= 0.f (< if strict)."""
    if not f:
        return (False, None) if strict else (True, repeat('"0"', 1, k))
    d = int(f[0])
    options = [o for o in [_then(f[0], _fraction_at_most(f[1:], strict, k))] if o]
    if d > 0:
        options.append(seq(_digits(0, d - 1), _tail(k)))
    return True, alternatives(options) if options else None


def _fraction_at_least(f: str, strict: bool, k: int) -> Fraction:
    """0.F >= 0.f (> if strict)."""
    if not f:
        if not strict:
            return True, repeat(ANY_DIGIT, 1, k)
        return False, seq(repeat('"0"', 0, k), "[1-9]", _tail(k))
    d = int(f[0])
    options = [o for o in [_then(f[0], _fraction_at_least(f[1:], strict, k))] if o]
    if d < 9:
        options.append(seq(_digits(d + 1, 9), _tail(k)))
    return False, alternatives(options) if options else None


def _fraction_between(low: Bound, high: Bound, f1: str, f2: str, k: int) -> Fraction:
    """0.f1 <= 0.F <= 0.f2 (each end exclusive as its bound says), with 0.f1 < 0.f2."""
    d1, d2 = int((f1 or "0")[0]), int(f2[0])
    if d1 == d2:
        may_end, more = _fraction_between(low, high, f1[1:], f2[1:], k)
        return (not f1 and not low.is_exclusive), _then(str(d1), (may_end, more))
    options = [
        _then(str(d1), _fraction_at_least(f1[1:], low.is_exclusive, k)),
        seq(_digits(d1 + 1, d2 - 1), _tail(k)) if d2 - d1 >= 2 else None,
        _then(str(d2), _fraction_at_most(f2[1:], high.is_exclusive, k)),
    ]
    present = [o for o in options if o]
    return (not f1 and not low.is_exclusive), alternatives(present) if present else None


def _with_fraction(integer: str | None, fraction: Fraction) -> str | None:
    if integer is None:
        return None
    may_end, more = fraction
    if more is None:
        return integer if may_end else None
    tail = seq('"."', group(more))
    return seq(group(integer), f"( {tail} )?" if may_end else tail)


def _magnitudes(low: Bound, high: Bound | None, max_digits: int, k: int) -> str | None:
    """Non-negative decimals m with low <= m <= high (ends exclusive as the bounds say)."""
    a, f1 = int(low.value), _fraction_digits(low.value)
    free: Fraction = (True, repeat(ANY_DIGIT, 1, k))
    if high is None:
        parts = [
            _with_fraction(natural_range(a + 1, None, max_digits), free),
            _with_fraction(literal(str(a)), _fraction_at_least(f1, low.is_exclusive, k)),
        ]
    else:
        b, f2 = int(high.value), _fraction_digits(high.value)
        if (a, f1) == (b, f2):
            return literal(str(a)) if not (low.is_exclusive or high.is_exclusive) else None
        if a == b:
            parts = [_with_fraction(literal(str(a)), _fraction_between(low, high, f1, f2, k))]
        else:
            parts = [
                _with_fraction(literal(str(a)), _fraction_at_least(f1, low.is_exclusive, k)),
                _with_fraction(natural_range(a + 1, b - 1, max_digits), free),
                _with_fraction(literal(str(b)), _fraction_at_most(f2, high.is_exclusive, k)),
            ]
    present = [p for p in parts if p]
    return alternatives(present) if present else None


def decimal_range(
    low: Bound | None, high: Bound | None, max_digits: int, max_fraction: int
) -> str | None:
    """Numbers (an optional fraction, no exponent) within the bounds; None if none fits."""
    zero = Bound(Decimal(0))
    options = []
    if high is None or high.value > 0 or (high.value == 0 and not high.is_exclusive):
        nonneg_low = low if low is not None and low.value >= 0 else zero
        options.append(_magnitudes(nonneg_low, high, max_digits, max_fraction))
    if low is None or low.value < 0:
        # negative values: "-" and a magnitude in (max(-high, 0), -low]
        if high is not None and high.value < 0:
            smallest = Bound(-high.value, high.is_exclusive)
        else:
            smallest = Bound(Decimal(0), True)
        largest = None if low is None else Bound(-low.value, low.is_exclusive)
        magnitude = _magnitudes(smallest, largest, max_digits, max_fraction)
        options.append(seq('"-"', group(magnitude)) if magnitude else None)
    present = [o for o in options if o]
    return alternatives(present) if present else None
