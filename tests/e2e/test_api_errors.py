"""Errors through the real SDK: the OpenAI envelope, the right status, and the server goes on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.settings import Settings
from tests.e2e.conftest import running_gateway

pytestmark = pytest.mark.model
KEY = "test-key"


@pytest.fixture(scope="module")
def guarded_url(gateway_settings: Settings) -> Iterator[str]:
    """A second gateway: an API key, one slot, no waiting queue, a 64 KiB body limit."""
    settings = replace(
        gateway_settings, api_key=KEY, slots=1, max_queue=0, max_body_bytes=64 * 1024
    )
    with running_gateway(settings) as url:
        yield url


@pytest.fixture(scope="module")
def client(guarded_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{guarded_url}/v1", api_key=KEY, max_retries=0) as sdk:
        yield sdk


def complete(client: OpenAI, **kwargs: object) -> str:
    args: dict[str, object] = {"model": "tiny", "prompt": "Hi", "max_tokens": 2, **kwargs}
    return client.completions.create(**args).choices[0].text  # type: ignore[call-overload, no-any-return]


def test_the_api_key_is_required_but_health_stays_open(guarded_url: str) -> None:
    with OpenAI(base_url=f"{guarded_url}/v1", api_key="wrong", max_retries=0) as intruder:
        with pytest.raises(openai.AuthenticationError) as err:
            intruder.models.list()
        assert err.value.code == "invalid_api_key"
    assert httpx.get(f"{guarded_url}/v1/models").status_code == 401  # no key at all
    assert httpx.get(f"{guarded_url}/health").status_code == 200
    assert httpx.post(f"{guarded_url}/generate/", json={"prompt": "x"}).status_code == 401


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 5.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),  # more choices than this server's one slot
        ({"logprobs": 50}, "logprobs"),
        ({"extra_body": {"top_k": -1}}, "top_k"),
        ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ],
)
def test_invalid_parameters_are_400s_naming_the_param(
    client: OpenAI, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, **kwargs)
    assert err.value.param == param and err.value.type == "invalid_request_error"
    assert "Traceback" not in err.value.message


def test_prompt_plus_max_tokens_beyond_the_context_is_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, max_tokens=5000)
    assert err.value.code == "context_length_exceeded"
    assert "4096" in err.value.message


def test_unknown_model_and_route_are_404s(client: OpenAI, guarded_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        complete(client, model="gpt-4")
    assert err.value.code == "model_not_found"
    r = httpx.get(f"{guarded_url}/v2/everything", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_an_oversized_body_is_a_413(client: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        complete(client, prompt="word " * 20_000)
    assert err.value.status_code == 413 and err.value.code == "request_too_large"


def test_a_full_queue_is_a_429_with_retry_after_and_the_server_goes_on(client: OpenAI) -> None:
    stream = client.completions.create(
        model="tiny", prompt="Long", max_tokens=3000, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    with stream:
        next(iter(stream))  # the request holds the only slot now
        with pytest.raises(openai.RateLimitError) as err:
            complete(client)
        assert int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.code == "queue_full"
    # Leaving the stream aborted the long request: the slot frees within a few steps.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert complete(client)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the aborted stream never freed its slot"
            time.sleep(0.05)
