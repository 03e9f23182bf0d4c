"""Profile engine steps: how much of a decode step is Python around llama_decode.

Drives batching.engine.Engine directly (no HTTP) with N sequences decoding together and
prints the median split of pure-decode steps, plus the asyncio hand-off per step.

    python benchmarks/step_profile.py --model M.gguf --slots 64 --n-gpu-layers 99
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from batching.async_engine import AsyncEngine
from batching.config import EngineConfig
from batching.engine import Engine
from batching.outputs import SchedulerOutput, StepStats
from batching.params import SamplingParams
from batching.runner import LlamaRunner

FILL_S: list[float] = []


def time_batch_fill(runner: LlamaRunner) -> None:
    """Record how long building each llama_batch takes (part of decode_s in StepStats)."""
    batch = runner._batch
    fill = batch.fill

    def timed(out: SchedulerOutput) -> int:
        start = time.perf_counter()
        rows = fill(out)
        FILL_S.append(time.perf_counter() - start)
        return rows

    batch.fill = timed  # type: ignore[method-assign]


def profile(engine: Engine, n: int, prompt_len: int, params: SamplingParams) -> list[StepStats]:
    """Run n requests to completion; return the stats of steps where all n only decode."""
    stats: list[StepStats] = []
    engine.observer = stats.append
    FILL_S.clear()
    for i in range(n):
        prompt = [1] + [
            (1000 + 7919 * (i * prompt_len + j)) % 30000 + 500 for j in range(prompt_len)
        ]
        engine.add(engine.new_sequences(f"p{i}", prompt, params))
    while engine.has_work:
        engine.step()
    return [s for s in stats if s.num_prefill_tokens == 0 and s.num_decode_seqs == n]


def fill_ms() -> float:
    return statistics.median(FILL_S) * 1e3 if FILL_S else float("nan")


def summarize(label: str, steps: list[StepStats]) -> dict[str, float]:
    """Median milliseconds of each part of a step (the *_s keys hold milliseconds here)."""
    med = {
        k: statistics.median(getattr(s, k) for s in steps) * 1e3
        for k in ("duration_s", "schedule_s", "decode_s", "sample_s", "update_s")
    }
    med["batch_fill_s"] = fill_ms()
    llama_decode_ms = med["decode_s"] - med["batch_fill_s"]
    python_ms = med["duration_s"] - llama_decode_ms
    med["python_share_of_decode"] = python_ms / llama_decode_ms
    print(f"{label}: {len(steps)} steps, " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    return med


def handoff_ms(config: EngineConfig, n: int) -> float:
    """Median per-step cost on the event loop of delivering n outputs to their streams."""

    async def run() -> float:
        engine = AsyncEngine(Engine(LlamaRunner(config), config))
        engine.start()
        try:
            params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
            streams = [engine.submit(f"h{i}", [1, 500 + i, 600 + i], params) for i in range(n)]
            start = time.perf_counter()
            counts = await asyncio.gather(*(_drain(s) for s in streams))
            wall = time.perf_counter() - start
            return wall / max(counts) * 1e3
        finally:
            engine.shutdown()

    return asyncio.run(run())


async def _drain(stream: object) -> int:
    count = 0
    async for _ in stream:  # type: ignore[attr-defined]
        count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--ctx-size", type=int, default=40960)
    ap.add_argument("--n-gpu-layers", type=int, default=99)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    config = EngineConfig(
        model_path=args.model,
        n_slots=args.slots,
        n_ctx=args.ctx_size,
        n_batch=2048,
        n_gpu_layers=args.n_gpu_layers,
    )
    runner = LlamaRunner(config)
    time_batch_fill(runner)
    engine = Engine(runner, config)
    greedy = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    sampled = SamplingParams(
        max_tokens=args.max_tokens, temperature=0.8, top_p=0.95, top_k=40, seed=1, ignore_eos=True
    )
    result = {
        "greedy": summarize("greedy", profile(engine, args.slots, args.prompt_len, greedy)),
        "top_k40_top_p0.95": summarize(
            "sampled", profile(engine, args.slots, args.prompt_len, sampled)
        ),
    }
    engine.runner.close()
    wall_per_step = handoff_ms(config, args.slots)
    print(f"async wall per step with {args.slots} streams: {wall_per_step:.3f} ms")
    result["async_wall_per_step_ms"] = {"value": wall_per_step}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
