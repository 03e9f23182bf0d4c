"""Time batching.sampler.sample on 64 rows of 32,000 random logits, per sampling setting.

python benchmarks/sampler_bench.py [--rows 64] [--vocab 32000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from batching.params import SamplingParams
from batching.sampler import SamplingState, sample

SETTINGS = {
    "greedy": SamplingParams(temperature=0),
    "temperature 1": SamplingParams(temperature=1.0),
    "top_k 40 + top_p 0.95": SamplingParams(temperature=0.8, top_k=40, top_p=0.95),
    "top_p 0.95": SamplingParams(temperature=0.8, top_p=0.95),
    "min_p 0.05": SamplingParams(temperature=0.8, min_p=0.05),
    "greedy + penalties": SamplingParams(
        temperature=0, presence_penalty=0.5, repetition_penalty=1.1
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((args.rows, args.vocab)) * 3).astype(np.float32)
    pieces = [b"x"] * args.vocab
    rows = list(range(args.rows))
    warm = [SamplingState(SamplingParams(temperature=1), 1, []) for _ in rows]
    sample(logits, rows, warm, pieces)  # builds the Gumbel table once
    for name, params in SETTINGS.items():
        states = [SamplingState(params, i, list(range(300))) for i in rows]
        for state in states:
            for token in range(100):
                state.accept(token)
        start = time.perf_counter()
        for _ in range(args.repeat):
            sample(logits, rows, states, pieces)
        ms = (time.perf_counter() - start) / args.repeat * 1e3
        print(f"{name:24s} {ms:7.2f} ms per {args.rows}-row step")


if __name__ == "__main__":
    main()
