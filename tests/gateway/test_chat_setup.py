"""Chat parameters we cannot honour are 400s that name them, as OpenAI's are."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.chat_setup import refuse_unsupported
from gateway.errors import APIError
from gateway.protocol import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "x"}]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


def test_harmless_parameters_are_accepted() -> None:
    refuse_unsupported(
        request(
            user="u", metadata={"k": "v"}, store=False, modalities=["text"], service_tier="auto",
            prompt_cache_key="p", safety_identifier="s", logprobs=True, top_logprobs=20,
        )
    )  # fmt: skip


def test_the_fields_vllm_router_adds_to_every_body_are_accepted_at_their_defaults() -> None:
    # what vllm-router 0.1.17 forwarded for a plain chat request, captured on loopback
    refuse_unsupported(
        request(
            stream=False, logprobs=False, no_stop_trim=False, ignore_eos=False,
            continue_final_message=False, skip_special_tokens=True, separate_reasoning=True,
            stream_reasoning=True, return_hidden_states=False, include_reasoning=True,
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param", "code", "says"),
    [
        ({"max_token": 5}, "max_token", None, "Unrecognized request argument supplied: max_token"),
        ({"no_stop_trim": True}, "no_stop_trim", None, "not supported"),
        ({"skip_special_tokens": False}, "skip_special_tokens", None, "not supported"),
        ({"audio": {"voice": "x"}}, "audio", None, "not supported"),
        ({"modalities": ["text", "audio"]}, "modalities", None, "not supported"),
        ({"store": True}, "store", None, "nothing is stored"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value", "20"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "integer_below_min_value", "20"),
        ({"top_logprobs": 2}, "top_logprobs", None, "logprobs set to true"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(
    fields: dict[str, Any], param: str, code: str | None, says: str
) -> None:
    with pytest.raises(APIError) as err:
        refuse_unsupported(request(**fields))
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)
    assert says in err.value.message
