"""SlotTable: which free slot a prompt gets, and what its cells are known to hold."""

from __future__ import annotations

import pytest

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
