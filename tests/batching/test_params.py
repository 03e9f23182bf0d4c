"""SamplingParams: every out-of-range value is refused, naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest

from batching.params import ParamError, SamplingParams

BAD: list[tuple[str, Any]] = [
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", float("nan")),
    ("top_p", 0.0),
    ("top_p", 1.01),
    ("top_k", -1),
    ("min_p", -0.01),
    ("min_p", 1.01),
    ("presence_penalty", -2.01),
    ("presence_penalty", 2.01),
    ("frequency_penalty", -2.01),
    ("frequency_penalty", 2.01),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", 2.01),
    ("logit_bias", {5: 100.5}),
    ("logit_bias", {5: -101.0}),
    ("logit_bias", {5: float("nan")}),
    ("stop", ("",)),
    ("stop", tuple(f"s{i}" for i in range(17))),
    ("logprobs", -1),
    ("logprobs", 21),
]

GOOD: list[tuple[str, Any]] = [
    ("max_tokens", 1),
    ("temperature", 0.0),
    ("temperature", 2.0),
    ("top_p", 1e-6),
    ("top_p", 1.0),
    ("top_k", 0),
    ("top_k", 1),
    ("min_p", 0.0),
    ("min_p", 1.0),
    ("presence_penalty", -2.0),
    ("presence_penalty", 2.0),
    ("frequency_penalty", -2.0),
    ("frequency_penalty", 2.0),
    ("repetition_penalty", 2.0),
    ("logit_bias", {5: 100.0, 6: -100.0}),
    ("stop", tuple(f"s{i}" for i in range(16))),
    ("logprobs", 0),
    ("logprobs", 20),
]


@pytest.mark.parametrize(("param", "value"), BAD, ids=[f"{p}={v!r}"[:40] for p, v in BAD])
def test_out_of_range_raises_param_error_naming_the_param(param: str, value: Any) -> None:
    with pytest.raises(ParamError) as err:
        SamplingParams(**{param: value})
    assert err.value.param == param
    assert param in str(err.value)


@pytest.mark.parametrize(("param", "value"), GOOD, ids=[f"{p}={v!r}"[:40] for p, v in GOOD])
def test_boundary_values_are_accepted(param: str, value: Any) -> None:
    assert getattr(SamplingParams(**{param: value}), param) == value


def test_param_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=-3)


def test_defaults_and_derived_flags() -> None:
    params = SamplingParams()
    assert not params.is_greedy
    assert not params.has_penalties
    assert SamplingParams(temperature=0.0).is_greedy
    assert SamplingParams(presence_penalty=0.5).has_penalties
    assert SamplingParams(frequency_penalty=-0.5).has_penalties
    assert SamplingParams(repetition_penalty=1.1).has_penalties


def test_params_are_frozen() -> None:
    params = SamplingParams()
    with pytest.raises(AttributeError):
        params.max_tokens = 5  # type: ignore[misc]
