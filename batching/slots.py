"""The fixed set of KV-cache slots; a slot id is the llama.cpp sequence id of its cells."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_SHARED_PREFIX = 16  # tokens a free slot's cache must share to be chosen over the lowest free
BLOCK = 16  # tokens per hashed block of the free slots' prefix index


@dataclass(slots=True)
class Slot:
    """One slot: whether a sequence holds it, and which tokens its KV cells hold."""

    slot_id: int
    is_busy: bool = False
    cached: list[int] = field(default_factory=list)  # tokens whose cells are kept, by position
    last_used: int = 0
    indexed_hashes: list[int] = field(default_factory=list)  # block_hashes(cached) while free


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Number of leading tokens two lists share.

    Token by token for the first few (distinct prompts part there), then by halving slices
    compared in C: a 1,000-token shared system prompt takes about 14 us (token ids as the
    tokenizer returns them), not a thousand steps of Python.
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


def chain_hash(previous: int, block: list[int]) -> int:
    """The hash of a block of tokens after the blocks that `previous` stands for."""
    return hash((previous, *block))


def block_hashes(tokens: list[int]) -> list[int]:
    """A chained hash for every whole BLOCK of tokens: the k-th stands for tokens[: k * BLOCK]."""
    hashes, h = [], 0
    for end in range(BLOCK, len(tokens) + 1, BLOCK):
        h = chain_hash(h, tokens[end - BLOCK : end])
        hashes.append(h)
    return hashes


class SlotTable:
    """Hands out free slots, preferring the one whose cached tokens share the longest prefix."""

    def __init__(self, n_slots: int, prefix_cache: bool = True) -> None:
        self.slots = [Slot(i) for i in range(n_slots)]
        self.prefix_cache = prefix_cache
        self._clock = 0
        # kept up to date on every change: gauges read them after every engine step
        self.num_busy = 0
        self._num_idle_cells = 0
        # free slots by the chained hash of each whole block of their cached tokens
        self._index: dict[int, set[int]] = {}

    @property
    def num_free(self) -> int:
        return len(self.slots) - self.num_busy

    def acquire(self, prompt_ids: list[int]) -> tuple[int, int]:
        """Take a free slot; return (slot_id, number of prompt tokens its cells already hold).

        Without a useful prefix, take the free slot with the lowest id: busy slots then stay
        contiguous, which keeps llama.cpp's ubatches few (see Scheduler.schedule).
        """
        best, best_len = self._choose(prompt_ids)
        self._unindex(best)
        best.is_busy = True
        self.num_busy += 1
        self._num_idle_cells -= len(best.cached)
        best.cached = best.cached[:best_len]
        return best.slot_id, best_len

    def cached_len(self, prompt_ids: list[int]) -> int:
        """Prompt tokens that acquire() would find cached now (nothing is taken)."""
        return self._choose(prompt_ids)[1]

    def _choose(self, prompt_ids: list[int]) -> tuple[Slot, int]:
        lowest = next((s for s in self.slots if not s.is_busy), None)
        if lowest is None:
            raise RuntimeError("no free slot")
        if not self.prefix_cache:
            return lowest, 0
        best, best_len = self._longest_indexed(prompt_ids)
        if best is None:  # no whole block shared (or a hash collision): compare each free slot
            best, best_len = lowest, 0
            for s in self.slots:
                n = 0 if s.is_busy else common_prefix_len(s.cached, prompt_ids)
                if n > best_len:
                    best, best_len = s, n
        # Sharing only a BOS or a word is not worth wiping another warm cache for.
        if best_len < min(MIN_SHARED_PREFIX, len(prompt_ids) // 2 + 1):
            return lowest, common_prefix_len(lowest.cached, prompt_ids)
        return best, best_len

    def _longest_indexed(self, prompt_ids: list[int]) -> tuple[Slot | None, int]:
        """The free slot sharing the longest prefix with the prompt, found through the block
        index: the deepest whole block some free slot shares, then what is left of the next
        block compared in each of those slots (lowest id first on a tie); a slot that alone
        shares a block is compared in full at once. None when no whole block is shared, or when
        the winner's tokens turn out not to match (a hash collision: the caller then scans).

        NOTE: the scheduler asks this for every waiting request while a slot is free (to rank
        the queue), and again for the head's budget and in acquire(). Comparing the prompt with
        every free slot's tokens made a queue sharing a long prefix with many free slots cost
        slots x prefix tokens per request; `benchmarks/prefix_bench.py` has the figures.
        """
        h, level = 0, 0
        found: set[int] = set()
        for block_end in range(BLOCK, len(prompt_ids) + 1, BLOCK):
            h = chain_hash(h, prompt_ids[block_end - BLOCK : block_end])
            ids = self._index.get(h)
            if not ids:
                break
            level, found = block_end, ids
            if len(ids) == 1:  # no other slot shares this much: compare this one in full
                slot = self.slots[next(iter(ids))]
                n = common_prefix_len(slot.cached, prompt_ids)
                return (slot, n) if n >= level else (None, 0)
        if not found:
            return None, 0
        best, best_len = None, -1
        # each shares `level` tokens and less than a block more; compared here, not through
        # common_prefix_len: a call per slot doubled a shared-prefix ranking (prefix_bench.py)
        for slot_id in sorted(found):
            slot = self.slots[slot_id]
            cached, n = slot.cached, level
            stop = min(len(cached), len(prompt_ids), level + BLOCK)
            while n < stop and cached[n] == prompt_ids[n]:
                n += 1
            if n > best_len:
                best, best_len = slot, n
        assert best is not None
        if best.cached[:level] != prompt_ids[:level]:
            return None, 0
        return best, best_len

    def release(self, slot_id: int, kv_tokens: list[int]) -> None:
        """Give a slot back; its cells keep `kv_tokens` for a later request to reuse."""
        slot = self.slots[slot_id]
        self._unindex(slot)  # nothing, unless released twice
        self._clock += 1
        slot.is_busy, slot.last_used = False, self._clock
        slot.cached = list(kv_tokens) if self.prefix_cache else []
        self.num_busy -= 1
        self._num_idle_cells += len(slot.cached)
        slot.indexed_hashes = block_hashes(slot.cached)
        for h in slot.indexed_hashes:
            self._index.setdefault(h, set()).add(slot_id)

    def forget(self, slot_id: int) -> None:
        """The slot's cells were cleared: nothing cached is left."""
        slot = self.slots[slot_id]
        if not slot.is_busy:
            self._num_idle_cells -= len(slot.cached)
        self._unindex(slot)
        slot.cached = []

    def idle_cached(self) -> list[int]:
        """Free slots that still hold cells, least recently used first (eviction order)."""
        idle = [s for s in self.slots if not s.is_busy and s.cached]
        return [s.slot_id for s in sorted(idle, key=lambda s: s.last_used)]

    def num_cached_cells(self) -> int:
        """Cells held by free slots' caches."""
        return self._num_idle_cells

    def _unindex(self, slot: Slot) -> None:
        for h in slot.indexed_hashes:
            ids = self._index.get(h)
            if ids is None:  # two of its blocks hashed alike: already removed
                continue
            ids.discard(slot.slot_id)
            if not ids:
                del self._index[h]
        slot.indexed_hashes = []
