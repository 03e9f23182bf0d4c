"""Write a LLaMA-architecture GGUF with random weights, so the gateway runs without a download."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

from batching.vocab import Vocab, add_vocab, build_vocab, read_vocab

logger = logging.getLogger("batching.demo_model")

ARCH = "llama"
DEMO_FILE_NAME = "demo-tiny-v1.gguf"  # bump the version when the tiny model's bytes change


@dataclass(frozen=True, slots=True)
class ModelShape:
    """LLaMA hyperparameters of one demo size."""

    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    # One random block per tensor role, reused by every layer: weight values do not change
    # inference speed, and drawing 6.7e9 normals would take minutes instead of seconds.
    is_reusing_blocks: bool = False

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.n_embd // self.n_head


# tiny: every dimension divisible by 256 so K-quants (Q4_K_M...) apply to all matrices.
SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(n_embd=256, n_ff=768, n_layer=2, n_head=4, n_head_kv=4),
    "7b": ModelShape(
        n_embd=4096, n_ff=11008, n_layer=32, n_head=32, n_head_kv=32, is_reusing_blocks=True
    ),
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One weight: GGUF name, numpy shape (GGUF's dims reversed) and random scale."""

    name: str
    role: str
    shape: tuple[int, ...]
    std: float  # 0.0 means all ones (RMSNorm gains)


def tensor_specs(shape: ModelShape, n_vocab: int) -> list[TensorSpec]:
    """Every tensor llama.cpp's "llama" loader expects, in file order."""
    d, ff, kv = shape.n_embd, shape.n_ff, shape.head_dim * shape.n_head_kv
    # numpy (rows, cols) is GGUF ne = [cols, rows]: a matrix stores one output row per
    # ggml row, so each numpy shape is (out_features, in_features).
    per_layer = [
        ("attn_norm", (d,), 0.0),
        ("attn_q", (d, d), d**-0.5),
        ("attn_k", (kv, d), d**-0.5),
        ("attn_v", (kv, d), d**-0.5),
        # Layer outputs about half the residual's size: context shifts the hidden state
        # without drowning the current token's embedding.
        ("attn_output", (d, d), 0.5 * d**-0.5),
        ("ffn_norm", (d,), 0.0),
        ("ffn_gate", (ff, d), d**-0.5),
        ("ffn_up", (ff, d), d**-0.5),
        ("ffn_down", (d, ff), 0.5 * ff**-0.5),
    ]
    specs = [TensorSpec("token_embd.weight", "token_embd", (n_vocab, d), 1.0)]
    for layer in range(shape.n_layer):
        specs += [
            TensorSpec(f"blk.{layer}.{role}.weight", role, dims, std)
            for role, dims, std in per_layer
        ]
    specs.append(TensorSpec("output_norm.weight", "output_norm", (d,), 0.0))
    # Logits with a spread of ~3 nats: greedy follows the hidden state, temperature 1 varies.
    specs.append(TensorSpec("output.weight", "output", (n_vocab, d), 3.0 * d**-0.5))
    return specs


def _draw(spec: TensorSpec, rng: np.random.Generator) -> npt.NDArray[np.generic]:
    if spec.std == 0.0:
        return np.ones(spec.shape, dtype=np.float32)  # 1-D norms stay F32, as converters do
    block = rng.standard_normal(spec.shape, dtype=np.float32)
    block *= spec.std
    return block.astype(np.float16)


def _add_metadata(writer: gguf.GGUFWriter, size: str, shape: ModelShape, vocab: Vocab) -> None:
    writer.add_name(f"llm-gateway demo {size} (random weights)")
    writer.add_description("Random weights for load and speed tests; its text is gibberish.")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(len(vocab.tokens))
    add_vocab(writer, vocab)


def _write_f16(out: Path, size: str, shape: ModelShape, vocab: Vocab, seed: int) -> None:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, ARCH)
    _add_metadata(writer, size, shape, vocab)
    # The writer keeps references, not copies: with reuse, one array per role is held in
    # memory however many layers point at it, so 7b needs ~1 GB of RAM, not 13.5 GB.
    blocks: dict[str, npt.NDArray[np.generic]] = {}
    for spec in tensor_specs(shape, len(vocab.tokens)):
        key = spec.role if shape.is_reusing_blocks else spec.name
        if key not in blocks:
            blocks[key] = _draw(spec, rng)
        writer.add_tensor(spec.name, blocks[key])
    blocks.clear()
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=shape.is_reusing_blocks)
    finally:
        writer.close()


def write_demo_model(
    out: Path,
    size: str = "tiny",
    quantize: str | None = None,
    vocab_from: Path | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight LLaMA GGUF of `size` to `out` (atomically) and return `out`."""
    if size not in SHAPES:
        raise ValueError(f"unknown demo size {size!r}; valid: {', '.join(SHAPES)}")
    vocab = build_vocab() if vocab_from is None else read_vocab(vocab_from)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    f16 = out.with_name(f".{out.name}.{os.getpid()}.f16.tmp") if quantize else tmp
    try:
        _write_f16(f16, size, SHAPES[size], vocab, seed)
        if quantize:
            # Imported here: only quantizing needs llama.cpp, plain writing needs just gguf.
            from batching.quantize import quantize_gguf

            quantize_gguf(f16, tmp, quantize)
        os.replace(tmp, out)
    finally:
        f16.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def default_demo_model_path(cache_dir: Path | None = None) -> Path:
    """Where the built-in demo model lives: $XDG_CACHE_HOME (or ~/.cache)/llm-gateway/."""
    if cache_dir is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        cache_dir = Path(xdg) if xdg else Path.home() / ".cache"
    return cache_dir / "llm-gateway" / DEMO_FILE_NAME


def ensure_demo_model(path: Path | None = None) -> Path:
    """The tiny demo model's path, writing it first if it is not there yet."""
    path = default_demo_model_path() if path is None else path
    if not path.exists():
        write_demo_model(path, "tiny")
    logger.warning(
        "serving the built-in demo model %s: it has random weights, so its text is gibberish",
        path,
    )
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m batching.demo_model OUT [--size 7b] [--quantize Q4_K_M]."""
    parser = argparse.ArgumentParser(prog="python -m batching.demo_model", description=__doc__)
    parser.add_argument("out", type=Path, help="GGUF file to write")
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--quantize", metavar="FTYPE", help="e.g. Q4_K_M or Q8_0")
    parser.add_argument("--vocab", type=Path, metavar="GGUF", help="copy this file's tokenizer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_demo_model(args.out, args.size, args.quantize, args.vocab, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
