"""Simulate the real scheduler on a virtual clock, to compare prefill policies without a GPU.

The engine (real Scheduler, SlotTable, Sampler) runs over tests/batching/fake_runner.py; each
llama_decode costs what llama.cpp's ubatches of its batch would cost on the H200 with the 7B Q4_K_M
model (a piecewise-linear fit to `benchmarks/step_profile.py` and `llama-batched-bench`:
1 token 3.5 ms, 64 tokens 16.5 ms, 480 tokens 44 ms, 1,980 tokens 168 ms) plus 1.5 ms of
Python. The load is shaped like `llm-gateway bench --concurrency 64 --warmup 64`: the warm-up
drains, then 64 requests start at once and each client sends its next one 3 ms after the last
ends (`--client-ms`; it then waits for the step after the one running). Absolute numbers are off
(benchmarks/README.md says by how much against run 13); use it to rank policies, then
measure the winner on the GPU.

    python benchmarks/policy_sim.py [--workloads mixed lognormal] [--fifo] [--split] [--one-call]
        [--one-prompt-call] [--step-start-only]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "batching"))

from fake_runner import FakeRunner

from batching.config import EngineConfig
from batching.engine import Engine
from batching.outputs import StepOutput
from batching.params import SamplingParams
from batching.ubatch import ubatch_sizes

COST_MS = [(1, 3.5), (8, 7.8), (32, 10.4), (64, 16.5), (480, 44.0), (960, 83.7), (1470, 125.8)]
COST_MS += [(1980, 168.0), (4096, 340.0)]
KV_FIT_CELLS = 384  # the longest stream in the steps the fit was measured on (256 + 128)
KV_MS_PER_CELL = 0.0002  # (27 - 16.5) ms / (64 x (1,256 - 384)) cells


def ubatch_ms(n: int) -> float:
    """Time of one ubatch of n tokens, interpolated between the measured points."""
    xs = [x for x, _ in COST_MS]
    i = min(max(bisect.bisect_left(xs, n), 1), len(xs) - 1)
    (x0, y0), (x1, y1) = COST_MS[i - 1], COST_MS[i]
    return y0 + (y1 - y0) * (n - x0) / (x1 - x0)


def kv_ms(n_seqs: int, max_kv: int) -> float:
    """Attention beyond the fit's: llama.cpp reads every stream of a step up to the longest
    one's cells, so a step of 64 decodes costs more when one of them is long (about 27 ms a
    step on the mixed workload against 16.5 ms at 256/128 on the H200)."""
    return KV_MS_PER_CELL * n_seqs * max(max_kv - KV_FIT_CELLS, 0)


def call_ms(runs: list[tuple[int, int]], max_kv: int, n_ubatch: int) -> float:
    """One llama_decode of a batch with these (slot, tokens) runs whose longest stream holds
    `max_kv` cells: its ubatches, the attention beyond the fit's, and 1.5 ms of Python."""
    sizes = ubatch_sizes(runs, n_ubatch, sequential=True)
    return sum(ubatch_ms(n) for n in sizes) + 1.5 + kv_ms(len(runs), max_kv)


def draw(rng: random.Random, workload: str) -> tuple[int, int]:
    """Prompt and answer lengths, as `gateway/bench_workload.py` draws them."""
    if workload == "mixed":
        return rng.randint(64, 1000), rng.randint(16, 256)
    if workload == "lognormal":
        p = int(min(max(rng.lognormvariate(math.log(200), 0.8), 16), 1000))
        o = int(min(max(rng.lognormvariate(math.log(150), 0.5), 8), 512))
        return p, min(o, 1270 - p)
    if workload == "chat":  # 200 words in the chat template: about 372 tokens
        return 372 + rng.randint(-12, 12), 128
    return 256, 128


class Sim:
    def __init__(
        self,
        workload: str,
        n_batch: int,
        n_ubatch: int,
        seed: int,
        client_s: float = 0.003,
        **config: bool,
    ) -> None:
        """`config`: EngineConfig fields to set (split_prompts, admit_late, ...)."""
        self.rng = random.Random(seed)
        self.client_s = client_s  # from a request's last token to its client's next request
        self.workload = workload
        self.n_ubatch = n_ubatch
        self.runner = FakeRunner(n_ctx=1280, n_slots=64, n_ubatch=n_ubatch)
        engine_config = EngineConfig(
            model_path=Path("sim"), n_slots=64, n_ctx=1280 * 64, n_batch=n_batch,
            n_ubatch=n_ubatch, **config,  # type: ignore[arg-type]
        )  # fmt: skip
        self.engine = Engine(self.runner, engine_config, clock=lambda: self.now)  # type: ignore[arg-type]
        self.now = 0.0
        self.sent = 0
        self.timed = 0  # forward calls already on the clock

    def advance(self, upto: int | None = None) -> None:
        """Move the clock over the llama_decode calls made since the last advance (up to
        call number `upto`)."""
        upto = len(self.runner.batches) if upto is None else upto
        for batch in self.runner.batches[self.timed : upto]:
            runs: list[tuple[int, int]] = []
            for slot, _, _ in batch.tokens:
                if runs and runs[-1][0] == slot:
                    runs[-1] = (slot, runs[-1][1] + 1)
                else:
                    runs.append((slot, 1))
            max_kv = max(pos for _, pos, _ in batch.tokens) + 1
            self.now += call_ms(runs, max_kv, self.n_ubatch) / 1000
        self.timed = max(self.timed, upto)

    def phase(self, total: int) -> tuple[list[float], int, float]:
        """Run `total` requests in a closed loop of 64; TTFTs, output tokens and wall time."""
        start, tokens, done, left = self.now, 0, 0, total
        arrivals: list[float] = []
        first: dict[str, float] = {}
        sent_at: dict[str, float] = {}
        ttft: list[float] = []

        def send(t: float) -> None:
            nonlocal left
            self.sent, left = self.sent + 1, left - 1
            n_prompt, n_out = draw(self.rng, self.workload)
            prompt = [1] + [3 + self.rng.randrange(60) for _ in range(n_prompt - 1)]
            rid = f"r{self.sent}"
            sent_at[rid] = t
            params = SamplingParams(temperature=0.0, max_tokens=n_out, ignore_eos=True)
            self.engine.add(self.engine.new_sequences(rid, prompt, params))

        def record(outs: list[StepOutput], started: bool = False) -> None:
            """`started`: handed out as a decode starts, so before that decode's time."""
            nonlocal tokens, done
            self.advance(len(self.runner.batches) - 1 if started else None)
            for out in outs:
                if out.token_ids and out.request_id not in first:
                    first[out.request_id] = self.now - sent_at[out.request_id]
                tokens += len(out.token_ids)
                if out.finish_reason is not None:
                    done += 1
                    ttft.append(first[out.request_id])
                    if left > 0:
                        arrivals.append(self.now + self.client_s)

        def poll() -> None:
            """The requests that arrived by now (between steps, or mid-step)."""
            self.advance()
            for t in sorted(a for a in arrivals if a <= self.now):
                send(t)
            arrivals[:] = [a for a in arrivals if a > self.now]

        for _ in range(min(64, total)):
            send(self.now)
        while done < total:
            poll()
            if not self.engine.has_work:
                self.now = min(arrivals)
                continue
            record(self.engine.step(emit=lambda outs: record(outs, started=True), poll=poll))
        return ttft, tokens, self.now - start


# flag: (EngineConfig field, its value in the variant the flag adds, what it is)
VARIANTS = {
    "fifo": ("shortest_first", False, "admission in arrival order"),
    "split": ("split_prompts", True, "--split-prompts 1: new prompts fill the budget"),
    "one_call": ("prompts_first", False, "--prompts-first 0: prompts and decodes in one call"),
    "one_prompt_call": ("prompt_per_call", False, "--prompt-per-call 0: one call for prompts"),
    "step_start_only": ("admit_late", False, "--admit-late 0: no admission mid-step"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workloads", nargs="+", default=["fixed", "chat", "mixed", "lognormal"])
    ap.add_argument("--batches", default="1024:512", help="n_batch:n_ubatch,...")
    for flag, (_, _, what) in VARIANTS.items():
        ap.add_argument(f"--{flag.replace('_', '-')}", action="store_true", help=f"also {what}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--client-ms", type=float, default=3.0,
        help="from a request's last token going out to its client's next request arriving",
    )  # fmt: skip
    args = ap.parse_args()
    flags = [flag for flag in VARIANTS if getattr(args, flag)]
    for workload in args.workloads:
        for pair in args.batches.split(","):
            n_batch, n_ubatch = (int(x) for x in pair.split(":"))
            for on in itertools.product([False, True], repeat=len(flags)):
                chosen = [flag for flag, yes in zip(flags, on, strict=True) if yes]
                config = {VARIANTS[flag][0]: VARIANTS[flag][1] for flag in chosen}
                sim = Sim(workload, n_batch, n_ubatch, args.seed, args.client_ms / 1000, **config)
                sim.phase(64)  # the warm-up, drained
                ttft, tokens, wall = sim.phase(256)
                q = sorted(ttft)
                name = " ".join([f"{workload} {n_batch}:{n_ubatch}", *chosen])
                print(
                    f"{name:32s} {tokens / wall:7.0f} tok/s  TTFT p50 {1000 * q[len(q) // 2]:5.0f}"
                    f" ms  mean {1000 * sum(q) / len(q):5.0f} ms  p90"
                    f" {1000 * q[int(len(q) * 0.9)]:5.0f} ms",
                    flush=True,
                )


if __name__ == "__main__":
    main()
