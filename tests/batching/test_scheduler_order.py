"""The waiting queue's order: shortest prompt first, aged by the wait; or arrival order."""

from __future__ import annotations

from pathlib import Path

from fake_runner import FakeRunner

from batching.config import EngineConfig
from batching.engine import Engine
from batching.params import SamplingParams
from batching.scheduler import AGING_TOKENS_PER_S, MAX_HOLD_S
from tests.batching.test_scheduler import _add, _prompt

ONE = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _engine(clock: Clock, **config: object) -> Engine:
    cfg = EngineConfig(model_path=Path("fake"), n_slots=1, n_batch=64, **config)  # type: ignore[arg-type]
    return Engine(FakeRunner(n_slots=1), cfg, clock=clock)  # type: ignore[arg-type]


def _admitted(engine: Engine) -> list[str]:
    """Request ids in the order they got the one slot."""
    order = []
    while engine.has_work:
        for out in engine.step():
            if out.finish_reason:
                order.append(out.request_id)
    return order


def test_the_shortest_waiting_prompt_goes_first_and_ties_keep_arrival_order() -> None:
    engine = _engine(Clock())
    for name, length in [("a40", 40), ("b10", 10), ("c25", 25), ("d10", 10)]:
        _add(engine, name, _prompt(length, length), ONE)
    assert _admitted(engine) == ["b10", "d10", "c25", "a40"]


def test_a_long_prompt_that_waited_goes_ahead_of_fresh_short_ones() -> None:
    clock = Clock()
    engine = _engine(clock)
    _add(engine, "long", _prompt(0, 50), ONE)
    clock.now = 50 / AGING_TOKENS_PER_S  # it has waited as long as 50 tokens are worth
    _add(engine, "short", _prompt(9, 5), ONE)
    assert _admitted(engine) == ["long", "short"]


def test_a_long_prompt_that_waited_less_lets_a_short_one_pass() -> None:
    clock = Clock()
    engine = _engine(clock)
    _add(engine, "long", _prompt(0, 50), ONE)
    clock.now = 40 / AGING_TOKENS_PER_S
    _add(engine, "short", _prompt(9, 5), ONE)
    assert _admitted(engine) == ["short", "long"]


def test_arrival_order_when_shortest_first_is_off() -> None:
    engine = _engine(Clock(), shortest_first=False)
    for name, length in [("a40", 40), ("b10", 10), ("c25", 25)]:
        _add(engine, name, _prompt(length, length), ONE)
    assert _admitted(engine) == ["a40", "b10", "c25"]


def test_the_queue_time_is_measured_on_the_engine_clock() -> None:
    clock = Clock()
    engine = _engine(clock)
    _add(engine, "first", _prompt(0, 8), ONE)
    _add(engine, "second", _prompt(10, 8), ONE)
    engine.step()
    clock.now = 2.5
    outs = engine.step()
    assert [(o.request_id, o.queue_s) for o in outs if o.queue_s is not None] == [("second", 2.5)]


def test_a_follow_up_whose_history_is_cached_ranks_by_its_new_tokens() -> None:
    engine = _engine(Clock())
    history = _prompt(0, 60)
    _add(engine, "turn1", history, ONE)
    engine.step()  # its 60 tokens stay in the slot's cells
    _add(engine, "fresh", _prompt(30, 20), ONE)  # 20 tokens to compute
    _add(engine, "turn2", [*history, 7, 8, 9], ONE)  # 63 tokens, 3 or 4 to compute
    assert _admitted(engine) == ["turn2", "fresh"]
    # turn2 computed only its new tokens (all 63 and then fresh's 20 if fresh had gone first)
    assert engine.runner.num_prefill_tokens <= 60 + 4 + 20  # type: ignore[attr-defined]


def test_a_request_is_passed_only_by_those_that_arrived_within_max_hold() -> None:
    clock = Clock()
    engine = _engine(clock)
    _add(engine, "huge", _prompt(0, 200), ONE)  # 200 tokens: more than MAX_HOLD_S is worth
    clock.now = MAX_HOLD_S + 0.01
    _add(engine, "late", _prompt(9, 5), ONE)
    assert _admitted(engine) == ["huge", "late"]


def test_the_prefill_time_runs_from_the_slot_to_the_first_token() -> None:
    clock = Clock()
    engine = _engine(clock)  # a 64-token budget: the 100-token prompt takes two steps
    _add(engine, "long", _prompt(0, 100), SamplingParams(max_tokens=2, ignore_eos=True))
    clock.now = 1.0
    assert engine.step() == []  # admitted at 1.0, the first 64 tokens computed
    clock.now = 1.5
    first = engine.step()
    clock.now = 2.0
    second = engine.step()
    assert [(o.queue_s, o.prefill_s) for o in first] == [(1.0, 0.5)]
    assert [o.prefill_s for o in second] == [None]
