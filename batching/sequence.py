"""Engine-side state of one generated sequence (one choice of one request)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from batching.detokenizer import IncrementalDetokenizer
from batching.params import SamplingParams
from batching.sampling_state import SamplingState
from batching.stop import StopChecker


class SequenceStatus(enum.Enum):
    """Life of a sequence; the slot it holds follows it.

    WAITING --admit (slot acquired)--> RUNNING --finish--> FINISHED_* (slot released; its KV
    cells stay as a prefix cache until the slot is reused or the cells are needed).
    A WAITING sequence can go straight to FINISHED_ABORTED (client gone) or FINISHED_ERROR
    (prompt cannot fit). A RUNNING sequence is prefilling while num_computed_tokens <
    num_prompt_tokens, and decoding after that. A fork (choice 1..n-1 of an n>1 request) is
    RUNNING without work of its own until its parent's prompt is in the cache.
    """

    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED_STOPPED = enum.auto()
    FINISHED_LENGTH = enum.auto()
    FINISHED_ABORTED = enum.auto()
    FINISHED_ERROR = enum.auto()

    @property
    def is_finished(self) -> bool:
        return self not in (SequenceStatus.WAITING, SequenceStatus.RUNNING)


FINISH_REASON: dict[SequenceStatus, str] = {
    SequenceStatus.FINISHED_STOPPED: "stop",
    SequenceStatus.FINISHED_LENGTH: "length",
    SequenceStatus.FINISHED_ABORTED: "abort",
    SequenceStatus.FINISHED_ERROR: "error",
}


@dataclass(eq=False, slots=True)
class Sequence:
    """One sequence: its prompt, what it generated so far, and where it lives in the KV cache."""

    request_id: str
    index: int
    prompt_ids: list[int]
    params: SamplingParams
    detokenizer: IncrementalDetokenizer
    stop_checker: StopChecker
    sampling: SamplingState
    arrival_time: float
    output_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    slot_id: int | None = None
    num_computed_tokens: int = 0  # prompt tokens whose KV cells exist in the slot
    num_cached_tokens: int = 0  # of those, reused from an earlier request's cells
    parent: Sequence | None = None  # for forks: the choice-0 sequence that computes the prompt
    is_forked: bool = False  # a fork whose parent's prompt cells were copied into its slot
    admit_time: float | None = None
    error: str | None = None
    has_reported_queue: bool = False
    has_reported_prefill: bool = False

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed_tokens < len(self.prompt_ids)

    @property
    def is_fork_pending(self) -> bool:
        return self.parent is not None and not self.is_forked

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def finish_reason(self) -> str | None:
        return FINISH_REASON.get(self.status)

    def kv_tokens(self) -> list[int]:
        """The tokens whose KV cells this sequence's slot holds, position by position."""
        if self.is_prefilling or not self.output_ids:
            return self.prompt_ids[: self.num_computed_tokens]
        # the last sampled token has not been decoded yet
        return self.prompt_ids + self.output_ids[:-1]
