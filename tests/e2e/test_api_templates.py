"""A GGUF's own chat template, and --chat-template overriding it, on the real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import pytest
from openai import OpenAI

from batching.demo_model import write_demo_model
from batching.vocab import add_vocab, build_vocab
from gateway.settings import Settings
from gateway.templates import JinjaTemplate, Turn, render_vicuna
from tests.e2e.conftest import running_gateway

pytestmark = pytest.mark.model
# Llama-2 style; "[INST]" is plain text in the demo vocabulary, <s> and </s> are control tokens.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
    " [/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
NO_EOS = {"ignore_eos": True}
TURNS = [Turn("user", "Hi there"), Turn("assistant", "Hello"), Turn("user", "Bye")]


@pytest.fixture(scope="module")
def templated_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with TEMPLATE as its tokenizer.chat_template."""
    folder = tmp_path_factory.mktemp("templated")
    vocab_file = folder / "vocab.gguf"
    writer = gguf.GGUFWriter(vocab_file, "llama")
    add_vocab(writer, replace(build_vocab(), chat_template=TEMPLATE))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return write_demo_model(folder / "templated.gguf", "tiny", vocab_from=vocab_file)


@pytest.fixture(scope="module")
def client(templated_model: Path) -> Iterator[OpenAI]:
    settings = Settings(model=templated_model, slots=2, served_model_name="tiny")
    with (
        running_gateway(settings) as url,
        OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk,
    ):
        yield sdk


def assert_chat_equals_completion(client: OpenAI, rendered_prompt: str) -> None:
    """The chat of TURNS and a completion of its rendered prompt: same tokens, same text."""
    messages: Any = [{"role": t.role, "content": t.content} for t in TURNS]
    chat = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0, extra_body=NO_EOS
    )
    completion = client.completions.create(
        model="tiny", prompt=rendered_prompt, max_tokens=8, temperature=0, extra_body=NO_EOS
    )
    assert chat.usage is not None and completion.usage is not None
    assert chat.usage.prompt_tokens == completion.usage.prompt_tokens
    assert chat.choices[0].message.content == completion.choices[0].text


def test_the_ggufs_own_template_renders_the_chat(client: OpenAI) -> None:
    rendered = JinjaTemplate(TEMPLATE, "<s>", "</s>").render(TURNS).text
    assert rendered == "<s>[INST] Hi there [/INST] Hello</s>[INST] Bye [/INST]"
    # One BOS (the template's), </s> as EOS, "[INST]" as text: as the completion parses it.
    assert_chat_equals_completion(client, rendered)


def test_chat_template_flag_overrides_the_ggufs(templated_model: Path) -> None:
    settings = Settings(
        model=templated_model, slots=2, served_model_name="tiny", chat_template="vicuna"
    )
    with (
        running_gateway(settings) as url,
        OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk,
    ):
        assert_chat_equals_completion(sdk, render_vicuna(TURNS).text)
