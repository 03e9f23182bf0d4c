"""The engine: a synchronous step() over the running batch, and its asyncio front door."""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from batching.config import EngineConfig
from batching.detokenizer import IncrementalDetokenizer
from batching.info import EngineStats, ModelInfo
from batching.outputs import SchedulerOutput, StepOutput, StepStats
from batching.params import ParamError, SamplingParams
from batching.runner import ModelRunner
from batching.sampler import SamplingState, sample
from batching.scheduler import Scheduler
from batching.sequence import Sequence
from batching.slots import SlotTable
from batching.stop import StopChecker

__all__ = [
    "AsyncEngine",
    "Engine",
    "EngineStats",
    "EngineUnavailableError",
    "ModelInfo",
    "QueueFullError",
]

StepObserver = Callable[[StepStats], None]


class Engine:
    """Continuous batching over one llama.cpp context; every method runs on one thread."""

    def __init__(
        self,
        runner: ModelRunner,
        config: EngineConfig,
        observer: StepObserver | None = None,
    ) -> None:
        self.runner = runner
        self.config = config
        self.slots = SlotTable(config.n_slots, config.prefix_cache)
        max_seq_len = min(runner.info.n_ctx, config.max_seq_len or runner.info.n_ctx)
        self.scheduler = Scheduler(
            self.slots, config.n_batch, config.n_ctx, max_seq_len, runner.eog_ids
        )
        self.observer = observer

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def new_sequences(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int = 1,
    ) -> list[Sequence]:
        """Build the n choices of a request (thread-safe: it only reads the vocabulary)."""
        if not 1 <= n <= self.config.n_slots:  # the choices run side by side, one slot each
            raise ParamError("n", f"n must be between 1 and the {self.config.n_slots} slots")
        seqs: list[Sequence] = []
        now = time.monotonic()
        try:
            for i in range(n):
                seed = params.seed + i if params.seed is not None else secrets.randbits(63)
                grammar = self.runner.make_grammar(params.grammar) if params.grammar else None
                seqs.append(
                    Sequence(
                        request_id=request_id,
                        index=i,
                        prompt_ids=prompt_ids,
                        params=params,
                        detokenizer=IncrementalDetokenizer(self.runner.pieces),
                        stop_checker=StopChecker(params.stop),
                        sampling=SamplingState(params, seed, prompt_ids, grammar),
                        arrival_time=now,
                    )
                )
        except ValueError as e:
            for seq in seqs:
                seq.sampling.close()
            raise ParamError("grammar", str(e)) from e
        return seqs

    def add(self, seqs: list[Sequence]) -> None:
        self.scheduler.add(seqs)

    def abort(self, request_id: str) -> None:
        self.scheduler.abort(request_id)

    def step(self) -> list[StepOutput]:
        """Schedule, run one llama_decode for the whole batch, sample every row, update."""
        start = time.perf_counter()
        out: SchedulerOutput | None = self.scheduler.schedule()
        if out is None or out.is_empty:
            if out is not None:  # cache edits queued by the last step (fork copies) still apply
                self.runner.apply_kv_ops(out.kv_ops)
            return self.scheduler.take_outputs()
        scheduled = time.perf_counter()
        out = self._forward(out)
        decoded = time.perf_counter()
        if out is None:
            return self.scheduler.take_outputs()
        tokens, logprobs = sample(
            self.runner.logits(),
            out.sample_rows,
            [s.sampling for s in out.sample_seqs],
            self.runner.pieces,
        )
        sampled = time.perf_counter()
        outputs = self.scheduler.update(out, tokens, logprobs)
        if self.observer is not None:
            end = time.perf_counter()
            self.observer(
                StepStats(
                    num_decode_seqs=len(out.decode),
                    num_prefill_tokens=out.num_tokens - len(out.decode),
                    num_seqs=len(out.decode) + len(out.prefill),
                    duration_s=end - start,
                    schedule_s=scheduled - start,
                    decode_s=decoded - scheduled,
                    sample_s=sampled - decoded,
                    update_s=end - sampled,
                )
            )
        return outputs

    def _forward(self, out: SchedulerOutput) -> SchedulerOutput | None:
        """Decode; when the KV cache is full, evict idle prefix caches, then stop the newest."""
        while True:
            self.runner.apply_kv_ops(out.kv_ops)
            rc = self.runner.forward(out)
            if rc == 0:
                return out
            if rc == 1 and (idle := self.slots.idle_cached()):
                for slot_id in idle:
                    self.runner.clear_slot(slot_id)
                    self.slots.forget(slot_id)
            elif rc == 1:
                for slot_id in self.scheduler.fail_newest(out):
                    self.runner.clear_slot(slot_id)
            else:
                self._fail_all(out, f"llama_decode failed with code {rc}")
                return None
            out = self.scheduler.schedule(admit=False)
            if out.is_empty:
                return None

    def _fail_all(self, out: SchedulerOutput, why: str) -> None:
        for seq in {id(s): s for s in out.decode + [c.seq for c in out.prefill]}.values():
            assert seq.slot_id is not None
            slot_id = seq.slot_id
            self.scheduler.fail(seq, why)
            self.runner.clear_slot(slot_id)
            self.slots.forget(slot_id)

    def stats(self) -> EngineStats:
        sched = self.scheduler
        return EngineStats(
            running=len({s.request_id for s in sched.running}),
            waiting=len(sched.waiting),
            slots_busy=self.slots.num_busy,
            slots_total=len(self.slots.slots),
            kv_cells_used=min(sched.num_cells_in_use(), self.config.n_ctx),
            kv_cells_total=self.config.n_ctx,
        )


class EngineUnavailableError(RuntimeError):
    """The engine thread is not running (not started yet, shut down, or failed)."""


class QueueFullError(RuntimeError):
    """The waiting queue is full; the client should retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the server is at capacity: too many requests are waiting")
        self.retry_after_s = retry_after_s


class RequestStream:
    """The outputs of one request's choices, in order; closing it early aborts the request."""

    def __init__(self, engine: AsyncEngine, request_id: str, n: int) -> None:
        self._engine = engine
        self.request_id = request_id
        self._queue: asyncio.Queue[StepOutput] = asyncio.Queue()
        self._remaining = n

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self

    async def __anext__(self) -> StepOutput:
        if self._remaining == 0:
            raise StopAsyncIteration
        try:
            out = await self._queue.get()
        except BaseException:  # cancelled: the client went away
            await self.aclose()
            raise
        if out.finish_reason is not None:
            self._remaining -= 1
            if self._remaining == 0:
                self._engine._forget(self.request_id)
        return out

    async def aclose(self) -> None:
        """Stop listening; an unfinished request is aborted and its slot freed."""
        if self._remaining:
            self._remaining = 0
            self._engine._forget(self.request_id)
            self._engine.abort(self.request_id)


class AsyncEngine:
    """Runs the Engine on its own thread; asyncio code submits, aborts and awaits outputs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.model: ModelInfo = engine.runner.info
        self._max_queue = engine.config.max_queue
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}
        self._num_seqs = 0  # sequences submitted and not finished, counted on the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stats = engine.stats()
        self.is_ready = False

    @classmethod
    def load(cls, config: EngineConfig, observer: StepObserver | None = None) -> AsyncEngine:
        """Load the model (blocking: seconds for a 7B model) and build the engine."""
        from batching.runner import LlamaRunner

        return cls(Engine(LlamaRunner(config), config, observer))

    def start(self) -> None:
        """Start the engine thread; call from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        self.is_ready = True

    def shutdown(self) -> None:
        """Stop the engine thread and free llama.cpp's memory."""
        self.is_ready = False
        if self._thread is not None:
            self._commands.put(("stop", None))
            self._thread.join(timeout=30)
            self._thread = None
        self._engine.runner.close()

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        return self._engine.runner.tokenize(text, add_bos, parse_special)

    def detokenize(self, ids: list[int]) -> str:
        pieces = self._engine.runner.pieces
        return b"".join(pieces[t] for t in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._engine.runner.pieces[token_id]

    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int = 1,
    ) -> RequestStream:
        """Queue a request; iterate the result for its outputs (QueueFullError when full)."""
        slots = self.model.n_slots
        if self._num_seqs + n > slots + self._max_queue:
            waiting = max(self._num_seqs - slots, 0)
            raise QueueFullError(retry_after_s=float(min(60, 1 + math.ceil(waiting / slots))))
        if not self.is_ready:
            raise EngineUnavailableError("the engine is not running; try again later")
        seqs = self._engine.new_sequences(request_id, prompt_ids, params, n)
        stream = RequestStream(self, request_id, n)
        self._streams[request_id] = stream
        self._num_seqs += n
        self._commands.put(("add", seqs))
        return stream

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def stats(self) -> EngineStats:
        return self._stats

    def _forget(self, request_id: str) -> None:
        self._streams.pop(request_id, None)

    # -- engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._handle_commands(block=not self._engine.has_work):
                if self._engine.has_work:
                    self._publish(self._engine.step())
                self._stats = self._engine.stats()
        except Exception:
            logger.exception("the engine thread failed; the server stops taking requests")
            self.is_ready = False
            self._call_soon(self._fail_all)

    def _handle_commands(self, block: bool) -> bool:
        try:
            cmd = self._commands.get(block=block)
        except queue.Empty:
            return True
        while True:
            kind, arg = cmd
            if kind == "stop":
                return False
            if kind == "add":
                self._engine.add(arg)
            else:
                self._engine.abort(arg)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
        self._stats = self._engine.stats()
        return True

    def _publish(self, outputs: list[StepOutput]) -> None:
        if outputs:
            self._call_soon(self._deliver, outputs)

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            if out.finish_reason is not None:
                self._num_seqs = max(self._num_seqs - 1, 0)
            stream = self._streams.get(out.request_id)
            if stream is not None:
                stream._queue.put_nowait(out)

    def _fail_all(self) -> None:
        for request_id, stream in list(self._streams.items()):
            for index in range(stream._remaining):
                stream._queue.put_nowait(
                    StepOutput(
                        request_id,
                        index,
                        "",
                        [],
                        finish_reason="error",
                        error="the engine stopped unexpectedly",
                    )
                )


logger = logging.getLogger("batching.engine")
