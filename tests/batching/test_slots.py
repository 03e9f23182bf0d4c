"""SlotTable: which free slot a prompt gets, and what its cells are known to hold."""

from __future__ import annotations

import random

import pytest

import batching.slots as slots_module
from batching.slots import SlotTable, common_prefix_len


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2], [1, 2]) == 2


@pytest.mark.parametrize("shared", [0, 5, 15, 16, 17, 31, 32, 33, 500, 999, 1000])
def test_common_prefix_len_finds_the_first_difference_anywhere(shared: int) -> None:
    a = list(range(1000))
    b = a[:shared] + [-1] * 7  # the first difference at `shared`, or b ends there
    assert common_prefix_len(a, b) == common_prefix_len(b, a) == shared
    assert common_prefix_len(a, a[:shared]) == shared


def test_fresh_table_hands_out_slots_in_order() -> None:
    table = SlotTable(3)
    assert [table.acquire([1, 2])[0] for _ in range(3)] == [0, 1, 2]
    assert (table.num_busy, table.num_free) == (3, 0)
    with pytest.raises(RuntimeError):
        table.acquire([1])


def test_acquire_prefers_the_longest_common_prefix() -> None:
    table = SlotTable(3)
    for _ in range(3):
        table.acquire([])
    table.release(0, [1, 2, 9])
    table.release(1, [1, 2, 3, 4])
    table.release(2, [7, 7])
    assert table.acquire([1, 2, 3, 5]) == (1, 3)
    assert table.acquire([1, 2, 8]) == (0, 2)


def test_without_a_shared_prefix_the_lowest_free_slot_is_taken() -> None:
    # busy slots stay contiguous from 0, which keeps llama.cpp's ubatches few
    table = SlotTable(4)
    for _ in range(4):
        table.acquire([])
    table.release(3, [5])
    table.release(1, [6])
    table.release(2, [7])
    slot_id, num_cached = table.acquire([1, 2])
    assert (slot_id, num_cached) == (1, 0)
    # the slot's old cells are no longer counted as a cache
    assert table.slots[1].cached == []
    assert table.acquire([5, 1, 1]) == (2, 0)  # one token shared with slot 3: not worth a jump


def test_a_free_slot_holding_a_long_shared_prefix_wins_over_the_lowest() -> None:
    table = SlotTable(3)
    for _ in range(3):
        table.acquire([])
    prefix = list(range(100, 140))
    table.release(2, [*prefix, 1])
    table.release(0, [9])
    assert table.acquire([*prefix, 2, 3]) == (2, 40)


def test_release_keeps_the_cached_tokens_for_the_next_prompt() -> None:
    table = SlotTable(2)
    slot_id, _ = table.acquire([1, 2, 3])
    table.release(slot_id, [1, 2, 3, 4, 5])
    assert table.acquire([1, 2, 3, 4, 5, 6]) == (slot_id, 5)


def test_acquire_trims_the_cache_to_the_shared_prefix() -> None:
    table = SlotTable(1)
    table.acquire([])
    table.release(0, [1, 2, 3, 4])
    assert table.acquire([1, 2, 9]) == (0, 2)
    assert table.slots[0].cached == [1, 2]


def test_idle_cached_lists_free_slots_with_cells_oldest_first() -> None:
    table = SlotTable(4)
    for _ in range(4):
        table.acquire([])
    table.release(3, [1])
    table.release(1, [2])
    table.release(2, [])  # nothing cached: nothing to evict
    assert table.idle_cached() == [3, 1]
    assert table.num_cached_cells() == 2
    table.acquire([2])  # takes slot 1: busy slots are not idle
    assert table.idle_cached() == [3]


def test_forget_drops_the_cache() -> None:
    table = SlotTable(2)
    table.acquire([])
    table.release(0, [1, 2, 3])
    table.forget(0)
    assert table.idle_cached() == []
    assert table.num_cached_cells() == 0
    assert table.acquire([1, 2, 3])[1] == 0


def test_without_prefix_cache_nothing_is_ever_reported_cached() -> None:
    table = SlotTable(2, prefix_cache=False)
    slot_id, num_cached = table.acquire([1, 2, 3])
    assert num_cached == 0
    table.release(slot_id, [1, 2, 3, 4])
    assert table.idle_cached() == []
    assert table.num_cached_cells() == 0
    assert table.acquire([1, 2, 3, 4])[1] == 0


def _reference_choice(table: SlotTable, prompt: list[int]) -> tuple[int, int]:
    """What acquire() must return: the free slot sharing the longest prefix (lowest id on a
    tie), or the lowest free slot when that prefix is too short to be worth a jump."""
    free = [s for s in table.slots if not s.is_busy]
    best, best_len = free[0], 0
    for s in free:
        n = common_prefix_len(s.cached, prompt)
        if n > best_len:
            best, best_len = s, n
    if best_len < min(16, len(prompt) // 2 + 1):
        return free[0].slot_id, common_prefix_len(free[0].cached, prompt)
    return best.slot_id, best_len


def _check_index(table: SlotTable) -> None:
    """The index holds exactly the whole blocks of the free slots' cached tokens."""
    expected: dict[int, set[int]] = {}
    for slot in table.slots:
        hashes = [] if slot.is_busy else slots_module.block_hashes(slot.cached)
        assert slot.indexed_hashes == hashes
        for h in hashes:
            expected.setdefault(h, set()).add(slot.slot_id)
    assert table._index == expected


def _fuzz_against_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    table = SlotTable(rng.randint(1, 8), prefix_cache=rng.random() < 0.9)
    alphabet = rng.choice([2, 5, 1000])  # a small one makes prefixes meet by chance
    stems = [
        [rng.randrange(alphabet) for _ in range(rng.choice([3, 15, 16, 17, 32, 40, 64]))]
        for _ in range(4)
    ]
    busy: list[int] = []
    for _ in range(300):
        cut_from = rng.choice(stems + [s.cached for s in table.slots if not s.is_busy])
        prompt = cut_from[: rng.randrange(len(cut_from) + 1)] + [
            rng.randrange(alphabet) for _ in range(rng.randrange(20))
        ]
        if table.num_free and (not busy or rng.random() < 0.5):
            expected = _reference_choice(table, prompt) if table.prefix_cache else (None, 0)
            if expected[0] is None:  # no prefix cache: the lowest free slot, nothing cached
                expected = (next(s.slot_id for s in table.slots if not s.is_busy), 0)
            assert table.cached_len(prompt) == expected[1]
            assert table.acquire(prompt) == expected
            busy.append(expected[0])
        else:
            slot_id = busy.pop(rng.randrange(len(busy)))
            if rng.random() < 0.1:
                table.forget(slot_id)  # cleared while busy (a failed request)
            table.release(
                slot_id, prompt + [rng.randrange(alphabet) for _ in range(rng.randrange(30))]
            )
            if rng.random() < 0.1:
                table.forget(slot_id)  # the KV cache was full: its cells were evicted
        _check_index(table)


@pytest.mark.parametrize("seed", range(40))
def test_the_prefix_index_chooses_as_a_scan_of_every_free_slot_would(seed: int) -> None:
    _fuzz_against_the_reference(seed)


def test_a_hash_collision_costs_a_scan_but_never_a_wrong_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slots_module, "chain_hash", lambda previous, block: 0)  # all collide
    for seed in range(10):
        _fuzz_against_the_reference(seed)
    monkeypatch.setattr(slots_module, "chain_hash", lambda previous, block: hash(tuple(block)) % 3)
    for seed in range(10):
        _fuzz_against_the_reference(seed)
    table = SlotTable(2)
    table.acquire([])
    table.acquire([])
    table.release(0, list(range(40)))
    table.release(1, list(range(100, 140)))
    assert table.acquire(list(range(100, 150))) == (1, 40)


def test_a_burst_sharing_a_long_prefix_finds_each_slot_holding_it() -> None:
    table = SlotTable(64)
    prefix = [1000 + t for t in range(1000)]
    for _ in range(64):
        table.acquire([])
    for slot_id in range(64):
        table.release(slot_id, [*prefix, slot_id, slot_id])
    # each prompt shares 1,001 tokens with its own slot, 1,000 with every other one
    assert [table.acquire([*prefix, i, 7]) for i in (5, 63, 0)] == [
        (5, 1001),
        (63, 1001),
        (0, 1001),
    ]
    assert table.acquire([*prefix, 5, 7]) == (1, 1000)  # slot 5 is busy: the lowest that shares
