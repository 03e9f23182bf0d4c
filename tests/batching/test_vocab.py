"""The built-in vocabulary: layout, and how llama.cpp's SPM tokenizer treats it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import pytest

from batching.vocab import SPACE, build_vocab, read_vocab


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Iterator[llama_cpp.Llama]:
    """llama.cpp loading only the vocabulary of the tiny demo model."""
    llm = llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def _pieces(llm: llama_cpp.Llama, text: str) -> list[str]:
    ids = llm.tokenize(text.encode(), add_bos=False)
    return [llm.detokenize([i]).decode("utf-8", errors="replace") for i in ids]


def _round_trip(llm: llama_cpp.Llama, text: str) -> str:
    return llm.detokenize(llm.tokenize(text.encode(), add_bos=True)).decode()


def test_layout_is_llama_like() -> None:
    vocab = build_vocab()
    assert len(vocab.tokens) == len(vocab.scores) == len(vocab.types) == 32000
    assert vocab.tokens[:3] == ["<unk>", "<s>", "</s>"]
    unknown, control = gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL
    assert vocab.types[:3] == [unknown, control, control]
    assert vocab.tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(vocab.types[3:259]) == {gguf.TokenType.BYTE}
    assert set(vocab.types[259:]) == {gguf.TokenType.NORMAL}
    assert (vocab.bos_id, vocab.eos_id, vocab.unk_id) == (1, 2, 0)
    assert vocab.chat_template is None


def test_no_duplicates_and_word_prefixes_present() -> None:
    vocab = build_vocab()
    assert len(set(vocab.tokens)) == len(vocab.tokens)
    tokens = set(vocab.tokens)
    for word in ("the", "Hello", "world", "question"):
        assert {SPACE + word[:n] for n in range(1, len(word) + 1)} <= tokens


def test_other_sizes() -> None:
    assert len(build_vocab(1000).tokens) == 1000
    with pytest.raises(ValueError, match="cannot build"):
        build_vocab(100)


def test_common_words_are_single_tokens(tokenizer: llama_cpp.Llama) -> None:
    text = "Hello world, the cat sat on the mat."
    expected = [" Hello", " world", ",", " the", " cat", " sat", " on", " the", " mat", "."]
    assert _pieces(tokenizer, text) == expected
    assert _round_trip(tokenizer, text) == text


@pytest.mark.parametrize(
    "text", ["I 😀 emoji", "日本語のテキスト", "naïve café\n\ttab", "x = 3.1 * r"]
)
def test_text_outside_vocab_round_trips(tokenizer: llama_cpp.Llama, text: str) -> None:
    assert _round_trip(tokenizer, text) == text


def test_emoji_uses_byte_fallback(tokenizer: llama_cpp.Llama) -> None:
    ids = tokenizer.tokenize("😀".encode(), add_bos=False)
    byte_ids = [3 + b for b in "😀".encode()]
    assert ids[-4:] == byte_ids


def test_special_ids(tokenizer: llama_cpp.Llama) -> None:
    assert (tokenizer.token_bos(), tokenizer.token_eos(), tokenizer.n_vocab()) == (1, 2, 32000)
    assert tokenizer.tokenize(b"hi", add_bos=True)[0] == 1


def test_read_vocab_gives_back_what_was_written(tiny_model: Path) -> None:
    built, read = build_vocab(), read_vocab(tiny_model)
    assert read.tokens == built.tokens
    assert read.types == built.types
    assert read.scores == pytest.approx(built.scores)
    assert (read.bos_id, read.eos_id, read.unk_id) == (1, 2, 0)
    assert (read.add_bos, read.add_eos) == (True, False)
    assert read.model == "llama"
    assert read.chat_template is None
