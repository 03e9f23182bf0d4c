"""Engine.step with prompts first: a step that finishes a prompt while others decode runs the
prompt in a llama_decode of its own, hands its first token out, then runs the decodes."""

from __future__ import annotations

import random

import pytest
from fake_runner import Batch, FakeRunner

from batching.outputs import SchedulerOutput, StepOutput
from batching.params import SamplingParams
from tests.batching.test_scheduler import _add, _composition, _drive, _engine, _prompt, _tokens

LONG = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def _start_one_and_add_another(**config: object) -> tuple[list[str], FakeRunner]:
    """ "old" decodes, "new" arrives; two steps with an emit that notes how many decodes had
    started when each output went out (@n), and what step() returned (ret)."""
    engine, runner = _engine(n_slots=4, n_batch=32, **config)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()  # old's prompt: it decodes from now on
    _add(engine, "new", _prompt(20, 12), LONG)
    order: list[str] = []

    def emit(outs: list[StepOutput]) -> None:
        order.extend(f"{o.request_id}@{len(runner.batches)}" for o in outs)

    for _ in range(2):
        order.extend(f"{o.request_id} ret" for o in engine.step(emit=emit))
    return order, runner


def test_a_finishing_prompt_runs_before_the_decodes_and_its_first_token_goes_out_first() -> None:
    order, runner = _start_one_and_add_another()
    # the prompt alone, then both sequences decode: the new one its second token already
    assert _composition(runner) == [(0, 6), (0, 12), (2, 0), (2, 0)]
    # new's first token goes out as the decode pass (the 3rd call) starts; that pass's
    # tokens as the next one starts
    assert order == ["new@3", "old@4", "new@4"]


def test_prompts_first_off_runs_the_step_in_one_call() -> None:
    order, runner = _start_one_and_add_another(prompts_first=False)
    assert _composition(runner) == [(0, 6), (1, 12), (2, 0)]
    assert order == ["old@3", "new@3"]


def test_overlap_output_off_hands_every_output_out_at_once() -> None:
    order, _ = _start_one_and_add_another(overlap_output=False)
    assert order == ["new@2", "old ret", "new ret", "old ret", "new ret"]


def test_held_outputs_go_out_at_once_when_nothing_runs_any_more() -> None:
    engine, runner = _engine(n_slots=4, n_batch=32)
    _add(engine, "a", _prompt(0, 6), SamplingParams(temperature=0.0, max_tokens=3))
    emitted: list[tuple[int, int]] = []
    returned: list[tuple[int, int]] = []
    while engine.has_work:
        outs = engine.step(
            emit=lambda o: emitted.extend((len(runner.batches), x.num_output_tokens) for x in o)
        )
        returned.extend((len(runner.batches), x.num_output_tokens) for x in outs)
    # tokens 1 and 2 go out as the next decode starts; the last when the request ends
    assert emitted == [(2, 1), (3, 2)] and returned == [(3, 3)]
    assert not engine.has_work


def test_without_emit_the_step_returns_both_calls_outputs() -> None:
    engine, _ = _engine(n_slots=4, n_batch=32)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    _add(engine, "new", _prompt(20, 12), LONG)
    outs = engine.step()
    assert [(o.request_id, len(o.token_ids)) for o in outs] == [("new", 1), ("old", 1), ("new", 1)]


def test_a_prompt_that_only_continues_does_not_split_the_step() -> None:
    engine, runner = _engine(n_slots=4, n_batch=16, short_queue=-1)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    _add(engine, "long", _prompt(20, 40), LONG)  # 40 tokens: three steps, the last finishes it
    for _ in range(3):
        engine.step()
    assert _composition(runner) == [(0, 6), (1, 15), (1, 15), (0, 10), (2, 0)]


def test_prompts_first_gives_the_same_tokens_as_one_call() -> None:
    results = []
    for prompts_first in (True, False):
        engine, _ = _engine(n_slots=3, n_batch=24, prompts_first=prompts_first)
        for i in range(7):
            params = SamplingParams(temperature=0.8, seed=i, max_tokens=5 + 3 * i)
            _add(engine, f"r{i}", _prompt(5 * i, 4 + 3 * i), params, n=1 + i % 2)
        outputs = _drive(engine)
        results.append({key: _tokens(outs) for key, outs in outputs.items()})
    assert results[0] == results[1]
    assert len(results[0]) == 7 + 3


def test_a_new_sequence_that_ends_on_its_first_token_leaves_the_decodes_alone() -> None:
    engine, runner = _engine(n_slots=4, n_batch=32)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    _add(engine, "one", _prompt(20, 12), SamplingParams(temperature=0.0, max_tokens=1))
    outs = engine.step()
    assert _composition(runner)[-2:] == [(0, 12), (1, 0)]
    assert [(o.request_id, o.finish_reason) for o in outs] == [("one", "length"), ("old", None)]


def _steps(
    n_cells: int | None, seed: int, split_prompts: bool = False
) -> tuple[FakeRunner, list[list[Batch]]]:
    """A stream of requests of mixed lengths, some ending early (idle slots between busy
    ones); the batches each step() ran."""
    rng = random.Random(seed)
    runner = FakeRunner(n_ctx=512, n_slots=8, n_cells=n_cells, n_ubatch=16)
    engine, _ = _engine(
        runner, n_slots=8, n_ctx=512 * 8, n_batch=48, n_ubatch=16, split_prompts=split_prompts
    )
    steps: list[list[Batch]] = []
    for i in range(40):
        length, answer = rng.randint(3, 90), rng.choice([1, 2, 30])
        params = SamplingParams(temperature=0.0, max_tokens=answer, ignore_eos=True)
        _add(engine, f"r{i}", _prompt(i, length), params)
        for _ in range(rng.randint(0, 3)):
            before = len(runner.batches)
            engine.step()
            steps.append(runner.batches[before:])
    while engine.has_work:
        before = len(runner.batches)
        engine.step()
        steps.append(runner.batches[before:])
    return runner, steps


@pytest.mark.parametrize("split_prompts", [False, True])  # True: a prompt can stay unfinished
@pytest.mark.parametrize("n_cells", [None, 160])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_split_step_runs_prompts_without_fillers_then_decodes_without_prompts(
    n_cells: int | None, seed: int, split_prompts: bool
) -> None:
    runner, steps = _steps(n_cells, seed, split_prompts)
    split = [s for s in steps if len(s) >= 2]
    assert split, "no step was split"
    for batches in steps:
        for batch in batches[:-1]:  # once a batch with decode tokens ran, the step is over
            assert batch.num_decode == 0
    for *prompts, decodes in split:
        for call in prompts:
            assert len(call.tokens) == call.num_prefill  # no filler among the prompts
        assert decodes.num_prefill == 0 and decodes.num_decode > 0
    if n_cells is not None:
        assert runner.num_full > 0  # the KV cache did fill up, and the step still held


def test_two_prompts_around_a_decoding_slot_get_no_filler_between_them() -> None:
    # one call for both prompts (with a call each, no call could hold a filler between them)
    engine, runner = _engine(n_slots=4, n_batch=64, shortest_first=False, prompt_per_call=False)
    for i, answer in enumerate([30, 1, 30, 1]):  # r1 and r3 end on their first token
        _add(engine, f"r{i}", _prompt(10 * i, 6), SamplingParams(max_tokens=answer, seed=i))
    engine.step()
    engine.step()  # r0 and r2 decode, slot 1 filled between them
    _add(engine, "p4", _prompt(40, 6), LONG)
    _add(engine, "p5", _prompt(50, 6), LONG)
    engine.step()  # p4 and p5 take slots 1 and 3, around r2 in slot 2
    prompts, decodes = runner.batches[-2:]
    assert sorted({slot for slot, _, _ in prompts.tokens}) == [1, 3]
    assert len(prompts.tokens) == prompts.num_prefill  # no filler in slot 2
    assert decodes.num_decode == 4 and runner.ubatches[-1] == 1


def test_no_split_where_it_would_cost_a_pass_a_unified_cache_or_a_cached_prompt() -> None:
    # one KV pool: llama.cpp packs prompt and decode tokens into the same ubatches
    order, runner = _start_one_and_add_another(kv_unified=True)
    assert _composition(runner)[:2] == [(0, 6), (1, 12)]
    assert order == ["old@3", "new@3"]  # nothing handed out early
    # the same prompt again: one token left to compute, riding in the decode tokens' pass
    engine, runner = _engine(n_slots=4, n_batch=32)
    prompt = _prompt(20, 12)
    _add(engine, "old", _prompt(0, 6), LONG)
    _add(engine, "first", prompt, SamplingParams(temperature=0.0, max_tokens=1))
    engine.step()
    _add(engine, "again", prompt, LONG)
    engine.step()
    assert _composition(runner)[-1] == (1, 1) and runner.ubatches[-1] == 1


def test_before_a_call_of_several_passes_the_held_outputs_go_out_first() -> None:
    # n_ubatch 8: the 20-token prompt takes three passes, and llama.cpp's decode returns only
    # when all but the last have run, so old's held token goes out before it starts
    engine, runner = _engine(n_slots=4, n_batch=32, n_ubatch=8)
    _add(engine, "old", _prompt(0, 6), LONG)
    emitted: list[str] = []

    def emit(outs: list[StepOutput]) -> None:
        emitted.extend(f"{o.request_id}@{len(runner.batches)}" for o in outs)

    engine.step(emit=emit)  # old's prompt (call 1); its first token is held
    _add(engine, "new", _prompt(20, 20), LONG)
    engine.step(emit=emit)  # new's prompt (call 2), then both decode (call 3)
    assert emitted == ["old@1", "new@3"]


def test_a_step_without_emit_returns_what_was_held_first() -> None:
    engine, _ = _engine(n_slots=4, n_batch=32)
    _add(engine, "a", _prompt(0, 6), LONG)
    assert engine.step(emit=lambda outs: None) == []  # the first token is held
    outs = engine.step()
    assert [o.num_output_tokens for o in outs] == [1, 2]


class _FailingRunner(FakeRunner):
    """A FakeRunner whose llama_decode fails (rc -3) on the given calls."""

    def __init__(self, fail_on: set[int], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.calls, self.fail_on = 0, fail_on

    def forward(self, out: SchedulerOutput) -> int:
        self.calls += 1
        return -3 if self.calls in self.fail_on else super().forward(out)


def _serve(seed: int, mode: str) -> dict[tuple[str, int], list[tuple[int, ...] | str | None]]:
    """Requests (some n=2) arriving and aborted at random over a small, sometimes full KV
    cache whose decode fails now and then; every output by choice, as the client sees it."""
    rng = random.Random(seed)
    runner = _FailingRunner(
        set(rng.sample(range(1, 200), 2)), n_ctx=128, n_slots=4, n_ubatch=16,
        n_cells=rng.choice([None, 120]),
    )  # fmt: skip
    engine, _ = _engine(
        runner, n_slots=4, n_ctx=512, n_batch=32, n_ubatch=16, overlap_output=mode == "overlap"
    )
    got: dict[tuple[str, int], list[StepOutput]] = {}

    def take(outs: list[StepOutput]) -> None:
        for o in outs:
            got.setdefault((o.request_id, o.index), []).append(o)

    n = 0
    for _ in range(300):
        if n < 12 and rng.random() < 0.3:
            prompt = [1] + [3 + rng.randrange(60) for _ in range(rng.randrange(2, 40))]
            params = SamplingParams(temperature=0.0, max_tokens=rng.randrange(1, 12))
            _add(engine, f"r{n}", prompt, params, n=rng.choice([1, 1, 2]))
            n += 1
        if n and rng.random() < 0.05:
            engine.abort(f"r{rng.randrange(n)}")
        if engine.has_work:
            take(engine.step(emit=take) if mode != "none" else engine.step())
    while engine.has_work:
        take(engine.step(emit=take) if mode != "none" else engine.step())
    for outs in got.values():  # one end, the last output; the tokens in order
        assert [o.finish_reason is not None for o in outs].count(True) == 1
        assert outs[-1].finish_reason is not None
        counts = [o.num_output_tokens for o in outs if o.token_ids]
        assert counts == list(range(1, len(counts) + 1))
    return {key: [*(tuple(o.token_ids) for o in outs), outs[-1].error] for key, outs in got.items()}


@pytest.mark.parametrize("seed", range(8))
def test_outputs_are_the_same_however_they_are_handed_out(seed: int) -> None:
    # no emit, held until the next decode starts, handed out at once
    assert _serve(seed, "none") == _serve(seed, "overlap") == _serve(seed, "off")


def test_on_a_runner_whose_decode_is_done_when_it_returns_nothing_is_held() -> None:
    runner = FakeRunner(n_slots=4)
    runner.decodes_async = False  # the CPU: holding would only delay the tokens a step
    engine, _ = _engine(runner, n_slots=4, n_batch=32)
    _add(engine, "a", _prompt(0, 6), LONG)
    emitted: list[StepOutput] = []
    outs = engine.step(emit=emitted.extend)
    assert [o.num_output_tokens for o in outs] == [1] and not emitted
