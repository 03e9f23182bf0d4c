"""The fixed set of KV-cache slots; a slot id is the llama.cpp sequence id of its cells."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_SHARED_PREFIX = 16  # tokens a free slot's cache must share to be chosen over the LRU slot


@dataclass(slots=True)
class Slot:
    """One slot: whether a sequence holds it, and which tokens its KV cells hold."""

    slot_id: int
    is_busy: bool = False
    cached: list[int] = field(default_factory=list)  # tokens whose cells are kept, by position
    last_used: int = 0


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Number of leading tokens two lists share.

    Token by token for the first few (distinct prompts part there), then by halving slices
    compared in C: a 1,000-token shared system prompt takes a few microseconds, not a
    thousand steps of Python, which matters because the scheduler asks for every waiting
    request against every free slot.
    """
    n = min(len(a), len(b))
    lo = 0
    while lo < min(n, 16):
        if a[lo] != b[lo]:
            return lo
        lo += 1
    hi = n  # a[:lo] == b[:lo]; the first difference, if any, is in [lo, hi)
    while hi - lo > 16:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    while lo < hi and a[lo] == b[lo]:
        lo += 1
    return lo


class SlotTable:
    """Hands out free slots, preferring the one whose cached tokens share the longest prefix."""

    def __init__(self, n_slots: int, prefix_cache: bool = True) -> None:
        self.slots = [Slot(i) for i in range(n_slots)]
        self.prefix_cache = prefix_cache
        self._clock = 0
        # kept up to date on every change: gauges read them after every engine step
        self.num_busy = 0
        self._num_idle_cells = 0

    @property
    def num_free(self) -> int:
        return len(self.slots) - self.num_busy

    def acquire(self, prompt_ids: list[int]) -> tuple[int, int]:
        """Take a free slot; return (slot_id, number of prompt tokens its cells already hold).

        Without a useful prefix, take the free slot with the lowest id: busy slots then stay
        contiguous, which keeps llama.cpp's ubatches few (see Scheduler.schedule).
        """
        best, best_len = self._choose(prompt_ids)
        best.is_busy = True
        self.num_busy += 1
        self._num_idle_cells -= len(best.cached)
        best.cached = best.cached[:best_len]
        return best.slot_id, best_len

    def cached_len(self, prompt_ids: list[int]) -> int:
        """Prompt tokens that acquire() would find cached now (nothing is taken)."""
        return self._choose(prompt_ids)[1]

    def _choose(self, prompt_ids: list[int]) -> tuple[Slot, int]:
        free = [s for s in self.slots if not s.is_busy]
        if not free:
            raise RuntimeError("no free slot")
        best, best_len = free[0], 0
        if self.prefix_cache:
            for s in free:
                n = common_prefix_len(s.cached, prompt_ids)
                if n > best_len:
                    best, best_len = s, n
            # Sharing only a BOS or a word is not worth wiping another warm cache for.
            if best_len < min(MIN_SHARED_PREFIX, len(prompt_ids) // 2 + 1):
                best = free[0]
                best_len = common_prefix_len(best.cached, prompt_ids)
        return best, best_len

    def release(self, slot_id: int, kv_tokens: list[int]) -> None:
        """Give a slot back; its cells keep `kv_tokens` for a later request to reuse."""
        slot = self.slots[slot_id]
        self._clock += 1
        slot.is_busy, slot.last_used = False, self._clock
        slot.cached = list(kv_tokens) if self.prefix_cache else []
        self.num_busy -= 1
        self._num_idle_cells += len(slot.cached)

    def forget(self, slot_id: int) -> None:
        """The slot's cells were cleared: nothing cached is left."""
        slot = self.slots[slot_id]
        if not slot.is_busy:
            self._num_idle_cells -= len(slot.cached)
        slot.cached = []

    def idle_cached(self) -> list[int]:
        """Free slots that still hold cells, least recently used first (eviction order)."""
        idle = [s for s in self.slots if not s.is_busy and s.cached]
        return [s.slot_id for s in sorted(idle, key=lambda s: s.last_used)]

    def num_cached_cells(self) -> int:
        """Cells held by free slots' caches."""
        return self._num_idle_cells
