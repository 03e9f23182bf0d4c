"""Time one step's sampling (batching.sampler.Sampler) on random logits, per sampling setting.

python benchmarks/sampler_bench.py [--rows 64] [--vocab 32000] [--threads 1] [--scale 1.0]

`--scale` sets how spread the logits are: 1.0 is about as flat as a random-weight model's rows
(the worst case for top-p: the nucleus spans most of the vocabulary); larger is peakier.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from batching.params import SamplingParams
from batching.sampler import Sampler
from batching.sampling_state import SamplingState

SETTINGS = {
    "greedy": SamplingParams(temperature=0),
    "temperature 1": SamplingParams(temperature=1.0),
    "temperature 0.7, top_p 0.9": SamplingParams(temperature=0.7, top_p=0.9),
    "top_k 40, top_p 0.95, t 0.8": SamplingParams(temperature=0.8, top_k=40, top_p=0.95),
    "min_p 0.05, t 0.8": SamplingParams(temperature=0.8, min_p=0.05),
    "top_p 0.1 (small nucleus)": SamplingParams(temperature=1.0, top_p=0.1),
    "greedy + penalties": SamplingParams(
        temperature=0, presence_penalty=0.5, frequency_penalty=0.2, repetition_penalty=1.1
    ),
    "t 0.7 + logit_bias": SamplingParams(temperature=0.7, logit_bias={5: 2.0, 7: -100.0}),
    "greedy + logprobs 5": SamplingParams(temperature=0, logprobs=5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((args.rows, args.vocab)) * args.scale).astype(np.float32)
    pieces = [b"x"] * args.vocab
    rows = list(range(args.rows))
    sampler = Sampler(args.threads)
    warm = [SamplingState(SamplingParams(temperature=1), 1, []) for _ in rows]
    sampler.sample(logits, rows, warm, pieces)  # builds the Gumbel table once
    print(f"{args.rows} rows x {args.vocab} logits, {args.threads} thread(s), scale {args.scale}")
    for name, params in SETTINGS.items():
        states = [SamplingState(params, i, list(range(300))) for i in rows]
        for state in states:
            for token in range(100):
                state.accept(token, args.vocab)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            sampler.sample(logits, rows, states, pieces)
            times.append(time.perf_counter() - start)
        print(f"{name:30s} median {np.median(times) * 1e3:6.2f} ms, min {min(times) * 1e3:6.2f} ms")
    sampler.close()


if __name__ == "__main__":
    main()
