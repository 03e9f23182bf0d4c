"""Profile engine steps: how much of a decode step is Python around llama_decode.

Drives batching.engine.Engine directly (no HTTP) with N sequences decoding together and
prints the median split of pure-decode steps for greedy and sampled requests; closed loops of
mixed lengths (prompts 64-1000, answers 16-256 tokens) and of fixed ones (256/128) with their
throughput, time to first token and step time by batch composition, for each n_batch:n_ubatch
pair asked for; and the asyncio hand-off per step.

    python benchmarks/step_profile.py --model M.gguf --slots 64 --n-gpu-layers 99 \
        [--threads 4,16] [--sampler-threads 4,8] [--batches 1024:512,1024:1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from batching.async_engine import AsyncEngine
from batching.config import EngineConfig
from batching.engine import Engine
from batching.outputs import SchedulerOutput, StepOutput, StepStats
from batching.params import SamplingParams
from batching.runner import LlamaRunner

FILL_S: list[float] = []


def time_batch_fill(runner: LlamaRunner) -> None:
    """Record how long building each llama_batch takes (part of decode_s in StepStats)."""
    batch = runner._batch
    fill = batch.fill

    def timed(out: SchedulerOutput, filler_pos: Callable[[int], int | None]) -> int:
        start = time.perf_counter()
        rows = fill(out, filler_pos)
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


SAMPLINGS = {
    "greedy": {"temperature": 0.0},
    "t0.7_top_p0.9": {"temperature": 0.7, "top_p": 0.9},
    "t1.0": {"temperature": 1.0},
    "t0.8_top_k40_top_p0.95": {"temperature": 0.8, "top_k": 40, "top_p": 0.95},
    "t1.0_top_p0.1": {"temperature": 1.0, "top_p": 0.1},  # a small nucleus: the floor search
    "t0.8_min_p0.05": {"temperature": 0.8, "min_p": 0.05},
    "t0.7_penalties": {"temperature": 0.7, "presence_penalty": 0.5, "repetition_penalty": 1.1},
    "greedy_logprobs5": {"temperature": 0.0, "logprobs": 5},
}


def closed_loop(engine: Engine, n: int, n_steps: int, shape: str, tag: str) -> dict[str, float]:
    """A closed loop of n clients, each sending its next request the moment the last ends:
    engine throughput and time to first token (no HTTP), and the time of each llama_decode
    (with its sampling) by how many ubatches it took; a step that finishes prompts while
    others decode makes two (Engine.step), so "step" below means one call. `shape` "mixed":
    prompts 64-1000 and answers 16-256 tokens (uniform); "fixed": 256 and 128."""
    rng = random.Random(7)
    stats: list[StepStats] = []
    engine.observer = stats.append
    count = 0
    sent: dict[str, float] = {}
    ttft: list[float] = []
    tokens = 0

    def send() -> None:
        nonlocal count
        count += 1
        fixed = shape == "fixed"
        prompt_len = 256 if fixed else rng.randint(64, 1000)
        prompt = [1] + [rng.randrange(1000, 30000) for _ in range(prompt_len)]
        max_tokens = 128 if fixed else rng.randint(16, 256)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        engine.add(engine.new_sequences(f"m{count}", prompt, params))
        sent[f"m{count}"] = time.perf_counter()

    for _ in range(n):
        send()
    warm = n_steps // 5  # past the first wave of prompts
    start, first_stat = 0.0, 0

    def take(outs: list[StepOutput]) -> None:  # also the prompts' early first tokens
        nonlocal tokens
        for out in outs:
            tokens += len(out.token_ids)
            if out.num_output_tokens == 1 and out.token_ids:
                ttft.append(time.perf_counter() - sent[out.request_id])
            if out.finish_reason is not None:
                send()

    for i in range(n_steps):
        if i == warm:
            start, tokens, ttft[:], first_stat = time.perf_counter(), 0, [], len(stats)
        take(engine.step(emit=take))
    wall = time.perf_counter() - start
    steady = stats[first_stat:]  # one per llama_decode: a step may make two (Engine.step)
    for seq in list(engine.scheduler.running):
        engine.abort(seq.request_id)
    while engine.has_work:
        engine.step()
    by_ubatches: dict[int, list[StepStats]] = defaultdict(list)
    for st in steady:
        by_ubatches[st.num_ubatches].append(st)
    result = {
        "output_tok_s": tokens / wall,
        "ttft_p50_ms": statistics.median(ttft) * 1e3 if ttft else float("nan"),
        "ttft_p90_ms": statistics.quantiles(ttft, n=10)[-1] * 1e3 if len(ttft) > 1 else 0.0,
        "mean_ubatches": statistics.mean(st.num_ubatches for st in steady),
        "mean_step_ms": statistics.mean(st.duration_s for st in steady) * 1e3,
        "mean_sample_ms": statistics.mean(st.sample_s for st in steady) * 1e3,
        "decode_tokens_per_step": statistics.mean(st.num_decode_seqs for st in steady),
        "prefill_tokens_per_step": statistics.mean(st.num_prefill_tokens for st in steady),
    }
    for k, group in sorted(by_ubatches.items()):
        result[f"steps_with_{k}_ubatches"] = len(group)
        result[f"median_ms_with_{k}_ubatches"] = (
            statistics.median(st.duration_s for st in group) * 1e3
        )
    print(f"{tag}: {shape} closed loop: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()))
    return result


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


SWEEP_SAMPLINGS = (
    "greedy",
    "t0.7_top_p0.9",
    "t0.8_top_k40_top_p0.95",
    "t1.0_top_p0.1",
    "t0.7_penalties",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--ctx-size", type=int, default=40960)
    ap.add_argument("--n-gpu-layers", type=int, default=99)
    ap.add_argument(
        "--batches",
        default="1024:512",
        help="n_batch:n_ubatch pairs to compare in the closed loops, e.g. 1024:512,1024:1024",
    )
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", default="0", help="llama.cpp threads to compare, e.g. 4,16")
    ap.add_argument("--sampler-threads", default="1", help="sampler threads to compare, e.g. 4,8")
    ap.add_argument("--mixed-steps", type=int, default=400)
    ap.add_argument("--fixed-steps", type=int, default=450, help="about 3 rounds of 256/128")
    ap.add_argument(
        "--only-sampling",
        action="store_true",
        help="the sampled steps alone: no loops, no hand-off",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    batches = [tuple(int(v) for v in pair.split(":")) for pair in args.batches.split(",")]
    threads_list = [int(t) for t in args.threads.split(",")]
    samplers = [int(t) for t in args.sampler_threads.split(",")]
    runs = [(batches[0], t, samplers[0]) for t in threads_list]
    runs += [(batches[0], threads_list[0], s) for s in samplers[1:]]
    runs += [(b, threads_list[0], samplers[0]) for b in batches[1:]]
    result: dict[str, dict[str, float]] = {}
    config = None
    for i, ((n_batch, n_ubatch), threads, sampler_threads) in enumerate(runs):
        config = EngineConfig(
            model_path=args.model,
            n_slots=args.slots,
            n_ctx=args.ctx_size,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_gpu_layers=args.n_gpu_layers,
            n_threads=threads or None,
            sampler_threads=sampler_threads,
        )
        runner = LlamaRunner(config)
        time_batch_fill(runner)
        engine = Engine(runner, config)
        tag = f"b{n_batch}:ub{n_ubatch}:threads{threads or 'auto'}:sampler{sampler_threads}"
        same_batch = (n_batch, n_ubatch) == batches[0]
        for name, kw in SAMPLINGS.items():
            if i > 0 and (name not in SWEEP_SAMPLINGS or not same_batch):
                continue  # the other settings: the rows that tell the difference
            params = SamplingParams(max_tokens=args.max_tokens, seed=1, ignore_eos=True, **kw)
            steps = profile(engine, args.slots, args.prompt_len, params)
            result[f"{tag}:{name}"] = summarize(f"{tag}:{name}", steps)
        if (i == 0 or not same_batch) and not args.only_sampling:
            for shape, n_steps in (("mixed", args.mixed_steps), ("fixed", args.fixed_steps)):
                loop = closed_loop(engine, args.slots, n_steps, shape, tag)
                result[f"{tag}:{shape}"] = loop
        engine.close()
    assert config is not None
    if not args.only_sampling:
        wall_per_step = handoff_ms(config, args.slots)
        print(f"async wall per step with {args.slots} streams: {wall_per_step:.3f} ms")
        result["async_wall_per_step_ms"] = {"value": wall_per_step}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
