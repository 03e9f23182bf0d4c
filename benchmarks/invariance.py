"""Does a request's text depend on what else is in the batch? Greedy and seeded sampling.

Drives the engine directly (no HTTP): 16 prompts each sent alone, then the same 16 among
48 others, for greedy requests and for seeded ones (temperature 0.8, top_p 0.95). Prints for
how many of the 16 the text differs, and at which generated token it first differs.

    python benchmarks/invariance.py --model M.gguf --n-gpu-layers 99 [--out result.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batching.config import EngineConfig
from batching.engine import Engine
from batching.params import SamplingParams
from batching.runner import LlamaRunner

NUM_PROBES = 16
NUM_OTHERS = 48


def prompt(i: int, length: int = 64) -> list[int]:
    return [1] + [(1000 + 7919 * (i * length + j)) % 29000 + 1000 for j in range(length)]


def run(
    engine: Engine, requests: list[tuple[str, list[int], SamplingParams]]
) -> dict[str, list[int]]:
    """Run requests together to completion; their generated tokens by request id."""
    for request_id, ids, params in requests:
        engine.add(engine.new_sequences(request_id, ids, params))
    tokens: dict[str, list[int]] = {r: [] for r, _, _ in requests}
    while engine.has_work:
        for out in engine.step():
            tokens[out.request_id] += out.token_ids
    return tokens


def compare(engine: Engine, params: SamplingParams) -> dict[str, object]:
    probes = [(f"p{i}", prompt(i), params) for i in range(NUM_PROBES)]
    alone = {}
    for probe in probes:
        alone |= run(engine, [probe])
    others = [(f"o{i}", prompt(100 + i), params) for i in range(NUM_OTHERS)]
    mixed = run(engine, probes[: NUM_PROBES // 2] + others + probes[NUM_PROBES // 2 :])
    first_diff = []
    for request_id, _, _ in probes:
        a, b = alone[request_id], mixed[request_id]
        at = next((k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
        if at is not None:
            first_diff.append(at)
    return {"differ": len(first_diff), "of": NUM_PROBES, "first_difference_at": first_diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--n-gpu-layers", type=int, default=99)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    config = EngineConfig(
        model_path=args.model, n_slots=64, n_ctx=64 * 256, n_gpu_layers=args.n_gpu_layers
    )
    engine = Engine(LlamaRunner(config), config)
    result = {}
    for name, params in {
        "greedy": SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True),
        "seeded t0.8 top_p0.95": SamplingParams(
            max_tokens=args.max_tokens, temperature=0.8, top_p=0.95, seed=7, ignore_eos=True
        ),
    }.items():
        result[name] = compare(engine, params)
        print(f"{name}: {result[name]}")
    engine.close()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
