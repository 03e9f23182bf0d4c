"""Wire models: what requests accept, and the SamplingParams they turn into."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from batching.params import ParamError
from gateway.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    DeltaMessage,
)


@pytest.mark.parametrize(
    "prompt", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]], ids=["str", "strs", "ids", "idss"]
)
def test_completion_prompt_takes_every_openai_shape(prompt: object) -> None:
    assert CompletionRequest.model_validate({"prompt": prompt}).prompt == prompt


def test_unset_parameters_become_openais_defaults() -> None:
    params = CompletionRequest(prompt="x").to_sampling_params(max_tokens=16)
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (1.0, 1.0, 0, 0.0)
    assert params.stop == () and params.seed is None and params.logprobs is None


def test_stop_may_be_one_string_and_logit_bias_keys_are_token_ids() -> None:
    req = CompletionRequest.model_validate(
        {"prompt": "x", "stop": "\n", "logit_bias": {"42": -100}, "temperature": None}
    )
    params = req.to_sampling_params(max_tokens=4)
    assert params.stop == ("\n",) and params.logit_bias == {42: -100.0}
    assert params.temperature == 1.0  # an explicit null is the default


def test_out_of_range_values_name_their_parameter() -> None:
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}
    )
    with pytest.raises(ParamError) as err:
        req.to_sampling_params(max_tokens=4)
    assert err.value.param == "presence_penalty"


def test_chat_keeps_unknown_fields_so_that_serving_can_name_them() -> None:
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "metadata": {"k": "v"}, "frob": 1}
    )
    assert req.metadata == {"k": "v"} and req.model_extra == {"frob": 1}
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": 5}]})


def test_chunk_deltas_leave_out_what_they_do_not_carry() -> None:
    choice = ChatChunkChoice(index=0, delta=DeltaMessage(content="hi"))
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[choice])
    dumped = chunk.model_dump()
    assert dumped["choices"][0]["delta"] == {"content": "hi"}
    assert dumped["choices"][0]["finish_reason"] is None  # present, as OpenAI sends it
