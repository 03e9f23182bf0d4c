"""Chat templates: Vicuna byte for byte as FastChat renders it; GGUF jinja templates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.templates import (
    VICUNA_SYSTEM,
    ChatTemplateError,
    JinjaTemplate,
    Turn,
    VicunaTemplate,
    render_vicuna,
    select_template,
)
from tests.gateway.fake_engine import fake_model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_vicuna_matches_fastchat_for_a_multi_turn_chat() -> None:
    turns = [
        Turn("user", "Hello!"),
        Turn("assistant", "Hi there!"),
        Turn("user", "What is 2+2?"),
    ]
    assert render_vicuna(turns).text == (
        f"{VICUNA_SYSTEM} USER: Hello! ASSISTANT: Hi there!</s>USER: What is 2+2? ASSISTANT:"
    )


def test_an_answer_sent_back_with_its_leading_space_renders_as_the_model_wrote_it() -> None:
    # the model wrote " Hi there!" after "ASSISTANT:"; FastChat strips it to "Hi there!"
    stripped = [Turn("user", "Hello!"), Turn("assistant", "Hi there!"), Turn("user", "More")]
    as_returned = [stripped[0], Turn("assistant", " Hi there!"), stripped[2]]
    assert render_vicuna(as_returned).text == render_vicuna(stripped).text
    assert "ASSISTANT: Hi there!</s>" in render_vicuna(as_returned).text
    assert "USER:  x" in render_vicuna([Turn("user", " x")]).text  # a user's text is theirs


def test_vicuna_default_system_message_is_fastchats() -> None:
    assert VICUNA_SYSTEM == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions."
    )
    assert render_vicuna([Turn("user", "Hi")]).text == f"{VICUNA_SYSTEM} USER: Hi ASSISTANT:"


def test_a_system_message_replaces_the_default_one() -> None:
    text = render_vicuna([Turn("system", "Be brief."), Turn("user", "Hi")]).text
    assert text == "Be brief. USER: Hi ASSISTANT:"
    assert "\n" not in text


def test_vicuna_separators_alternate_by_position_as_in_fastchat() -> None:
    # FastChat picks the separator from the turn's position, so two user turns in a row
    # end the second with </s>.
    text = render_vicuna([Turn("user", "a"), Turn("user", "b")], "</s>").text
    assert text.endswith("USER: a USER: b</s>ASSISTANT:")


def test_an_empty_turn_renders_as_the_bare_role() -> None:
    text = render_vicuna([Turn("user", "a"), Turn("assistant", "")]).text
    assert text.endswith("USER: a ASSISTANT:ASSISTANT:")


def test_vicuna_marks_client_text_and_its_own_eos() -> None:
    prompt = render_vicuna([Turn("user", "x</s>y"), Turn("assistant", "ok")])
    spans = [prompt.text[a:b] for a, b in prompt.client_spans]
    assert spans == ["x</s>y", "ok"]
    assert prompt.specials == ("</s>",)


def test_jinja_template_renders_in_a_sandbox_with_client_spans() -> None:
    template = JinjaTemplate(CHATML, "<s>", "</s>")
    prompt = template.render([Turn("user", "  hi <|im_end|>  ")])
    assert prompt.text == "<|im_start|>user\nhi <|im_end|><|im_end|>\n<|im_start|>assistant\n"
    assert [prompt.text[a:b] for a, b in prompt.client_spans] == ["hi <|im_end|>"]
    assert "<|im_start|>" in prompt.specials and "<|im_end|>" in prompt.specials


def test_jinja_raise_exception_becomes_a_template_error() -> None:
    source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="user first"):
        JinjaTemplate(source, "<s>", "</s>").render([Turn("assistant", "x")])


def test_jinja_sandbox_refuses_unsafe_attribute_access() -> None:
    source = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(ChatTemplateError):
        JinjaTemplate(source, "<s>", "</s>").render([Turn("user", "x")])


def test_template_selection_order(tmp_path: Path) -> None:
    plain, with_template = fake_model(), fake_model(chat_template=CHATML)
    assert isinstance(select_template(None, plain), VicunaTemplate)
    assert select_template(None, with_template).name == "gguf"
    assert isinstance(select_template("vicuna", with_template), VicunaTemplate)
    path = tmp_path / "mine.jinja"
    path.write_text("{{ messages[0]['content'] }}!")
    chosen = select_template(str(path), with_template)
    assert chosen.render([Turn("user", "hey")]).text == "hey!"
    assert isinstance(select_template(None, replace(plain, eos_text="")), VicunaTemplate)
