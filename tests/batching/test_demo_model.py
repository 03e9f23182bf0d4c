"""The random-weight demo GGUF: llama.cpp loads it, and it behaves like a (gibberish) model."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from batching import demo_model
from batching.demo_model import (
    SHAPES,
    ModelShape,
    default_demo_model_path,
    ensure_demo_model,
    tensor_specs,
    write_demo_model,
)
from batching.quantize import quantize_gguf
from batching.vocab import add_vocab, build_vocab


@pytest.fixture(scope="module")
def llm(tiny_model: Path) -> Iterator[llama_cpp.Llama]:
    """The tiny demo model loaded for generation."""
    model = llama_cpp.Llama(str(tiny_model), n_ctx=256, n_threads=1, seed=7, verbose=False)
    yield model
    model.close()


def _generate(model: llama_cpp.Llama, prompt: str, n: int, temp: float) -> list[int]:
    tokens = model.tokenize(prompt.encode())
    return list(itertools.islice(model.generate(tokens, temp=temp, top_k=0, top_p=1.0), n))


def _value(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents() if key in reader.fields else None


def test_metadata_and_tensors(tiny_model: Path) -> None:
    reader = gguf.GGUFReader(tiny_model)  # parsing takes ~1 s: 32,000 strings in Python
    fields = {key: _value(reader, key) for key in reader.fields}
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "llm-gateway demo tiny (random weights)"
    assert fields["llama.embedding_length"] == 256
    assert fields["llama.context_length"] == 4096
    assert fields["llama.rope.dimension_count"] == 64
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert (fields["llama.block_count"], fields["llama.attention.head_count"]) == (2, 4)
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.add_eos_token"] is False
    ids = ("bos_token_id", "eos_token_id", "unknown_token_id")
    assert [fields[f"tokenizer.ggml.{key}"] for key in ids] == [1, 2, 0]
    assert "tokenizer.chat_template" not in reader.fields  # the gateway falls back to Vicuna
    tensors = {t.name: list(t.shape) for t in reader.tensors}
    assert tensors["token_embd.weight"] == [256, 32000]  # GGUF lists ne0 (row length) first
    assert tensors["blk.1.ffn_down.weight"] == [768, 256]
    assert len(tensors) == 3 + 2 * 9


def test_7b_shape_matches_llama_7b() -> None:
    specs = tensor_specs(SHAPES["7b"], 32000)
    assert sum(math.prod(s.shape) for s in specs) == 6_738_415_616


def test_greedy_continuation_depends_on_prompt(llm: llama_cpp.Llama) -> None:
    first = _generate(llm, "Hello world, the cat sat on the mat.", 12, temp=0.0)
    second = _generate(llm, "Once upon a time there was", 12, temp=0.0)
    assert first != second
    assert len(set(first)) > 3  # not one token repeated forever
    assert first == _generate(llm, "Hello world, the cat sat on the mat.", 12, temp=0.0)


def test_sampling_gives_varied_tokens(llm: llama_cpp.Llama) -> None:
    sampled = _generate(llm, "Once upon a time", 16, temp=1.0)
    assert len(set(sampled)) > 8


def test_vocab_copied_from_another_gguf(tmp_path: Path, tiny_model: Path) -> None:
    vocab = build_vocab(2000)
    vocab.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    vocab.eos_id = 1999
    source = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(source, "llama")
    add_vocab(writer, vocab)
    writer.add_tokenizer_pre("default")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    out = write_demo_model(tmp_path / "copy.gguf", vocab_from=source)
    reader = gguf.GGUFReader(out)
    assert _value(reader, "tokenizer.ggml.tokens") == vocab.tokens
    assert _value(reader, "tokenizer.chat_template") == vocab.chat_template
    assert _value(reader, "tokenizer.ggml.pre") == "default"
    model = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    assert (model.n_vocab(), model.token_eos()) == (2000, 1999)
    model.close()

    again = write_demo_model(tmp_path / "again.gguf", vocab_from=tiny_model)
    reader = gguf.GGUFReader(again)
    assert _value(reader, "tokenizer.ggml.tokens") == build_vocab().tokens
    assert _value(reader, "tokenizer.chat_template") is None


@pytest.mark.parametrize("ftype", ["Q8_0", "Q4_K_M"])
def test_quantized_model_loads_and_is_smaller(tmp_path: Path, tiny_model: Path, ftype: str) -> None:
    out = write_demo_model(tmp_path / f"tiny-{ftype}.gguf", quantize=ftype)
    assert out.stat().st_size < 0.6 * tiny_model.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp files left
    model = llama_cpp.Llama(str(out), n_ctx=64, n_threads=1, verbose=False)
    assert len(_generate(model, "Hello", 2, temp=0.0)) == 2
    model.close()


def test_unknown_quantization_lists_valid_names(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="Q4_K_M"):
        quantize_gguf(tiny_model, tmp_path / "x.gguf", "Q9_9")


def test_reused_blocks_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = ModelShape(
        n_embd=64, n_ff=128, n_layer=2, n_head=2, n_head_kv=2, is_reusing_blocks=True
    )
    monkeypatch.setitem(demo_model.SHAPES, "7b", small)
    out = write_demo_model(tmp_path / "reuse.gguf", "7b")
    data = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    assert np.array_equal(data["blk.0.attn_q.weight"], data["blk.1.attn_q.weight"])
    assert not np.array_equal(data["token_embd.weight"], data["output.weight"])
    model = llama_cpp.Llama(str(out), n_ctx=64, n_threads=1, verbose=False)
    assert len(_generate(model, "Hello", 2, temp=0.0)) == 2
    model.close()


def test_ensure_demo_model_writes_once_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache" / "demo.gguf"
    with caplog.at_level(logging.WARNING, logger="batching.demo_model"):
        assert ensure_demo_model(path) == path
    assert "random weights" in caplog.text
    written = path.stat().st_mtime_ns
    assert ensure_demo_model(path) == path
    assert path.stat().st_mtime_ns == written
    assert [p.name for p in path.parent.iterdir()] == ["demo.gguf"]


def test_default_path_is_in_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = tmp_path / "llm-gateway" / "demo-tiny-v1.gguf"
    assert default_demo_model_path(tmp_path) == expected
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_demo_model_path() == expected
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_demo_model_path() == Path.home() / ".cache" / expected.relative_to(tmp_path)


def test_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny"):
        write_demo_model(tmp_path / "x.gguf", "huge")


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo_model.main([str(tmp_path / "cli.gguf"), "--seed", "3"])
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "cli.gguf").stat().st_size > 30_000_000
