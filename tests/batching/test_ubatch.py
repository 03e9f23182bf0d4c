"""Ubatches: llama.cpp's split rule, and a batch layout that keeps every decode step to few passes.

The fake runner counts ubatches token by token the way llama.cpp's split_equal does; the
engine's own count (batching/ubatch.py, exported as a metric) must agree with it.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from fake_runner import FakeRunner, split_equal

from batching.config import EngineConfig
from batching.engine import Engine
from batching.outputs import PrefillChunk, StepStats
from batching.params import SamplingParams
from batching.ubatch import count_ubatches, ubatch_sizes


def _decodes(slots: list[int]) -> list[tuple[int, int]]:
    return [(s, 1) for s in slots]


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        (list(range(64)), 1),  # in slot order: one pass
        (list(range(63, -1, -1)), 64),  # reversed: every token alone
        (list(range(0, 64, 2)), 32),  # every other slot busy: no two ids follow each other
        ([*range(8, 16), *range(8)], 2),  # two runs
    ],
)
def test_decode_steps_split_like_llama_cpp(slots: list[int], expected: int) -> None:
    assert count_ubatches(_decodes(slots), 512, sequential=True) == expected
    assert split_equal(slots, 512) == expected


def test_a_prompt_chunk_shares_the_decode_pass_with_its_first_token() -> None:
    runs = [(0, 1), (1, 1), (2, 300), (3, 1)]
    # pass 1: one token of every slot; then 299 prompt tokens alone in one pass
    assert count_ubatches(runs, 512, sequential=True) == 2
    runs = [(0, 1), (1, 1), (2, 1100), (3, 1)]
    assert count_ubatches(runs, 512, sequential=True) == 4  # 1 + ceil(1099 / 512)
    assert count_ubatches(runs, 512, sequential=False) == 3  # a unified cache cuts by size


def test_the_engines_count_matches_llama_cpps_rule_on_random_batches() -> None:
    rng = random.Random(0)
    for _ in range(300):
        slots = rng.sample(range(24), rng.randint(1, 24))
        runs = [(s, rng.choice([1, 1, 1, rng.randint(2, 90)])) for s in slots]
        tokens = [s for s, n in runs for _ in range(n)]
        assert count_ubatches(runs, 64, sequential=True) == split_equal(tokens, 64)


def _closed_loop(
    n_slots: int, n_steps: int, seed: int, delay: int = 0
) -> tuple[FakeRunner, list[StepStats]]:
    """n_slots clients with mixed prompt and answer lengths, each sending again when done
    (`delay` steps later: over HTTP the next request arrives while the next step runs).

    The GPU benchmark's mixed workload scaled down eightfold where it meets the batch limits:
    prompts of 64-1000 tokens against n_ubatch 512 and n_batch 2048 become 8-125 tokens
    against 64 and 256; answers of 16-256 tokens stay, so requests come and go as often.
    """
    rng = random.Random(seed)
    runner = FakeRunner(n_ctx=512, n_slots=n_slots, n_ubatch=64)
    stats: list[StepStats] = []
    config = EngineConfig(
        model_path=Path("fake"), n_slots=n_slots, n_ctx=512 * n_slots, n_batch=256, n_ubatch=64
    )
    engine = Engine(runner, config, observer=stats.append)
    counter = 0

    def send() -> None:
        nonlocal counter
        counter += 1
        prompt = [1] + [3 + rng.randrange(60) for _ in range(rng.randint(7, 124))]
        params = SamplingParams(temperature=0.0, max_tokens=rng.randint(16, 256), ignore_eos=True)
        engine.add(engine.new_sequences(f"r{counter}", prompt, params))

    for _ in range(n_slots):
        send()
    due: list[int] = []  # the step at which each pending client sends again
    for step in range(n_steps):
        for _ in range(sum(1 for d in due if d == step)):
            send()
        due = [d for d in due if d > step]
        for out in engine.step():
            if out.finish_reason is not None:
                if delay:
                    due.append(step + delay)
                else:
                    send()
    return runner, stats


def test_a_closed_loop_of_mixed_lengths_keeps_decode_steps_to_few_ubatches() -> None:
    runner, stats = _closed_loop(n_slots=64, n_steps=600, seed=1)
    assert [s.num_ubatches for s in stats] == runner.ubatches  # the metric tells the truth
    mean = sum(runner.ubatches) / len(runner.ubatches)
    assert mean <= 2.0, f"{mean:.2f} ubatches per step"
    decode_only = [
        u for u, b in zip(runner.ubatches, runner.batches, strict=True) if not b.num_prefill
    ]
    assert decode_only and max(decode_only) <= 2  # a hole left by a finished request, at most


def test_slots_idle_while_the_next_request_is_on_its_way_do_not_split_the_step() -> None:
    runner, stats = _closed_loop(n_slots=64, n_steps=600, seed=2, delay=2)
    assert [s.num_ubatches for s in stats] == runner.ubatches
    assert runner.num_fillers > 0
    mean = sum(runner.ubatches) / len(runner.ubatches)
    assert mean <= 2.0, f"{mean:.2f} ubatches per step"
    decode_only = [
        u for u, b in zip(runner.ubatches, runner.batches, strict=True) if not b.num_prefill
    ]
    assert decode_only and max(decode_only) == 1


def test_a_filler_keeps_the_idle_slots_cache_for_the_next_request() -> None:
    runner = FakeRunner(n_ctx=256, n_slots=3, n_ubatch=64)
    # one call a step, so that r1 ends before r2 arrives and slot 1 stays idle
    config = EngineConfig(model_path=Path("fake"), n_slots=3, n_batch=64, prompts_first=False)
    engine = Engine(runner, config)
    long = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    short = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    shared = [1, *range(3, 40)]
    for i, params in enumerate([long, short, long]):
        engine.add(engine.new_sequences(f"r{i}", [*shared, 40 + i], params))
    for _ in range(4):  # r1 ends; slot 1 sits idle between slots 0 and 2
        engine.step()
    cached = runner.tokens_of(1)
    engine.step()
    batch = runner.batches[-1]
    assert [slot for slot, _, _ in batch.tokens] == [0, 1, 2]  # decode, filler, decode
    assert batch.tokens[1][1] == len(cached)  # at the idle slot's next position
    assert batch.num_decode == 2 and batch.num_prefill == 0
    assert runner.ubatches[-1] == 1 and runner.tokens_of(1) == cached  # the cell went again
    engine.add(engine.new_sequences("again", [*shared, 41, 7], long))
    engine.step()
    again = next(s for s in engine.scheduler.running if s.request_id == "again")
    assert again.slot_id == 1 and again.num_cached_tokens == len(shared) + 1


def _gap_of_one(recurrent: bool = False, idle_prompt: int = 12) -> FakeRunner:
    """Slot 1's request ends early and nobody takes the slot; slots 0 and 2 keep decoding."""
    runner = FakeRunner(n_ctx=512, n_slots=3, n_ubatch=64)
    if recurrent:
        runner.info = dataclasses.replace(runner.info, is_recurrent=True)
    config = EngineConfig(
        model_path=Path("fake"), n_slots=3, n_batch=256, prompts_first=False, shortest_first=False
    )  # r1 in slot 1, ending before the others
    engine = Engine(runner, config)
    long = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    short = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    lengths = [6, idle_prompt, 7]
    for i, params in enumerate([long, short, long]):
        engine.add(engine.new_sequences(f"r{i}", [1, *range(3, 3 + lengths[i])], params))
    for _ in range(5):
        engine.step()
    return runner


def test_no_filler_for_a_recurrent_memory_or_a_slot_much_longer_than_the_batch() -> None:
    assert _gap_of_one().ubatches[-1] == 1  # the filler joins the two runs
    assert _gap_of_one(recurrent=True).ubatches[-1] == 2  # it could not drop the filler again
    # slot 1 holds 101 cells, the batch's longest sequence 12: a filler would widen attention
    assert _gap_of_one(idle_prompt=100).ubatches[-1] == 2


def test_a_recurrent_memory_reuses_no_prefix() -> None:
    runner = FakeRunner(n_ctx=256, n_slots=1, n_ubatch=64)
    runner.info = dataclasses.replace(runner.info, is_recurrent=True)
    engine = Engine(runner, EngineConfig(model_path=Path("fake"), n_slots=1, n_batch=64))
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    prompt = [1, *range(3, 40)]
    outs = []
    for name in ("first", "again"):
        engine.add(engine.new_sequences(name, prompt, params))
        while engine.has_work:
            outs += engine.step()
    assert [o.num_cached_tokens for o in outs if o.finish_reason] == [0, 0]
    assert runner.kv_ops[-1].kind == "rm" and runner.kv_ops[-1].pos == 0  # the whole state


def test_a_step_is_laid_out_in_slot_order_with_its_rows_numbered_alike() -> None:
    runner = FakeRunner(n_ctx=256, n_slots=4, n_ubatch=64)
    engine = Engine(
        runner, EngineConfig(model_path=Path("fake"), n_slots=4, n_batch=64, short_queue=-1)
    )
    long = SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True)
    for i, length in enumerate([5, 30, 8]):
        prompt = [1] + [3 + (i + j) % 60 for j in range(length)]
        engine.add(engine.new_sequences(f"r{i}", prompt, long))
    engine.step()  # the three prompts, 46 tokens in all
    engine.add(engine.new_sequences("late", [1, *range(3, 60), *range(3, 60)], long))
    plan = engine.scheduler.schedule()
    slots = [(e.seq.slot_id if isinstance(e, PrefillChunk) else e.slot_id) for e in plan.entries]
    assert slots == sorted(slots) == [0, 1, 2, 3]
    assert isinstance(plan.entries[3], PrefillChunk)  # the newcomer took the lowest free slot
    assert plan.sample_rows == [0, 1, 2]  # decode rows in slot order; the chunk is unfinished
    assert [s.slot_id for s in plan.sample_seqs] == [0, 1, 2]


def test_ubatch_sizes_add_up_to_the_batch_and_agree_with_the_count() -> None:
    # decode tokens of busy slots in slot order share a pass; a prompt chunk's rest has its own
    assert ubatch_sizes([(s, 1) for s in range(64)], 512, sequential=True) == [64]
    assert ubatch_sizes([(0, 1), (1, 1), (2, 300)], 512, sequential=True) == [3, 299]
    assert ubatch_sizes([(0, 1), (1, 1100)], 512, sequential=False) == [512, 512, 77]
    rng = random.Random(1)
    for _ in range(100):
        runs = [(s, rng.randint(1, 90)) for s in rng.sample(range(24), rng.randint(1, 24))]
        sizes = ubatch_sizes(runs, 64, sequential=True)
        assert sum(sizes) == sum(n for _, n in runs) and len(sizes) == count_ubatches(
            runs, 64, True
        )
