"""What the scheduler plans for a step and what the engine hands back after it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batching.sequence import Sequence


@dataclass(slots=True)
class PrefillChunk:
    """Prompt tokens [start, end) of one sequence to compute in this step."""

    seq: Sequence
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Filler:
    """One throwaway token for a slot with nothing to compute this step, between slots that do.

    With a KV stream per slot llama.cpp cuts a batch into one pass over the weights per run
    of consecutive slot ids, so a slot left idle between busy ones (a request just ended and
    the next has not arrived yet) would cost the step a whole extra pass. The runner writes
    the token at the slot's next free position, asks for no logits and removes the cell after
    the decode, so the slot's cached cells are untouched.
    """

    slot_id: int


@dataclass(frozen=True, slots=True)
class KvOp:
    """A KV-cache edit to make before the step's decode.

    "rm": drop the cells of slot `dst` from position `pos` on. "cp": make slot `dst` share
    the cells of slot `src` for positions [0, pos) (after dropping everything `dst` held).
    """

    kind: str
    dst: int
    pos: int
    src: int = -1


@dataclass(slots=True)
class SchedulerOutput:
    """One step's work: one token for every decoding sequence plus prompt chunks.

    `entries` is the batch in the order llama.cpp gets it (by slot id; a decoding sequence
    stands for its one token, a chunk for its prompt tokens, a filler for one throwaway
    token). `sample_seqs[i]` takes its next token from logits row `sample_rows[i]`; forks
    share their parent's row in the step that completes the parent's prompt.
    """

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[PrefillChunk] = field(default_factory=list)
    kv_ops: list[KvOp] = field(default_factory=list)
    entries: list[Sequence | PrefillChunk | Filler] = field(default_factory=list)
    sample_seqs: list[Sequence] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.decode and not self.prefill

    @property
    def completes_prompt(self) -> bool:
        """Some prompt is computed to its end in this step (its first token is sampled)."""
        return any(c.end == c.seq.num_prompt_tokens for c in self.prefill)

    @property
    def num_tokens(self) -> int:
        return len(self.decode) + self.num_prefill_tokens

    @property
    def num_prefill_tokens(self) -> int:
        """Prompt tokens the step computes (its decode tokens and fillers left out)."""
        return sum(c.end - c.start for c in self.prefill)

    def runs(self) -> list[tuple[int, int]]:
        """(slot_id, number of tokens) of each entry, in batch order."""
        return [
            (e.seq.slot_id or 0, e.end - e.start)
            if isinstance(e, PrefillChunk)
            else (e.slot_id or 0, 1)
            for e in self.entries
        ]

    @property
    def num_fillers(self) -> int:
        return sum(isinstance(e, Filler) for e in self.entries)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the top alternatives."""

    token_id: int
    token: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()


@dataclass(slots=True)
class StepOutput:
    """New text of one sequence after one step; the last one has `finish_reason` set.

    `finish_reason` is "stop", "length", "abort" (client went away) or "error" (then `error`
    says why: the prompt does not fit, the KV cache is full, ...).
    """

    request_id: str
    index: int
    delta_text: str
    token_ids: list[int]
    finish_reason: str | None = None
    error: str | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_output_tokens: int = 0
    queue_s: float | None = None  # set on a sequence's first output: submit -> slot
    prefill_s: float | None = None  # set with its first token: slot -> first token sampled
    logprobs: list[TokenLogprob] | None = None

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class StepStats:
    """What one engine step did; handed to an observer (metrics) on the engine thread."""

    num_decode_seqs: int
    num_prefill_tokens: int
    num_seqs: int
    duration_s: float  # the whole step
    schedule_s: float  # planning the batch
    decode_s: float  # batch fill + llama_decode + sync (+ retries when the KV cache was full)
    sample_s: float  # logits processing and sampling of every row
    update_s: float  # detokenising, stop checks, building outputs
    num_ubatches: int = 1  # passes llama.cpp makes over the weights for this step's batch
