"""Prompt tokenization: a template's </s> is EOS, a client's </s> stays text."""

from __future__ import annotations

from gateway.templates import JinjaTemplate, Turn, render_vicuna
from gateway.tokens import PromptTokenizer
from tests.gateway.fake_engine import BOS, EOS, FakeEngine, fake_model

CHATML_LIKE = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"


def test_chat_tokens_equal_the_completion_tokens_of_the_rendered_prompt() -> None:
    tokenizer = PromptTokenizer(FakeEngine())
    prompt = render_vicuna([Turn("user", "Hi"), Turn("assistant", "Yo"), Turn("user", "Bye")])
    ids = tokenizer.chat(prompt)
    assert ids == tokenizer.text(prompt.text)
    assert ids[0] == BOS and ids.count(EOS) == 1  # the template's </s> after "Yo"


def test_special_strings_that_a_client_typed_stay_plain_text() -> None:
    engine = FakeEngine()
    tokenizer = PromptTokenizer(engine)
    prompt = render_vicuna([Turn("user", "<s>a</s>")])
    ids = tokenizer.chat(prompt)
    assert ids.count(EOS) == 0 and ids.count(BOS) == 1
    assert engine.detokenize(ids) == prompt.text
    # The same text sent as a completion prompt is parsed, as llama-server does.
    assert tokenizer.text(prompt.text).count(EOS) == 1


def test_a_template_that_writes_bos_gets_no_second_bos() -> None:
    tokenizer = PromptTokenizer(FakeEngine(fake_model(chat_template=CHATML_LIKE)))
    prompt = JinjaTemplate(CHATML_LIKE, "<s>", "</s>").render([Turn("user", "x</s>")])
    ids = tokenizer.chat(prompt)
    assert ids[0] == BOS and ids[1] != BOS
    assert ids.count(EOS) == 1  # only the template's own


def test_only_real_special_tokens_split_the_prompt() -> None:
    tokenizer = PromptTokenizer(FakeEngine())
    assert tokenizer.special_id("</s>") == EOS
    assert tokenizer.special_id("<|im_end|>") is None  # not in the fake vocabulary


def test_a_completion_prompt_that_starts_with_bos_keeps_one() -> None:
    tokenizer = PromptTokenizer(FakeEngine())
    assert tokenizer.text("<s>hi")[:2] == [BOS, ord("h") + 3]
    assert tokenizer.text("hi")[:2] == [BOS, ord("h") + 3]
