"""Engine.step's prompt calls: a call per finishing prompt, shortest first, and requests that
arrive while a step's prompts compute joining that step (a poll between the calls)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from fake_runner import FakeRunner

from batching.engine import Engine
from batching.outputs import StepOutput
from batching.params import SamplingParams
from tests.batching.test_scheduler import _add, _composition, _engine, _prompt

LONG = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def _decoding(**config: object) -> tuple[Engine, FakeRunner]:
    """An engine whose request "old" is decoding."""
    engine, runner = _engine(n_slots=4, n_batch=32, **config)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    return engine, runner


def _emitted(runner: FakeRunner, order: list[str]) -> Callable[[list[StepOutput]], None]:
    """An emit that notes each output as request@calls-started-when-it-went-out."""
    return lambda outs: order.extend(f"{o.request_id}@{len(runner.batches)}" for o in outs)


def test_each_finishing_prompt_runs_alone_shortest_first_and_its_token_goes_out_first() -> None:
    engine, runner = _decoding(admit_late=False)
    _add(engine, "long", _prompt(20, 12), LONG)
    _add(engine, "short", _prompt(40, 4), LONG)
    order: list[str] = []
    engine.step(emit=_emitted(runner, order))
    # short's prompt, long's prompt, then the three decode
    assert _composition(runner)[1:] == [(0, 4), (0, 12), (3, 0)]
    # short's first token goes out as long's call starts, long's as the decode call starts
    assert order[:2] == ["short@3", "long@4"]


def test_prompts_share_a_call_where_a_call_each_would_cost_a_pass() -> None:
    # two 6-token prompts in slots 1 and 2 share one pass (split_equal takes 6 from each);
    # alone they would take two
    engine, runner = _decoding(admit_late=False, n_ubatch=16)
    _add(engine, "a", _prompt(20, 6), LONG)
    _add(engine, "b", _prompt(40, 6), LONG)
    engine.step()
    assert _composition(runner)[1:] == [(0, 12), (3, 0)]


def test_one_prompt_call_when_per_call_is_off() -> None:
    engine, runner = _decoding(admit_late=False, prompt_per_call=False)
    _add(engine, "long", _prompt(20, 12), LONG)
    _add(engine, "short", _prompt(40, 4), LONG)
    engine.step()
    assert _composition(runner)[1:] == [(0, 16), (3, 0)]


def test_a_request_sent_during_the_prompt_call_joins_the_step() -> None:
    engine, runner = _decoding()
    _add(engine, "a", _prompt(20, 12), LONG)
    order: list[str] = []

    def poll() -> None:  # "late" arrives while a's prompt computes
        if not any(s.request_id == "late" for s in engine.scheduler.running):
            _add(engine, "late", _prompt(40, 5), LONG)

    engine.step(emit=_emitted(runner, order), poll=poll)
    # a's prompt, late's prompt, then old, a and late decode, all in one step
    assert _composition(runner)[1:] == [(0, 12), (0, 5), (3, 0)]
    assert "late@4" in order  # its first token went out as the decode call started


def test_late_arrivals_only_take_the_steps_leftover_when_requests_were_waiting() -> None:
    engine, runner = _decoding(short_queue=-1)
    _add(engine, "a", _prompt(20, 20), LONG)
    _add(engine, "b", _prompt(40, 20), LONG)  # does not fit beside a: it waits
    sent: list[str] = []

    def poll() -> None:
        if not sent:
            sent.append("late")
            _add(engine, "late", _prompt(60, 5), LONG)

    engine.step(poll=poll)
    # 32 - (1 + 20) = 11 tokens left: late's 5 fit (b's 20 do not), and b still waits
    assert _composition(runner)[1:] == [(0, 20), (0, 5), (3, 0)]
    assert [g[0].request_id for g in engine.scheduler.waiting] == ["b"]


def test_late_arrivals_wait_for_the_next_step_when_the_leftover_is_too_small() -> None:
    engine, runner = _decoding(short_queue=-1)
    _add(engine, "a", _prompt(20, 28), LONG)
    _add(engine, "b", _prompt(40, 28), LONG)
    engine.step(poll=lambda: _add(engine, "late", _prompt(60, 5), LONG))
    assert _composition(runner)[1:] == [(0, 28), (2, 0)]  # 32 - 29 = 3 tokens: none fits
    assert {g[0].request_id for g in engine.scheduler.waiting} == {"b", "late"}


def test_without_admit_late_the_poll_is_not_called() -> None:
    engine, runner = _decoding(admit_late=False)
    _add(engine, "a", _prompt(20, 12), LONG)
    polled: list[int] = []
    engine.step(poll=lambda: polled.append(1))
    assert not polled and _composition(runner)[1:] == [(0, 12), (2, 0)]


def test_a_late_arrival_does_not_continue_a_prompt_started_in_an_earlier_step() -> None:
    engine, runner = _engine(n_slots=4, n_batch=16, short_queue=-1)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    _add(engine, "long", _prompt(20, 40), LONG)  # three steps; only the last finishes it
    for _ in range(3):
        engine.step(poll=lambda: None)
    assert _composition(runner) == [(0, 6), (1, 15), (1, 15), (0, 10), (2, 0)]


def _serve(seed: int, per_call: bool, late: bool) -> tuple[dict[str, list[int]], int]:
    """24 requests (some n=2) sent between steps and mid-step; every choice's tokens, and how
    many requests sent mid-step got their first token in that same step."""
    rng = random.Random(seed)
    engine, _ = _engine(
        FakeRunner(n_slots=8, n_ubatch=8), n_slots=8, n_ctx=2048, n_batch=32, n_ubatch=8,
        prompt_per_call=per_call, admit_late=late,
    )  # fmt: skip
    pending = []
    for i in range(24):
        params = SamplingParams(temperature=0.8, seed=i, max_tokens=rng.randint(1, 12))
        pending.append((f"r{i}", _prompt(5 * i, rng.randint(2, 12)), params, 1 + i % 3 // 2))
    sent_mid_step: list[str] = []

    def send() -> None:
        if pending:
            sent_mid_step.append(pending[0][0])
            _add(engine, *pending.pop(0))

    def poll() -> None:  # mid-step: a request, most of the time
        if rng.random() < 0.7:
            send()

    tokens: dict[str, list[int]] = {}
    num_late = 0
    while pending or engine.has_work:
        if not engine.has_work or rng.random() < 0.3:
            send()
        sent_mid_step.clear()
        outs = engine.step(poll=poll)
        num_late += len({o.request_id for o in outs if o.token_ids} & set(sent_mid_step))
        for out in outs:
            tokens.setdefault(f"{out.request_id}/{out.index}", []).extend(out.token_ids)
    return tokens, num_late


@pytest.mark.parametrize("seed", range(4))
def test_the_tokens_do_not_depend_on_the_prompt_calls_or_when_a_request_joined(
    seed: int,
) -> None:
    one_call, _ = _serve(seed, per_call=False, late=False)
    per_call, _ = _serve(seed, per_call=True, late=False)
    late, num_late = _serve(seed, per_call=True, late=True)
    assert one_call == per_call == late
    assert len(one_call) == 24 + 8
    assert num_late > 0  # some requests did join a step mid-way


ONE = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)


def test_a_forks_copy_is_made_when_a_mid_step_abort_leaves_nothing_to_decode() -> None:
    engine, runner = _engine(n_slots=4, n_batch=64)
    _add(engine, "old", _prompt(0, 6), LONG)
    _add(engine, "x1", _prompt(30, 24), ONE)
    _add(engine, "x2", _prompt(45, 24), ONE)  # slots 1 and 2 keep x1's and x2's prompts
    while engine.scheduler.waiting or len(engine.scheduler.running) > 1:
        engine.step()
    prompt = _prompt(10, 20)
    _add(engine, "f", prompt, ONE, n=2)  # both choices end on their first token
    engine.step(poll=lambda: engine.abort("old"))  # old's client leaves mid-step
    assert not engine.scheduler.running
    for slot in engine.slots.slots:  # what the table says a slot holds, its cells hold
        assert runner.tokens_of(slot.slot_id)[: len(slot.cached)] == slot.cached
    assert [s.cached[:20] for s in engine.slots.slots].count(prompt) == 2  # f's two slots


def test_a_full_cache_in_a_later_prompt_call_keeps_a_forks_copy() -> None:
    # A's first choice stops on its first token in A's call; B's call then finds the cache
    # full and evicts idle slots: A's fork must have its copy of A's prompt by then
    runner = FakeRunner(n_slots=4, peak=0.0, n_cells=25)
    engine, _ = _engine(runner, n_slots=4, n_batch=64, n_ctx=256, admit_late=False)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    stops = SamplingParams(temperature=1.0, seed=3, max_tokens=4, stop_token_ids=[53])
    _add(engine, "A", _prompt(20, 8), stops, n=2)
    _add(engine, "B", _prompt(40, 12), LONG)
    outs = engine.step()  # the fake runner asserts that every copy finds its source
    assert runner.num_full > 0
    ends = {(o.request_id, o.index): o.finish_reason for o in outs if o.finish_reason}
    assert ends == {("A", 0): "stop", ("B", 0): "error"}  # B, the newest, makes room


def test_a_full_cache_stops_the_newest_request_whichever_call_it_is_in() -> None:
    now = [0.0]
    runner = FakeRunner(n_slots=4, n_cells=48)
    engine, _ = _engine(runner, n_slots=4, n_batch=32, n_ctx=256, admit_late=False, short_queue=-1)
    engine.scheduler.clock = lambda: now[0]
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    now[0] += 1
    _add(engine, "L", _prompt(20, 40), LONG)
    engine.step()  # 31 of L's 40 tokens
    now[0] += 1
    _add(engine, "S", _prompt(50, 4), LONG)
    outs = engine.step()  # S's call, then L's last 9 tokens: the cache is full there
    assert _composition(runner)[-2:] == [(0, 4), (1, 9)]
    assert [(o.request_id, o.finish_reason) for o in outs if o.finish_reason] == [("S", "error")]


def test_with_split_prompts_a_late_arrival_still_starts_only_if_it_finishes() -> None:
    engine, runner = _decoding(split_prompts=True)
    _add(engine, "a", _prompt(20, 12), LONG)
    sent: list[str] = []

    def poll() -> None:
        if not sent:
            sent.append("late")
            _add(engine, "late", _prompt(40, 40), LONG)  # more than the 19 tokens left

    engine.step(poll=poll)
    assert _composition(runner)[1:] == [(0, 12), (2, 0)]
