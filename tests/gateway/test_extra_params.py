"""Undeclared request fields: a 400 naming each, except what routers and SDKs send harmlessly."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import APIError
from gateway.extra_params import refuse_unknown


def test_nothing_extra_and_the_harmless_extras_pass() -> None:
    refuse_unknown(None)
    refuse_unknown({})
    refuse_unknown({"prompt_cache_key": "p", "service_tier": "auto", "modalities": ["text"]})
    refuse_unknown({"skip_special_tokens": True, "no_stop_trim": False, "include_reasoning": False})


@pytest.mark.parametrize(
    ("extra", "param", "says"),
    [
        ({"max_token": 5}, "max_token", "Unrecognized request argument supplied: max_token"),
        ({"x" * 300: 1}, "x" * 100, "Unrecognized request argument supplied: " + "x" * 100),
        ({"skip_special_tokens": False}, "skip_special_tokens", "not supported"),
        ({"service_tier": "flex"}, "service_tier", "not supported"),
        ({"reasoning_effort": "low"}, "reasoning_effort", "not supported"),
    ],
)
def test_the_first_unknown_field_is_a_400_naming_it(
    extra: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(APIError) as err:
        refuse_unknown(extra)
    assert (err.value.status, err.value.param) == (400, param)
    assert err.value.message == says or says in err.value.message
