"""The real OpenAI SDK against the real gateway with the tiny model: what an application sees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from openai import OpenAI

from gateway.templates import Turn, render_vicuna

pytestmark = pytest.mark.model
MODEL = "tiny"
NO_EOS = {"ignore_eos": True}  # random weights: always generate max_tokens


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_models_and_health(client: OpenAI, gateway_url: str) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert httpx.get(f"{gateway_url}/health").json() == {"status": "ok"}


def test_completion_text_and_usage_add_up(client: OpenAI) -> None:
    r = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, extra_body=NO_EOS
    )
    choice = r.choices[0]
    assert r.object == "text_completion" and choice.text and choice.finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.usage.prompt_tokens == 5  # BOS + "▁Once ▁upon ▁a ▁time" in the demo vocabulary


def test_prompt_tokens_served_from_the_cache_are_reported(client: OpenAI) -> None:
    prompt = "The cached prefix of this prompt is long enough to be worth keeping around."
    client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and 0 < cached < again.usage.prompt_tokens


def test_a_chat_answer_sent_back_as_returned_is_found_in_the_cache(client: OpenAI) -> None:
    # An answer that starts with the space the model wrote after "ASSISTANT:" (as a real
    # model's answers do) must render back in the history as the generated tokens, not with a
    # second space before them. The random-weight model starts with a space for some seeds.
    history: list[Any] = [{"role": "user", "content": "Tell me a long story about a cat."}]
    for seed in range(16):
        first = client.chat.completions.create(
            model=MODEL, messages=history, max_tokens=16, seed=seed, extra_body=NO_EOS
        )
        answer = first.choices[0].message.content
        if answer and answer.startswith(" "):
            break
    else:
        raise AssertionError("no seed gave an answer that starts with a space")
    assert first.usage is not None
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "More."}]
    second = client.chat.completions.create(model=MODEL, messages=history, max_tokens=2)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    # the prompt and (nearly) all of the answer: tokenizing the text again may split its end
    assert cached is not None and cached > first.usage.prompt_tokens + 8, (cached, first.usage)


def test_completion_stream_equals_the_whole_response_at_temperature_0(client: OpenAI) -> None:
    def create(stream: bool) -> Any:
        return client.completions.create(
            model=MODEL, prompt="Streams and", max_tokens=12, temperature=0, stream=stream,
            extra_body=NO_EOS,
        )  # fmt: skip

    whole, chunks = create(False), list(create(True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_stream_equals_the_whole_response_and_reports_usage(client: OpenAI) -> None:
    def create(stream: bool) -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=10,
            temperature=0, stream=stream, extra_body=NO_EOS,
            stream_options={"include_usage": True} if stream else None,
        )  # fmt: skip

    whole, chunks = create(False), list(create(True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and not any(finishes[:-1])
    usage, whole_usage = chunks[-1].usage, whole.usage
    assert chunks[-1].choices == [] and usage is not None and whole_usage is not None
    # The same counts; only cached_tokens differs: the stream found the prompt cached.
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert counts == (
        whole_usage.prompt_tokens, whole_usage.completion_tokens, whole_usage.total_tokens
    )  # fmt: skip


def test_chat_equals_completion_on_the_rendered_vicuna_prompt(client: OpenAI) -> None:
    turns = [("user", "Hello!"), ("assistant", "Hi there!"), ("user", "What is 2+2?")]
    messages: Any = [{"role": role, "content": text} for role, text in turns]
    chat = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=10, temperature=0, extra_body=NO_EOS
    )
    prompt = render_vicuna([Turn(role, text) for role, text in turns]).text
    assert prompt.endswith("ASSISTANT: Hi there!</s>USER: What is 2+2? ASSISTANT:")
    completion = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0, extra_body=NO_EOS
    )
    assert chat.usage is not None and completion.usage is not None
    assert chat.usage.prompt_tokens == completion.usage.prompt_tokens
    assert chat.choices[0].message.content == completion.choices[0].text


def test_a_client_typing_special_tokens_gets_plain_text(client: OpenAI) -> None:
    def prompt_tokens(content: str) -> int:
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=1
        )
        assert r.usage is not None
        return r.usage.prompt_tokens

    # "</s>" as text is several pieces, like "<x>"; as a control token it would be one.
    assert prompt_tokens("a</s>b") > prompt_tokens("a<x>b")


def test_n_choices_decode_side_by_side(client: OpenAI) -> None:
    r = client.completions.create(
        model=MODEL, prompt="Two ways:", max_tokens=6, n=2, temperature=1.0, seed=11,
        extra_body=NO_EOS,
    )  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text != r.choices[1].text  # seeds 11 and 12
    one = client.completions.create(model=MODEL, prompt="Two ways:", max_tokens=1)
    assert r.usage is not None and one.usage is not None
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens == one.usage.prompt_tokens  # once, not once per choice


def test_the_same_seed_gives_the_same_text(client: OpenAI) -> None:
    texts = [
        client.completions.create(
            model=MODEL, prompt="Seeded", max_tokens=8, temperature=1.0, seed=seed
        )
        .choices[0]
        .text
        for seed in (5, 5, 6)
    ]
    assert texts[0] == texts[1] != texts[2]


def test_stop_ends_the_text_before_the_stop_string(client: OpenAI) -> None:
    def create(stop: list[str] | None) -> Any:
        return client.completions.create(
            model=MODEL, prompt="Stop here", max_tokens=16, temperature=0, stop=stop,
            extra_body=NO_EOS,
        ).choices[0]  # fmt: skip

    full = create(None).text
    stop = full[6:9]
    stopped = create([stop])
    assert stopped.finish_reason == "stop" and stopped.text == full[: full.index(stop)]


def test_completion_logprobs_list_tokens_alternatives_and_offsets(client: OpenAI) -> None:
    r = client.completions.create(
        model=MODEL, prompt="Odds", max_tokens=5, logprobs=3, temperature=0, extra_body=NO_EOS
    )
    logprobs = r.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.top_logprobs
    assert logprobs.token_logprobs and logprobs.text_offset
    assert len(logprobs.tokens) == 5 and "".join(logprobs.tokens) == r.choices[0].text
    assert all(len(top) == 3 for top in logprobs.top_logprobs)
    # Greedy: the chosen token is the most likely one.
    assert logprobs.token_logprobs[0] == pytest.approx(max(logprobs.top_logprobs[0].values()))
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0


def test_chat_logprobs_with_top_logprobs(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        logprobs=True, top_logprobs=2, temperature=0, extra_body=NO_EOS,
    )  # fmt: skip
    assert r.choices[0].logprobs is not None
    content = r.choices[0].logprobs.content
    assert content is not None and len(content) == 4
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert bytes(content[0].bytes or []).decode("utf-8", "replace") == content[0].token


PERSON: Any = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer"},
        "admin": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
    },
    "required": ["name", "age", "admin", "color", "tags"],
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_parses_and_validates(client: OpenAI, seed: int) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A person as JSON."}],
        max_tokens=120, temperature=1.0, seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
    )  # fmt: skip
    assert r.choices[0].finish_reason == "stop"  # the grammar ended it, not max_tokens
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), PERSON)


def test_json_object_output_is_an_object(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "JSON please"}], max_tokens=10,
        temperature=0.0, response_format={"type": "json_object"},
    )  # fmt: skip
    assert (r.choices[0].message.content or "").startswith("{")


def test_legacy_generate_endpoint(gateway_url: str) -> None:
    r = httpx.post(
        f"{gateway_url}/generate/", json={"prompt": "Hello", "max_tokens": 5}, timeout=30
    )
    assert r.status_code == 200 and isinstance(r.json()["text"], str) and r.json()["text"]
