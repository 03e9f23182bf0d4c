"""Engine configuration: the llama.cpp context and the scheduler's limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs to load a model and run its batch."""

    model_path: Path
    n_slots: int = 8  # parallel sequences = llama.cpp seq ids
    n_ctx: int = 4096  # KV-cache cells of all slots together (split evenly unless kv_unified)
    n_batch: int = 2048  # a step's tokens (decode tokens + prefill chunks), see short_queue
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    n_threads: int | None = None  # llama.cpp's CPU threads; None = by offload (see runner)
    sampler_threads: int = 1  # threads that sample a step's rows (the kernels release the GIL)
    flash_attn: bool = True
    max_queue: int = 256  # waiting requests beyond the slots before submit() refuses
    max_seq_len: int | None = None  # per-request prompt + output cap; None = a slot's cells
    prefix_cache: bool = True
    # A waiting prompt starts only in a step that can finish it, unless no other prompt is in
    # that step (Scheduler.schedule says why); True lets it fill the step's leftover budget.
    split_prompts: bool = False
    # A step that completes a prompt while others decode runs the prompts first, in a
    # llama_decode of their own, so their first tokens do not wait for the decode pass.
    prompts_first: bool = True
    # Each prompt that a step finishes runs in a llama_decode of its own, shortest first,
    # where that costs no extra pass over the weights (Engine.step says why).
    prompt_per_call: bool = True
    # Requests sent while a step's prompts compute may join that step's later calls, when
    # the engine is given a poll (Engine.step says why).
    admit_late: bool = True
    # A step planned while at most this many requests wait may take twice n_batch tokens
    # (Scheduler.schedule says why); -1: never, the default. llama.cpp's batch is then sized
    # for that step.
    short_queue: int = -1
    # The waiting request with the shortest prompt is admitted first, aged by its wait
    # (Scheduler.schedule says why); False admits in arrival order.
    shortest_first: bool = True
    # A step's outputs go to the event loop when the next llama_decode has started, so that
    # turning them into SSE events overlaps the GPU's work (Engine.step says why).
    overlap_output: bool = True
    # One pool of cells for all slots lets a long request borrow room from short ones, but
    # llama.cpp's attention over the shared pool is slower: on an H200 with 64 sequences of a 7B
    # model a decode step took 28 ms unified against 16 ms with a stream per sequence.
    kv_unified: bool = False

    def __post_init__(self) -> None:
        if self.n_slots < 1:
            raise ValueError("n_slots must be at least 1")
        if self.n_ctx < 16:
            raise ValueError("n_ctx must be at least 16")
        if self.n_batch < self.n_slots:
            raise ValueError("n_batch must be at least n_slots (one decode token per slot)")
        if self.sampler_threads < 1:
            raise ValueError("sampler_threads must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
        if self.short_queue < -1:
            raise ValueError("short_queue must be -1 (never) or more")

    @property
    def max_call_tokens(self) -> int:
        """Most tokens one llama_decode gets: twice n_batch where a short queue can double a
        step's budget."""
        return 2 * self.n_batch if self.short_queue >= 0 else self.n_batch
