"""Serve the real gateway and engine over a simulated model, to measure the Python overhead.

The simulated runner's decode takes `--step-ms`: forward() starts it and returns, as
llama_decode does on a GPU, and logits() sleeps until it is done (releasing the GIL, as
llama_synchronize does). Its logits are fixed random rows of a 32,000-token vocabulary, so
everything except the GPU work is real: scheduling, sampling, detokenising, the asyncio
hand-off, pydantic, SSE, uvicorn. Run a load against it with `llm-gateway bench --model
sim`; a TPOT close to --step-ms means the Python side keeps up.

    python benchmarks/http_profile.py --step-ms 16 --slots 64 --port 8010
    python benchmarks/http_profile.py --step-ms 16 --engine-only   # the engine without HTTP

With `--cost h200` a call takes what benchmarks/policy_sim.py charges for it on the H200
(the ubatches of its batch), so a closed loop over HTTP shows what the simulator cannot: the
real hand-off between the event loop and the engine thread, and when requests arrive.

    python benchmarks/http_profile.py --cost h200 --batch-size 1024 --port 8010
    llm-gateway bench --base-url http://127.0.0.1:8010 --model sim --workload mixed \
        --prompt-len-range 64 1000 --output-len-range 16 256 --concurrency 64 \
        --num-requests 256 --warmup 64 --seed 23

`--engine-only` drives the same engine directly with 64 greedy requests of 256 / 128 tokens
and prints the time of the steps where every slot decodes, and how much of it is not the
simulated decode: the engine's own Python and sampling. `--switch-ms` sets the interpreter's
GIL switch interval (sys.setswitchinterval; 5 ms by default), for either mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import uvicorn

from batching.async_engine import AsyncEngine
from batching.config import EngineConfig
from batching.engine import Engine
from batching.info import ModelInfo
from batching.outputs import KvOp, SchedulerOutput
from batching.params import SamplingParams
from batching.sampling_state import Grammar, Logits
from gateway.app import create_app
from gateway.settings import Settings

N_VOCAB = 32000


class SimRunner:
    """A ModelRunner whose decode is a sleep and whose logits are fixed noise."""

    def __init__(self, n_slots: int, n_ctx: int, step_s: float, prefill_tok_s: float = 0.0) -> None:
        self.info = ModelInfo(
            path=Path("sim.gguf"), model_id="sim", n_ctx=n_ctx // n_slots, n_ctx_train=4096,
            n_slots=n_slots, n_vocab=N_VOCAB, bos_id=1, eos_id=2, add_bos=True, bos_text="<s>",
            eos_text="</s>", chat_template=None, quantization="sim", description="simulated",
        )  # fmt: skip
        self.pieces = [b""] * 3 + [b" w%d" % i for i in range(3, N_VOCAB)]
        self.eog_ids = frozenset({2})
        self.decodes_async = True  # forward() starts the "decode", logits() waits for it
        self._step_s = step_s
        self._prefill_s_per_token = 1.0 / prefill_tok_s if prefill_tok_s else 0.0
        self._done_at = 0.0
        self._logits = np.random.default_rng(0).standard_normal((n_slots * 2, N_VOCAB))
        self._logits = self._logits.astype(np.float32)
        self._rows = 0

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        return ([1] if add_bos else []) + [3 + b for b in text.encode()]

    def apply_kv_ops(self, ops: list[KvOp]) -> None:
        pass

    def clear_slot(self, slot_id: int) -> None:
        pass

    def forward(self, out: SchedulerOutput) -> int:
        """Start the "decode": like llama_decode on a GPU, it returns at once; logits() waits."""
        self._rows = len(out.sample_rows)
        prefill_s = self._prefill_s_per_token * out.num_prefill_tokens
        self._done_at = time.perf_counter() + self._step_s + prefill_s
        return 0

    def logits(self) -> Logits:
        time.sleep(max(self._done_at - time.perf_counter(), 0.0))
        return self._logits[: self._rows]

    def make_grammar(self, gbnf: str) -> Grammar:
        raise ValueError("the simulated model has no grammar support")

    def close(self) -> None:
        pass


class H200Runner(SimRunner):
    """A SimRunner whose llama_decode costs what benchmarks/policy_sim.py charges for it: the
    H200's time for each ubatch llama.cpp would cut the batch into, the attention over long
    streams, and that simulator's 1.5 ms of Python per call (here on top of the real one)."""

    def __init__(self, n_slots: int, n_ctx: int, n_ubatch: int = 512) -> None:
        super().__init__(n_slots, n_ctx, 0.0)
        self._n_ubatch = n_ubatch
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        import policy_sim

        self._call_ms = policy_sim.call_ms

    def forward(self, out: SchedulerOutput) -> int:
        longest = max([s.num_tokens for s in out.decode] + [c.end for c in out.prefill] + [1])
        ms = self._call_ms(out.runs(), longest, self._n_ubatch)
        self._rows = len(out.sample_rows)
        self._done_at = time.perf_counter() + ms / 1000
        return 0


def engine_only(runner: SimRunner, config: EngineConfig) -> None:
    """Time the engine's all-decode steps over the simulated runner; print the overhead."""
    engine = Engine(runner, config)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    params = SamplingParams(temperature=0.0, max_tokens=128, ignore_eos=True)
    for i in range(config.n_slots):
        prompt = [1, *(3 + rng.integers(0, 200, 255)).tolist()]
        engine.add(engine.new_sequences(f"r{i}", prompt, params))
    times = []
    while engine.has_work:
        all_decode = len(engine.scheduler.running) == config.n_slots and not any(
            s.is_prefilling for s in engine.scheduler.running
        )
        start = time.perf_counter()
        engine.step()
        if all_decode:
            times.append(time.perf_counter() - start)
    slept = []
    for _ in range(20):
        start = time.perf_counter()
        time.sleep(runner._step_s)
        slept.append(time.perf_counter() - start)
    step, sleep = 1000 * float(np.median(times)), 1000 * float(np.median(slept))
    print(f"all-decode steps: {len(times)}, median {step:.2f} ms; the sleep alone {sleep:.2f} ms;")
    print(f"the engine's own time: {step - sleep:.2f} ms a step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--step-ms", type=float, default=16.0)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--ctx-size", type=int, default=81920)
    ap.add_argument("--port", type=int, default=8010)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--short-queue", type=int, default=-1, help="as `gateway serve`'s")
    ap.add_argument(
        "--prefill-tok-s", type=float, default=0.0,
        help="prompt tokens per second added to a step's sleep (0: prompts are free)",
    )  # fmt: skip
    ap.add_argument(
        "--cost", choices=("sleep", "h200"), default="sleep",
        help="a call's time: --step-ms plus --prefill-tok-s (sleep), or policy_sim.py's H200"
        " cost of its ubatches (h200; --step-ms and --prefill-tok-s unused)",
    )  # fmt: skip
    ap.add_argument("--engine-only", action="store_true", help="no HTTP: time the engine alone")
    ap.add_argument(
        "--overlap-output", type=int, choices=(0, 1), default=1,
        help="hand outputs over once the next decode has started (the server's default)",
    )  # fmt: skip
    ap.add_argument(
        "--switch-ms", type=float, default=None, help="GIL switch interval in ms (above 0)"
    )
    args = ap.parse_args()
    if args.switch_ms is not None and not args.switch_ms > 0:
        ap.error("--switch-ms must be above 0")
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    config = EngineConfig(
        model_path=Path("sim.gguf"),
        n_slots=args.slots,
        n_ctx=args.ctx_size,
        n_batch=args.batch_size,
        overlap_output=bool(args.overlap_output),
        short_queue=args.short_queue,
    )
    if args.engine_only:
        engine_only(SimRunner(args.slots, args.ctx_size, args.step_ms / 1000), config)
        return
    settings = Settings(
        model=Path("sim.gguf"), slots=args.slots, ctx_size=args.ctx_size, port=args.port,
        log_level="warning",
    )  # fmt: skip

    def loader(settings: Settings, observer: object) -> AsyncEngine:
        runner = (
            H200Runner(args.slots, args.ctx_size, min(config.n_ubatch, config.n_batch))
            if args.cost == "h200"
            else SimRunner(args.slots, args.ctx_size, args.step_ms / 1000, args.prefill_tok_s)
        )
        return AsyncEngine(Engine(runner, config, observer))  # type: ignore[arg-type]

    app = create_app(settings, loader)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
