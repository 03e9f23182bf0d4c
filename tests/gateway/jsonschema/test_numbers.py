"""Integer and decimal ranges: exactly the numbers between the bounds, and nothing else."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.jsonschema.numbers import Bound, decimal_range, integer_range
from tests.gateway.jsonschema.gbnf_regex import expr_regex

INT_CASES = [
    (0, 9), (1, 10), (-37, 1234), (-5, 5), (7, 7), (-100, -12), (0, 999), (150, 150),
    (5, None), (123, None), (None, -12), (None, 45), (-3, None),
]  # fmt: skip


def _bound(value: int | str | None, exclusive: bool = False) -> Bound | None:
    return None if value is None else Bound(Decimal(value), exclusive)


@pytest.mark.parametrize(("low", "high"), INT_CASES)
def test_an_integer_range_holds_exactly_its_integers(low: int | None, high: int | None) -> None:
    expr = integer_range(_bound(low), _bound(high), max_digits=6)
    assert expr is not None
    pattern = expr_regex(expr)
    for n in [*range(-1500, 1500), 99999, -99999, 123456, 1000000]:
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(pattern.fullmatch(str(n))) == (inside and len(str(abs(n))) <= 6), n
    assert not pattern.fullmatch("007") and not pattern.fullmatch("-0")


def test_exclusive_and_fractional_integer_bounds_round_inwards() -> None:
    pattern = expr_regex(integer_range(_bound("-2.5"), _bound(3, exclusive=True), 6) or "")
    assert [n for n in range(-10, 10) if pattern.fullmatch(str(n))] == [-2, -1, 0, 1, 2]


def test_an_empty_integer_range_is_none() -> None:
    assert integer_range(_bound("0.2"), _bound("0.8"), 6) is None
    assert integer_range(_bound(3, True), _bound(4, True), 6) is None


def _decimals() -> list[str]:
    out = ["0", "1", "10", "0.5", "0.25", "0.2500", "3.75", "3.7501", "-0.5", "-2.5", "-2.51"]
    for whole in ("0", "1", "2", "3", "9", "10", "12"):
        for frac in ("", "0", "001", "1", "24", "25", "26", "5", "49", "5001", "75", "99"):
            out.append(whole + ("." + frac if frac else ""))
    return out + ["-" + d for d in out if d != "0" and not d.startswith("-")]


DECIMAL_CASES = [
    ("-2.5", False, "3.75", False),
    ("0.25", True, "0.5", True),
    ("0", False, "1", False),
    ("0", True, None, False),
    ("0.001", False, None, False),
    (None, False, "-0.5", False),
    ("10", False, "10.5", True),
    ("1.24", False, "1.26", False),
    ("-1", True, "0", True),
]


@pytest.mark.parametrize(("low", "low_ex", "high", "high_ex"), DECIMAL_CASES)
def test_a_decimal_range_holds_exactly_its_numbers(
    low: str | None, low_ex: bool, high: str | None, high_ex: bool
) -> None:
    expr = decimal_range(_bound(low, low_ex), _bound(high, high_ex), 4, 6)
    assert expr is not None
    pattern = expr_regex(expr)
    for text in _decimals():
        x = Decimal(text)
        if x == 0 and text.startswith("-"):
            assert not pattern.fullmatch(text)  # zero is written without a sign
            continue
        inside = (
            (low is None or (x > Decimal(low) if low_ex else x >= Decimal(low)))
            and (high is None or (x < Decimal(high) if high_ex else x <= Decimal(high)))
        )  # fmt: skip
        assert bool(pattern.fullmatch(text)) == inside, (text, expr)


def test_bounded_numbers_have_no_exponent() -> None:
    pattern = expr_regex(decimal_range(_bound(0), _bound(1000), 6, 6) or "")
    assert pattern.fullmatch("999.5") and not pattern.fullmatch("1e2")
