"""Which sequences run in the next step, and what each sampled token does to its sequence."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from batching.layout import BatchLayout
from batching.outputs import (
    KvOp,
    PrefillChunk,
    SchedulerOutput,
    StepOutput,
    TokenLogprob,
)
from batching.sequence import Sequence, SequenceStatus
from batching.slots import SlotTable

KV_FULL_ERROR = "the KV cache is full: the request was stopped to let the others finish"
# Shortest prompt first, with aging: a waiting request ranks by its arrival time plus one
# second per AGING_TOKENS_PER_S prompt tokens it has to compute, at most MAX_HOLD_S, so a
# long prompt is overtaken only by requests that arrived less than that much later.
AGING_TOKENS_PER_S = 1000.0
MAX_HOLD_S = 2.0


class Scheduler:
    """Owns the waiting queue and the running sequences; the only code that mutates them."""

    def __init__(
        self,
        slots: SlotTable,
        n_batch: int,
        n_ctx: int,
        max_seq_len: int,
        eog_ids: frozenset[int],
        fill_gaps: bool = False,
        split_prompts: bool = False,
        shortest_first: bool = True,
        short_queue: int = -1,
        clock: Callable[[], float] = time.monotonic,
        max_call_tokens: int | None = None,
    ) -> None:
        self.slots = slots
        self.shortest_first = shortest_first  # False: first come, first served
        self.short_queue = short_queue  # at most this many waiting: a step may take 2 x n_batch
        self.clock = clock
        # what llama.cpp's batch holds (EngineConfig.max_call_tokens): the fillers fit under it
        max_call = max_call_tokens or n_batch
        self.layout = BatchLayout(slots, max_call, max_seq_len, fill_gaps)
        self.split_prompts = split_prompts  # a new prompt may take the step's leftover budget
        self.n_batch = n_batch
        self.n_ctx = n_ctx
        self.max_seq_len = max_seq_len
        self.eog_ids = eog_ids
        self.waiting: deque[list[Sequence]] = deque()  # one group (n choices) per request
        self.running: list[Sequence] = []
        self._kv_ops: list[KvOp] = []
        self._outputs: list[StepOutput] = []  # finishes that happened outside a step

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self._outputs)

    @property
    def num_waiting(self) -> int:
        return sum(len(g) for g in self.waiting)

    def add(self, group: list[Sequence]) -> None:
        """Queue the choices of one request; a prompt that cannot fit finishes at once."""
        n = group[0].num_prompt_tokens
        if n == 0 or n >= self.max_seq_len:
            why = (
                "the prompt is empty"
                if n == 0
                else f"the prompt has {n} tokens; this model's context holds {self.max_seq_len}"
            )
            for seq in group:
                self._finish(seq, SequenceStatus.FINISHED_ERROR, why)
            return
        self.waiting.append(group)

    def abort(self, request_id: str) -> None:
        """Finish every sequence of a request; its slots are free for the next step."""
        for group in [g for g in self.waiting if g[0].request_id == request_id]:
            self.waiting.remove(group)
            for seq in group:
                self._finish(seq, SequenceStatus.FINISHED_ABORTED)
        for seq in [s for s in self.running if s.request_id == request_id]:
            self._finish(seq, SequenceStatus.FINISHED_ABORTED)

    def take_kv_ops(self) -> list[KvOp]:
        """KV edits queued since the last plan (fork copies), for the next llama_decode."""
        ops, self._kv_ops = self._kv_ops, []
        return ops

    def take_outputs(self) -> list[StepOutput]:
        """Outputs of sequences that finished between steps (aborts, prompts that cannot fit)."""
        outs, self._outputs = self._outputs, []
        return outs

    def schedule(
        self, admit: bool = True, prompts: bool = True, late: int | None = None
    ) -> SchedulerOutput:
        """Plan one step under the `n_batch` token budget (`prompts=False`: decodes only;
        `late`: the rest of a step whose prompt calls ran, its decodes and the waiting prompts
        that fit whole in `late` tokens, see Engine._step).

        NOTE: every decoding sequence gets its one token first, so admitting new requests never
        stalls running streams; prompt chunks of sequences already prefilling come next (oldest
        first), then waiting requests are admitted while slots, budget and KV cells last,
        shortest prompt first (below). A request whose choices do not all find a slot waits:
        nobody overtakes it.

        NOTE: the waiting queue is served shortest prompt first, with aging: a request ranks
        by its arrival time plus 1 ms per prompt token it has to compute (cached prefix
        tokens excluded), at most 2 s (`shortest_first=False`: arrival order). A burst of
        prompts is then prefilled in the order that makes the sum of its waits the smallest,
        and a prompt is passed only by requests that arrived less than 2 s after it. The
        policy simulator put it ahead of arrival order on the mixed-length closed loop (TTFT
        p50 170 -> 146 ms, p90 -26%, throughput +2%) and on long-tailed lengths (p90 -42%, p50
        equal); equal-length traffic is unchanged. On the H200, with prompts first
        (Engine.step), the mixed TTFT p50 went from 197 to 181 ms (BENCHMARKS.md, run 9).

        NOTE: the batch is laid out in slot-id order, and free slots are handed out lowest id
        first. With a KV stream per slot llama.cpp runs one ubatch (a full pass over the
        weights) per run of consecutive slot ids it finds in batch order (batching/ubatch.py),
        so decode tokens in admission order shattered a 64-sequence step into tens of passes
        once requests of mixed lengths came and went. In slot order the decode tokens of the
        busy slots, which stay contiguous, share one ubatch with the first token of every
        prompt chunk; each prompt chunk's remaining tokens follow in ubatches of their own.

        NOTE: a waiting prompt starts only in a step that can finish it, unless no other
        prompt is in the step (a prompt longer than the budget then starts alone and is split
        over the steps that follow, first in line). Filling the budget's leftover with the
        head of a split prompt instead makes that prompt wait two steps for its first token
        and lengthens the step for everyone in it. The policy simulator
        (benchmarks/policy_sim.py, the H200 step costs) put the default ahead of
        `split_prompts` by 2-3% in throughput and 25-45% in TTFT p50 on equal-length traffic,
        and even on mixed and long-tailed lengths (p50 within 6%, p90 5-12% lower).

        NOTE: with `short_queue` N >= 0 (off by default), a step planned while at most N
        requests wait may take twice the `n_batch` budget (llama.cpp's batch is sized for it,
        EngineConfig.max_call_tokens). A short queue is stragglers, not a wave: in a closed
        loop of mixed lengths two long prompts often arrive during one step, and the one that
        did not fit waits for the whole next step, its decode call included. Over HTTP on the
        simulated H200 (`benchmarks/http_profile.py --cost h200`, three seeds) N = 2 took the
        mixed row's queue p50 from 29-64 to 28 ms and its TTFT p50 from 126 to 118 ms, the
        equal-length rows within their run-to-run spread. On the H200 (BENCHMARKS.md, run 23,
        one run of each row) the mixed queue p50 fell as simulated (53 to 22 ms) but the TTFT
        p50 did not: mixed 145 against 134 ms, c64 324 against 221, sampled chat 296 against
        347.
        Until more runs settle it, every step keeps its budget. Doubling it for everybody
        (`--batch-size 2048`) multiplied the TTFT p50 of equal-length traffic by 1.9-2.6 (run
        22: c64 486 against 185 ms, sampled chat 648 against 347). After a doubled step late
        arrivals get what the step left of one `n_batch` (Engine.step), usually nothing.

        NOTE: a slot whose request just ended stays idle until its client's next request
        arrives, a step or two later over HTTP. That gap between busy slots would split the
        decode tokens into two passes over the weights (a closed loop of mixed lengths over
        HTTP averaged 2.9 ubatches a step against 1.8 when the next request came at once), so
        the gap gets one throwaway token per idle slot (a Filler) when the budget allows.
        """
        out = SchedulerOutput(kv_ops=self._kv_ops)
        self._kv_ops = []
        for seq in self.running:
            if not seq.is_prefilling and not seq.is_fork_pending:
                out.decode.append(seq)
        budget = self.n_batch - len(out.decode) if prompts else 0
        if prompts and late is None and len(self.waiting) <= self.short_queue:
            budget += self.n_batch  # stragglers, not a wave (NOTE above)
        if late is not None:
            budget = min(budget, late)
        for seq in self.running:
            if seq.is_prefilling and seq.parent is None and budget > 0 and late is None:
                budget -= self._chunk(out, seq, budget)
        if admit and budget > 0 and self.shortest_first and self.slots.num_free:
            self._order_waiting()
        while admit and budget > 0 and self.waiting and self._can_admit(self.waiting[0]):
            if (late is not None or (out.prefill and not self.split_prompts)) and self._to_compute(
                self.waiting[0]
            ) > budget:
                break  # it starts next step, where it can finish
            group = self.waiting.popleft()
            for seq in group:
                self._admit(seq, group[0], out)
            budget -= self._chunk(out, group[0], budget)
        self.layout.lay_out(out, self.running)
        return out

    def prompt_calls(self, out: SchedulerOutput, each: bool = False) -> list[SchedulerOutput]:
        """A planned step's prompt chunks as llama_decode calls of their own (BatchLayout)."""
        return self.layout.prompt_calls(out, self.running, each)

    def update(
        self,
        out: SchedulerOutput,
        tokens: list[int],
        logprobs: list[TokenLogprob | None] | None = None,
    ) -> list[StepOutput]:
        """Apply the step's results: computed prompt chunks and one sampled token per sampler."""
        for chunk in out.prefill:
            chunk.seq.num_computed_tokens = chunk.end
        for seq in out.sample_seqs:
            if seq.is_fork_pending:  # before any token: a parent that stops now keeps its forks
                self._fork(seq)
        outputs = self.take_outputs()
        for i, seq in enumerate(out.sample_seqs):
            if seq.is_finished:
                continue
            lp = logprobs[i] if logprobs else None
            outputs.append(self._append_token(seq, tokens[i], lp))
        return outputs

    def fail_newest(self) -> list[int]:
        """The KV cache is full: stop the most recently admitted request, whichever call of
        the step it is in; return its slots."""
        victim = max(self.running, key=lambda s: s.admit_time or 0.0)
        freed = []
        for seq in [s for s in self.running if s.request_id == victim.request_id]:
            assert seq.slot_id is not None
            freed.append(seq.slot_id)
            self._finish(seq, SequenceStatus.FINISHED_ERROR, KV_FULL_ERROR)
            self.slots.forget(seq.slot_id)
        return freed

    def fail(self, seq: Sequence, why: str) -> None:
        """End one sequence with an error (its cells are to be cleared by the caller)."""
        self._finish(seq, SequenceStatus.FINISHED_ERROR, why)

    def num_cells_in_use(self) -> int:
        """KV cells held by running sequences plus the prefix caches of free slots."""
        return sum(s.num_tokens for s in self.running) + self.slots.num_cached_cells()

    # -- internals -------------------------------------------------------------------------

    def _can_admit(self, group: list[Sequence]) -> bool:
        if self.slots.num_free < len(group):
            return False
        if not self.running:
            return True
        # Leave room for the running sequences to grow: admit only what the free cells hold.
        busy = sum(s.num_tokens for s in self.running)
        return busy + group[0].num_prompt_tokens + len(self.running) < self.n_ctx

    def _order_waiting(self) -> None:
        """Shortest prompt first, aged (AGING_TOKENS_PER_S, MAX_HOLD_S); the length is what
        is left to compute, so a follow-up turn whose history a free slot holds ranks by its
        new tokens (a stable sort: equal keys keep their arrival order)."""
        if len(self.waiting) > 1:
            self.waiting = deque(sorted(self.waiting, key=self._rank))

    def _rank(self, group: list[Sequence]) -> float:
        hold = min(self._to_compute(group) / AGING_TOKENS_PER_S, MAX_HOLD_S)
        return group[0].arrival_time + hold

    def _to_compute(self, group: list[Sequence]) -> int:
        """Prompt tokens a waiting request would compute: those no free slot holds yet."""
        n = group[0].num_prompt_tokens
        return n - min(self.slots.cached_len(group[0].prompt_ids), n - 1)

    def _admit(self, seq: Sequence, parent: Sequence, out: SchedulerOutput) -> None:
        slot_id, num_cached = self.slots.acquire(seq.prompt_ids)
        seq.slot_id, seq.status, seq.admit_time = slot_id, SequenceStatus.RUNNING, self.clock()
        self.running.append(seq)
        if seq is not parent:
            seq.parent = parent
            return
        # at least the last prompt token is computed again: its logits give the first token
        seq.num_computed_tokens = seq.num_cached_tokens = min(num_cached, seq.num_prompt_tokens - 1)
        out.kv_ops.append(KvOp("rm", slot_id, seq.num_computed_tokens))

    def _chunk(self, out: SchedulerOutput, seq: Sequence, budget: int) -> int:
        start = seq.num_computed_tokens
        end = min(seq.num_prompt_tokens, start + budget)
        out.prefill.append(PrefillChunk(seq, start, end))
        return end - start

    def _fork(self, seq: Sequence) -> None:
        parent = seq.parent
        assert parent is not None and parent.slot_id is not None and seq.slot_id is not None
        n = seq.num_prompt_tokens
        self._kv_ops.append(KvOp("cp", seq.slot_id, n, src=parent.slot_id))
        seq.is_forked, seq.num_computed_tokens = True, n
        seq.num_cached_tokens = parent.num_cached_tokens

    def _append_token(self, seq: Sequence, token: int, lp: TokenLogprob | None) -> StepOutput:
        seq.output_ids.append(token)
        params = seq.params
        text, status = "", None
        if (token in self.eog_ids and not params.ignore_eos) or token in params.stop_token_ids:
            status = SequenceStatus.FINISHED_STOPPED
            text = self._flush(seq)
        else:
            text, hit = seq.stop_checker.push(seq.detokenizer.push(token))
            if hit:
                status = SequenceStatus.FINISHED_STOPPED
            elif len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.max_seq_len:
                status = SequenceStatus.FINISHED_LENGTH
                text += self._flush(seq)
        out = self._output(seq, text, [token], [lp] if lp is not None else None)
        if status is not None:
            self._finish(seq, status, emit=False)
            out.finish_reason = seq.finish_reason
        return out

    @staticmethod
    def _flush(seq: Sequence) -> str:
        text, hit = seq.stop_checker.push(seq.detokenizer.flush())
        return text if hit else text + seq.stop_checker.flush()

    def _output(
        self,
        seq: Sequence,
        text: str,
        token_ids: list[int],
        lps: list[TokenLogprob] | None,
    ) -> StepOutput:
        queue_s = prefill_s = None
        if not seq.has_reported_queue and seq.admit_time is not None:
            seq.has_reported_queue = True
            queue_s = seq.admit_time - seq.arrival_time
        if token_ids and not seq.has_reported_prefill and seq.admit_time is not None:
            seq.has_reported_prefill = True
            prefill_s = self.clock() - seq.admit_time
        return StepOutput(
            request_id=seq.request_id,
            index=seq.index,
            delta_text=text,
            token_ids=token_ids,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            num_output_tokens=len(seq.output_ids),
            queue_s=queue_s,
            prefill_s=prefill_s,
            logprobs=lps,
        )

    def _finish(
        self,
        seq: Sequence,
        status: SequenceStatus,
        error: str | None = None,
        emit: bool = True,
    ) -> None:
        if seq.is_finished:  # a fork already ended with its parent
            return
        seq.status, seq.error = status, error
        seq.sampling.close()
        if seq in self.running:
            self.running.remove(seq)
            assert seq.slot_id is not None
            kv = [] if seq.is_fork_pending else seq.kv_tokens()
            self.slots.release(seq.slot_id, kv)
        for fork in [s for s in self.running if s.parent is seq and s.is_fork_pending]:
            self._finish(fork, status, error)  # choices that never got the prompt end with it
        if emit:
            out = self._output(seq, "", [], None)
            out.finish_reason, out.error = seq.finish_reason, error
            self._outputs.append(out)
