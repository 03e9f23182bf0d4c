"""The engine: a synchronous step() over the running batch (async_engine.py drives it)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from batching.config import EngineConfig
from batching.detokenizer import IncrementalDetokenizer
from batching.info import EngineStats, ModelInfo
from batching.outputs import PrefillChunk, SchedulerOutput, StepOutput, StepStats
from batching.params import ParamError, SamplingParams
from batching.runner import ModelRunner
from batching.sampler import Sampler
from batching.sampling_state import SamplingState
from batching.scheduler import Scheduler
from batching.sequence import Sequence
from batching.slots import SlotTable
from batching.stop import StopChecker
from batching.ubatch import count_ubatches

__all__ = [
    "Emit",
    "Engine",
    "EngineStats",
    "EngineUnavailableError",
    "ModelInfo",
    "QueueFullError",
    "StepObserver",
]

StepObserver = Callable[[StepStats], None]
Emit = Callable[[list[StepOutput]], None]


class Engine:
    """Continuous batching over one llama.cpp context; every method runs on one thread."""

    def __init__(
        self,
        runner: ModelRunner,
        config: EngineConfig,
        observer: StepObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.clock = clock  # arrival and admission times (a simulation passes its own)
        self.config = config
        # a recurrent memory cannot cut a sequence's state back to a shared prefix
        self.slots = SlotTable(config.n_slots, config.prefix_cache and not runner.info.is_recurrent)
        max_seq_len = min(runner.info.n_ctx, config.max_seq_len or runner.info.n_ctx)
        self.scheduler = Scheduler(
            self.slots,
            config.n_batch,
            config.n_ctx,
            max_seq_len,
            runner.eog_ids,
            # a unified cache splits by size, recurrent memories cannot drop a filler's state
            fill_gaps=not config.kv_unified and not runner.info.is_recurrent,
            split_prompts=config.split_prompts,
            shortest_first=config.shortest_first,
            short_queue=config.short_queue,
            clock=clock,
            max_call_tokens=config.max_call_tokens,
        )
        self.observer = observer
        self.sampler = Sampler(config.sampler_threads)
        self._held: list[StepOutput] = []  # outputs for `emit` when the next decode starts
        # on the CPU the next decode is done when it returns: holding would only delay them
        self._overlap = config.overlap_output and runner.decodes_async

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._held)

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
        now = self.clock()
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

    def step(
        self, emit: Emit | None = None, poll: Callable[[], None] | None = None
    ) -> list[StepOutput]:
        """Schedule, run llama_decode over the batch, sample every row, update; the outputs
        to hand out now.

        NOTE: with `emit`, a step's outputs are held and handed to `emit` just after the next
        llama_decode has started, so the event loop turns them into SSE events while the GPU
        computes, not just when this thread needs the GIL to plan and start that decode:
        CPython gives the GIL to a waiting thread only when the holder blocks or after the
        switch interval (5 ms), and an event loop busy with 64 streams rarely blocks. On the
        H200 (BENCHMARKS.md, runs 11 and 12) this took a 64-stream step over HTTP from
        19.6-20.1 to 16.4-16.7 ms (ITL p50; the engine alone: 17.3) and fixed C=64 from 79-80%
        to 89% of llama-batched-bench's ceiling. Before a llama_decode of several ubatches the
        held outputs go out first instead: it returns only once all but its last ubatch have
        run (llama.cpp waits for the device before it copies each ubatch's inputs), and they
        would wait behind that prefill. With nothing left running they are returned at once;
        `overlap_output=False`, or a runner whose decode is done when forward() returns (the
        CPU), returns every step's outputs at once.

        NOTE: a step that completes a prompt while others decode runs as two llama_decode
        calls, the prompt chunks first: the new sequences' first tokens go out as the decode
        tokens' pass starts, instead of after it, and the new sequences decode their second
        token in that pass. In one call a first token waits for the whole batch, decode pass
        included (about 16-27 ms of a 7B model's step on the H200 with 64 streams). A step is
        split only where llama.cpp cuts it into as many passes over the weights either way
        (`_split_is_free`); `prompts_first=False` keeps one call.

        NOTE: each prompt the step finishes gets a llama_decode of its own, shortest first,
        where that makes no more passes either (two prompts in neighbouring slots can share
        one); a short prompt's first token then goes out without waiting for the longer ones.
        `prompt_per_call=False` runs them in one call.

        NOTE: with `poll` (AsyncEngine takes the requests and aborts sent meanwhile), the step
        plans its decode call again after its prompt calls, and admits what arrived: waiting
        prompts that fit whole into what the step left of its `n_batch` budget, or into a
        budget of their own if nothing was left waiting once the step was planned (where that
        costs no extra pass, they get prompt calls of their own before the decode call). In a
        closed loop a client sends its next request just after its last token goes out, which
        is when the next step's first llama_decode starts; the request missed that step's plan
        and waited for all of it, a prompt call of up to about 90 ms and the decode call on
        the H200. With a backlog, late arrivals take only the leftover, so a wave of requests
        is not admitted faster than before; in the policy simulator a whole budget for them
        whatever the queue held synchronised the equal-length rows into waves (TTFT p50
        5-7x). On the H200 (BENCHMARKS.md, runs 16-20) both NOTEs together took the
        mixed-length TTFT p50 from 169 to 137 ms in one run (llama-server 141; 146-156
        against 138-148 in three more runs) and long-tailed from 88 to 64 ms, throughput
        within 2% on every row. The equal-length rows' TTFT p50, bimodal between runs, went
        up in that run (c64 208 to 239 ms, greedy chat 198 to 236) and down on sampled chat
        (304 to 282), their means down on all three (c64 461 to 432, chat 627-633 to
        586-588), and it stayed below llama-server's in all four runs. `admit_late=False`
        admits only when a step is planned.
        """
        outputs = self._step(emit, poll)
        if emit is None or not self._overlap:
            return self._take_held() + outputs
        self._held += outputs
        # held only while something runs: its next decode hands them out
        return [] if self.scheduler.running else self._take_held()

    def _step(self, emit: Emit | None, poll: Callable[[], None] | None) -> list[StepOutput]:
        start = time.perf_counter()
        planned = self.scheduler.schedule()
        if planned.is_empty:
            self.runner.apply_kv_ops(planned.kv_ops)  # fork copies queued by the last step
            return self._take_held() + self.scheduler.take_outputs()
        # what late arrivals may take (NOTE in step): a budget of their own if nobody is left
        # waiting once the step is planned
        late = self.config.n_batch
        if self.scheduler.waiting:
            late -= planned.num_tokens
        outputs: list[StepOutput] = []
        while calls := self._prompt_calls(planned):
            for call in calls:
                # fork copies queued by an earlier call: made before this one can evict their
                # source (the parent's slot, if the parent ended on its first token)
                call.kv_ops += self.scheduler.take_kv_ops()
                outs, ran = self._run(call, start, emit)
                if ran is None or ran.decode:  # failed, or the KV cache was full and all ran
                    return outputs + outs
                if emit is not None and self._overlap:
                    self._held += outs
                elif emit is not None:
                    emit(outs)
                else:
                    outputs += outs
                start = time.perf_counter()
            if poll is not None and self.config.admit_late:
                poll()
                planned = self.scheduler.schedule(late=late)
                late -= planned.num_prefill_tokens
            else:
                planned = self.scheduler.schedule(admit=False, prompts=False)
            if planned.is_empty:  # the new sequences ended on their first token (or aborted)
                self.runner.apply_kv_ops(planned.kv_ops)  # their forks' copies
                return self._take_held() + outputs + self.scheduler.take_outputs()
        return outputs + self._run(planned, start, emit)[0]

    def _prompt_calls(self, planned: SchedulerOutput) -> list[SchedulerOutput]:
        """The llama_decode calls that run a step's prompts before its decodes; none if the
        step runs as one call (NOTE in step)."""
        if not (self.config.prompts_first and planned.decode and planned.completes_prompt):
            return []
        calls = self.scheduler.prompt_calls(planned, each=self.config.prompt_per_call)
        if len(calls) > 1 and not self._split_is_free(planned, calls):
            calls = self.scheduler.prompt_calls(planned)
        return calls if self._split_is_free(planned, calls) else []

    def _take_held(self) -> list[StepOutput]:
        held, self._held = self._held, []
        return held

    def _split_is_free(self, planned: SchedulerOutput, calls: list[SchedulerOutput]) -> bool:
        """The prompt calls and the decodes' call make no more passes over the weights than
        the whole step would: not so with a unified KV cache (llama.cpp packs prompt and
        decode tokens into the same ubatches) or a prompt with one token left to compute
        (it rides in the decode tokens' pass). The decodes' call has one token for every
        entry of the step but the unfinished prompt chunks: a finished prompt decodes there."""
        runs = planned.runs()
        decodes = [
            (slot, 1)
            for (slot, _), e in zip(runs, planned.entries, strict=True)
            if not isinstance(e, PrefillChunk) or e.end == e.seq.num_prompt_tokens
        ]
        split = sum(self._ubatches(c.runs()) for c in calls) + self._ubatches(decodes)
        return split <= self._ubatches(runs)

    def _ubatches(self, runs: list[tuple[int, int]]) -> int:
        return count_ubatches(
            runs,
            min(self.config.n_ubatch, self.config.n_batch),
            sequential=not self.config.kv_unified,
        )

    def _run(
        self, planned: SchedulerOutput, start: float, emit: Emit | None
    ) -> tuple[list[StepOutput], SchedulerOutput | None]:
        """One llama_decode, sampling and update; the outputs and the plan that ran (None if
        the decode failed). The held outputs go to `emit` while the GPU computes."""
        scheduled = time.perf_counter()
        num_ubatches = self._ubatches(planned.runs())
        if emit is not None and self._held and num_ubatches > 1:
            emit(self._take_held())  # llama_decode returns only once all but its last pass ran
        out = self._forward(planned)
        if out is None:
            return self._take_held() + self.scheduler.take_outputs(), None
        if emit is not None and self._held:
            emit(self._take_held())
        logits = self.runner.logits()  # waits for the decode
        decoded = time.perf_counter()
        tokens, logprobs = self.sampler.sample(
            logits,
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
                    num_prefill_tokens=out.num_prefill_tokens,
                    num_seqs=len(out.decode) + len(out.prefill),
                    duration_s=end - start,
                    schedule_s=scheduled - start,
                    decode_s=decoded - scheduled,
                    sample_s=sampled - decoded,
                    update_s=end - sampled,
                    # a full KV cache made _forward run another plan
                    num_ubatches=num_ubatches if out is planned else self._ubatches(out.runs()),
                )
            )
        return outputs, out

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
                for slot_id in self.scheduler.fail_newest():
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

    def close(self) -> None:
        """Free the sampler's threads and llama.cpp's memory."""
        self.sampler.close()
        self.runner.close()

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
