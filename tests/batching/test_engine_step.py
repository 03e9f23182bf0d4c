"""Engine.step with prompts first: a step that finishes a prompt while others decode runs the
prompt in a llama_decode of its own, hands its first token out, then runs the decodes."""

from __future__ import annotations

from fake_runner import FakeRunner

from batching.outputs import StepOutput
from batching.params import SamplingParams
from tests.batching.test_scheduler import _add, _composition, _drive, _engine, _prompt, _tokens

LONG = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def _start_one_and_add_another(**config: object) -> tuple[list[StepOutput], list[str], FakeRunner]:
    engine, runner = _engine(n_slots=4, n_batch=32, **config)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()  # old's prompt: it decodes from now on
    _add(engine, "new", _prompt(20, 12), LONG)
    order: list[str] = []

    def emit(outs: list[StepOutput]) -> None:
        order.extend(f"emit:{o.request_id}" for o in outs)

    outs = engine.step(emit=emit)
    order.extend(f"return:{o.request_id}" for o in outs)
    return outs, order, runner


def test_a_finishing_prompt_runs_before_the_decodes_and_its_first_token_goes_out_first() -> None:
    _, order, runner = _start_one_and_add_another()
    # the prompt alone, then both sequences decode: the new one its second token already
    assert _composition(runner) == [(0, 6), (0, 12), (2, 0)]
    assert order == ["emit:new", "return:old", "return:new"]


def test_prompts_first_off_runs_the_step_in_one_call() -> None:
    _, order, runner = _start_one_and_add_another(prompts_first=False)
    assert _composition(runner) == [(0, 6), (1, 12)]
    assert order == ["return:old", "return:new"]


def test_without_emit_the_step_returns_both_calls_outputs() -> None:
    engine, _ = _engine(n_slots=4, n_batch=32)
    _add(engine, "old", _prompt(0, 6), LONG)
    engine.step()
    _add(engine, "new", _prompt(20, 12), LONG)
    outs = engine.step()
    assert [(o.request_id, len(o.token_ids)) for o in outs] == [("new", 1), ("old", 1), ("new", 1)]


def test_a_prompt_that_only_continues_does_not_split_the_step() -> None:
    engine, runner = _engine(n_slots=4, n_batch=16)
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
