"""The scheduler driven through Engine.step() over a deterministic fake model.

The fake model's next token is a function of the slot's KV cells alone, and the fake checks
that every slot holds exactly the sequence's earlier tokens, so wrong cache bookkeeping shows up
as wrong text or as an assertion in the fake.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from fake_runner import E_ACUTE, EOS, EURO_HEAD, EURO_TAIL, FakeRunner, NextToken, hashed_next

from batching.config import EngineConfig
from batching.engine import Engine
from batching.outputs import StepOutput
from batching.params import ParamError, SamplingParams
from batching.scheduler import KV_FULL_ERROR

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


def _engine(runner: FakeRunner | None = None, **config: object) -> tuple[Engine, FakeRunner]:
    runner = runner or FakeRunner()
    return Engine(runner, EngineConfig(model_path=Path("fake"), **config)), runner  # type: ignore[arg-type]


def _add(
    engine: Engine, request_id: str, prompt: list[int], params: SamplingParams, n: int = 1
) -> None:
    engine.add(engine.new_sequences(request_id, prompt, params, n))


Outputs = dict[tuple[str, int], list[StepOutput]]


def _drive(engine: Engine, outputs: Outputs | None = None, max_steps: int = 1000) -> Outputs:
    """Step until the engine has no work; every output by (request_id, index)."""
    outputs = outputs if outputs is not None else defaultdict(list)
    for _ in range(max_steps):
        if not engine.has_work:
            return outputs
        for out in engine.step():
            outputs[(out.request_id, out.index)].append(out)
    raise AssertionError("the engine did not finish")


def _step(engine: Engine, outputs: Outputs) -> list[StepOutput]:
    step = engine.step()
    for out in step:
        outputs[(out.request_id, out.index)].append(out)
    return step


def _text(outs: list[StepOutput]) -> str:
    return "".join(o.delta_text for o in outs)


def _tokens(outs: list[StepOutput]) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def _finish(outs: list[StepOutput]) -> str | None:
    finished = [o for o in outs if o.finish_reason is not None]
    assert len(finished) == 1, f"{len(finished)} finishing outputs"
    assert outs[-1] is finished[0], "an output after the finishing one"
    return finished[0].finish_reason


def _greedy(prompt: list[int], n: int, next_token: NextToken = hashed_next) -> list[int]:
    """What the fake model says, token by token, for a prompt."""
    history, out = list(prompt), []
    for _ in range(n):
        out.append(next_token(history))
        history.append(out[-1])
    return out


def _decode(runner: FakeRunner, tokens: list[int]) -> str:
    return b"".join(runner.pieces[t] for t in tokens).decode("utf-8", errors="replace")


def _prompt(first: int, length: int) -> list[int]:
    return [1] + [3 + (first + i) % 60 for i in range(length - 1)]


def _script(prompt_len: int, tokens: list[int]) -> NextToken:
    """A model that says `tokens` after a prompt of `prompt_len`, then its usual words."""

    def next_token(history: list[int]) -> int:
        i = len(history) - prompt_len
        return tokens[i] if 0 <= i < len(tokens) else hashed_next(history)

    return next_token


# -- admission and batching ----------------------------------------------------------------


def test_more_requests_than_slots_all_finish_with_their_own_tokens() -> None:
    engine, runner = _engine(n_slots=2, n_batch=64)
    prompts = {f"r{i}": _prompt(7 * i, 5 + i) for i in range(6)}
    for i, (rid, prompt) in enumerate(prompts.items()):
        _add(engine, rid, prompt, SamplingParams(temperature=0.0, max_tokens=3 + i))
    outputs = _drive(engine)
    for i, (rid, prompt) in enumerate(prompts.items()):
        outs = outputs[(rid, 0)]
        assert _finish(outs) == "length"
        assert _tokens(outs) == _greedy(prompt, 3 + i)
        assert _text(outs) == _decode(runner, _greedy(prompt, 3 + i))
    assert all(len({s for s, _, _ in b.tokens}) <= 2 for b in runner.batches)


@pytest.mark.parametrize("shortest_first", [False, True])  # equal lengths: arrival order
def test_requests_are_admitted_in_fifo_order(shortest_first: bool) -> None:
    engine, _ = _engine(n_slots=2, n_batch=64, shortest_first=shortest_first)
    for i in range(5):
        _add(engine, f"r{i}", _prompt(i, 6), SamplingParams(temperature=0.0, max_tokens=2 + i))
    first_output: list[str] = []
    while engine.has_work:
        for out in engine.step():
            if out.request_id not in first_output:
                first_output.append(out.request_id)
    assert first_output == ["r0", "r1", "r2", "r3", "r4"]


def test_split_prompts_fill_each_step_up_to_n_batch() -> None:
    engine, runner = _engine(
        n_slots=4, n_batch=8, split_prompts=True, prompts_first=False, short_queue=-1
    )
    for i in range(4):
        _add(engine, f"r{i}", _prompt(i, 11 + 3 * i), SamplingParams(max_tokens=6, seed=i))
    decoding: list[int] = []
    prefilling: list[int] = []
    while engine.has_work:
        running = engine.scheduler.running
        decoding.append(sum(not s.is_prefilling for s in running))
        waiting = sum(s.num_prompt_tokens for g in engine.scheduler.waiting for s in g)
        prefilling.append(sum(s.num_prompt_tokens - s.num_computed_tokens for s in running))
        prefilling[-1] += waiting
        engine.step()
    assert len(runner.batches) == len(decoding)
    for batch, n_decode, n_prompt_left in zip(runner.batches, decoding, prefilling, strict=True):
        assert batch.num_decode == n_decode
        assert batch.num_decode + batch.num_prefill <= 8
        # the budget left after the decode tokens goes to prompts while any are left
        assert batch.num_prefill == min(8 - n_decode, n_prompt_left)
    assert runner.num_prefill_tokens == sum(11 + 3 * i for i in range(4))


def _composition(runner: FakeRunner) -> list[tuple[int, int]]:
    return [(b.num_decode, b.num_prefill) for b in runner.batches]


def test_a_new_prompt_starts_only_in_a_step_that_finishes_it() -> None:
    engine, runner = _engine(n_slots=4, n_batch=16, prompts_first=False, short_queue=-1)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    for i, length in enumerate([6, 12, 30]):
        _add(engine, f"r{i}", _prompt(10 * i, length), params)
    for _ in range(5):
        engine.step()
    # r1 (12 tokens) waits for a step with room for all of it; r2 (30 tokens, more than any
    # step holds) starts alone in a step and is split over the steps that follow
    assert _composition(runner) == [(0, 6), (1, 12), (2, 14), (2, 14), (2, 2)]


@pytest.mark.parametrize(
    ("short_queue", "waiting", "started"),
    [(2, 2, [20, 22]), (-1, 2, [20]), (2, 3, [20]), (3, 3, [20, 22])],
)
def test_a_short_queue_doubles_the_step_and_a_longer_one_keeps_its_budget(
    short_queue: int, waiting: int, started: list[int]
) -> None:
    engine, runner = _engine(n_slots=4, n_batch=32, prompts_first=False, short_queue=short_queue)
    for i, length in enumerate([20, 22, 24][:waiting]):
        _add(engine, f"r{i}", _prompt(10 * i, length), SamplingParams(max_tokens=4))
    engine.step()
    # a 32-token budget holds one of these prompts, a doubled one two (66 > 64 for all three)
    assert sorted(s.num_prompt_tokens for s in engine.scheduler.running) == started
    assert _composition(runner) == [(0, sum(started))]


def test_split_prompts_let_a_new_prompt_take_the_budget_left() -> None:
    engine, runner = _engine(
        n_slots=4, n_batch=16, split_prompts=True, prompts_first=False, short_queue=-1
    )
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    for i, length in enumerate([6, 12, 30]):
        _add(engine, f"r{i}", _prompt(10 * i, length), params)
    for _ in range(3):
        engine.step()
    assert _composition(runner) == [(0, 16), (1, 15), (2, 14)]


def test_a_cached_prefix_counts_only_the_tokens_left_to_compute() -> None:
    engine, runner = _engine(n_slots=4, n_batch=16, prompts_first=False)
    params = SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True)
    _add(engine, "long", _prompt(0, 4), params)  # keeps slot 0 busy throughout
    first, second = _prompt(50, 20), _prompt(20, 20)
    _add(engine, "first", first, SamplingParams(temperature=0.0, max_tokens=2))
    _add(engine, "second", second, SamplingParams(temperature=0.0, max_tokens=2))
    while len(engine.scheduler.running) > 1 or engine.scheduler.waiting:
        engine.step()
    # 22 tokens each, 20 of them in slot 1's or slot 2's cells: both fit in one step's 15
    _add(engine, "again-second", [*second, 3, 4], params)
    _add(engine, "again-first", [*first, 3, 4], params)
    engine.step()
    assert _composition(runner)[-1] == (1, 2 + 2)


@pytest.mark.parametrize("n_batch", [4, 7])
def test_chunked_prefill_gives_the_same_tokens(n_batch: int) -> None:
    def run(n_batch: int) -> tuple[Outputs, FakeRunner]:
        engine, runner = _engine(n_slots=4, n_batch=n_batch, short_queue=-1)
        for i in range(3):
            params = SamplingParams(temperature=0.8, max_tokens=10, seed=11 + i)
            _add(engine, f"r{i}", _prompt(5 * i, 23 + i), params)
        return _drive(engine), runner

    chunked, runner = run(n_batch)
    whole, _ = run(64)
    assert max(b.num_prefill for b in runner.batches) <= n_batch
    assert sum(b.num_prefill > 0 for b in runner.batches) > 3  # the prompts were split
    for key, outs in whole.items():
        assert _tokens(chunked[key]) == _tokens(outs)
        assert _text(chunked[key]) == _text(outs)
        assert _finish(chunked[key]) == "length"


# -- abort -----------------------------------------------------------------------------------


def test_abort_of_waiting_and_running_requests_frees_the_slot_for_the_next() -> None:
    engine, _ = _engine(n_slots=1, n_batch=64)
    long = SamplingParams(temperature=0.0, max_tokens=50)
    _add(engine, "a", _prompt(0, 6), long)
    _add(engine, "b", _prompt(1, 6), long)
    _add(engine, "c", _prompt(2, 6), SamplingParams(temperature=0.0, max_tokens=3))
    outputs: Outputs = defaultdict(list)
    assert [o.request_id for o in _step(engine, outputs)] == ["a"]

    engine.abort("b")  # waiting
    step = _step(engine, outputs)
    assert {o.request_id for o in step} == {"a", "b"}
    assert _finish(outputs[("b", 0)]) == "abort"
    assert outputs[("b", 0)][0].num_output_tokens == 0

    engine.abort("a")  # running: "c" takes its slot in the very next step
    step = _step(engine, outputs)
    assert [(o.request_id, o.finish_reason) for o in step] == [("a", "abort"), ("c", None)]
    assert outputs[("a", 0)][-1].num_output_tokens == 2

    _drive(engine, outputs)
    assert _finish(outputs[("c", 0)]) == "length"
    assert _tokens(outputs[("c", 0)]) == _greedy(_prompt(2, 6), 3)
    assert engine.slots.num_busy == 0


def test_abort_of_an_unknown_request_is_harmless() -> None:
    engine, _ = _engine(n_slots=1)
    _add(engine, "a", _prompt(0, 6), GREEDY)
    engine.abort("nope")
    assert _finish(_drive(engine)[("a", 0)]) == "length"


def test_abort_during_an_n2_prefill_finishes_each_choice_once() -> None:
    engine, _ = _engine(n_slots=2, n_batch=4)
    _add(engine, "a", _prompt(0, 20), GREEDY, n=2)
    outputs: Outputs = defaultdict(list)
    _step(engine, outputs)  # the first chunk of the shared prompt
    engine.abort("a")
    _drive(engine, outputs)
    assert sorted(outputs) == [("a", 0), ("a", 1)]
    assert _finish(outputs[("a", 0)]) == "abort"
    assert _finish(outputs[("a", 1)]) == "abort"
    assert engine.slots.num_busy == 0


# -- n > 1 -----------------------------------------------------------------------------------


def test_n2_choices_share_one_prefill_and_equal_single_requests() -> None:
    prompt = _prompt(3, 16)
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=5, ignore_eos=True)
    engine, runner = _engine(FakeRunner(peak=1.0), n_slots=4, n_batch=64)
    _add(engine, "a", prompt, params, n=2)
    outputs = _drive(engine)
    assert runner.num_prefill_tokens == len(prompt)
    cps = [op for op in runner.kv_ops if op.kind == "cp"]
    assert len(cps) == 1 and cps[0].pos == len(prompt) and cps[0].src != cps[0].dst

    for index, seed in [(0, 5), (1, 6)]:  # choice i samples like a request with seed + i
        outs = outputs[("a", index)]
        assert _finish(outs) == "length"
        assert [o.num_prompt_tokens for o in outs] == [len(prompt)] * 6
        single, _ = _engine(FakeRunner(peak=1.0), n_slots=1)
        alone = SamplingParams(temperature=1.0, max_tokens=6, seed=seed, ignore_eos=True)
        _add(single, "s", prompt, alone)
        assert _tokens(outs) == _tokens(_drive(single)[("s", 0)])
    assert _tokens(outputs[("a", 0)]) != _tokens(outputs[("a", 1)])


def test_an_n2_request_waits_for_a_step_that_finishes_its_prompt_and_gives_both_choices() -> None:
    engine, runner = _engine(n_slots=4, n_batch=16, prompts_first=False, short_queue=-1)
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    _add(engine, "first", _prompt(0, 6), params)
    _add(engine, "pair", _prompt(30, 12), params, n=2)  # 12 > the 10 left: the next step
    outputs = _drive(engine)
    assert _composition(runner)[:2] == [(0, 6), (1, 12)]  # its prompt is computed once
    assert [_finish(outputs[("pair", i)]) for i in (0, 1)] == ["length", "length"]
    assert len(_tokens(outputs[("pair", 1)])) == 4


def test_n2_choices_when_the_parent_stops_at_its_first_token() -> None:
    prompt = _prompt(0, 8)
    runner = FakeRunner(next_token=_script(len(prompt), [EOS]))
    engine, _ = _engine(runner, n_slots=2)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, max_tokens=5), n=2)
    outputs = _drive(engine)
    for index in (0, 1):
        assert _finish(outputs[("a", index)]) == "stop"
        assert _tokens(outputs[("a", index)]) == [EOS]


def test_fork_cache_copy_survives_a_step_with_nothing_to_run() -> None:
    # The choices of "a" finish in the step that computes their prompt, so the fork's cell copy
    # is still queued; a step with nothing to decode (only an abort) must not lose it, because
    # the fork's slot is now advertised as caching the prompt.
    prompt = _prompt(0, 10)
    engine, _ = _engine(n_slots=2, n_batch=64)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, max_tokens=1), n=2)
    _add(engine, "w", _prompt(30, 10), GREEDY)
    outputs: Outputs = defaultdict(list)
    _step(engine, outputs)
    engine.abort("w")
    _step(engine, outputs)
    assert _finish(outputs[("w", 0)]) == "abort"

    other = [5, *_prompt(40, 9)]  # shares nothing with `prompt`: takes the older slot
    _add(engine, "x", other, GREEDY)
    _add(engine, "y", prompt, GREEDY)
    _drive(engine, outputs)
    assert outputs[("y", 0)][0].num_cached_tokens == len(prompt) - 1
    assert _tokens(outputs[("y", 0)]) == _greedy(prompt, 8)
    assert _tokens(outputs[("x", 0)]) == _greedy(other, 8)


# -- prefix cache ----------------------------------------------------------------------------


def test_prefix_reuse_computes_only_the_new_suffix() -> None:
    engine, runner = _engine(n_slots=2, n_batch=64)
    prompt = _prompt(0, 20)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, max_tokens=4))
    _drive(engine)
    suffix = [t for t in _prompt(50, 5)[1:] if t != _greedy(prompt, 1)[0]][:4]
    longer = prompt + suffix
    before = runner.num_prefill_tokens
    _add(engine, "b", longer, GREEDY)
    outs = _drive(engine)[("b", 0)]
    assert runner.num_prefill_tokens - before == len(suffix)
    assert {o.num_cached_tokens for o in outs} == {len(prompt)}
    assert _tokens(outs) == _greedy(longer, 8)


def test_the_same_prompt_again_recomputes_only_its_last_token() -> None:
    engine, runner = _engine(n_slots=2)
    prompt = _prompt(0, 12)
    for rid in ("a", "b"):
        before = runner.num_prefill_tokens
        _add(engine, rid, prompt, GREEDY)
        outs = _drive(engine)[(rid, 0)]
        assert _tokens(outs) == _greedy(prompt, 8)
    assert runner.num_prefill_tokens - before == 1
    assert outs[0].num_cached_tokens == len(prompt) - 1


def test_without_prefix_cache_every_prompt_is_computed_in_full() -> None:
    engine, runner = _engine(n_slots=1, prefix_cache=False)
    prompt = _prompt(0, 12)
    for rid in ("a", "b"):
        _add(engine, rid, prompt, GREEDY)
        outs = _drive(engine)[(rid, 0)]
        assert outs[0].num_cached_tokens == 0
        assert _tokens(outs) == _greedy(prompt, 8)
    assert runner.num_prefill_tokens == 2 * len(prompt)


# -- errors ----------------------------------------------------------------------------------


def test_a_prompt_longer_than_the_context_fails_alone() -> None:
    engine, _ = _engine(FakeRunner(n_ctx=32), n_slots=2)
    _add(engine, "ok", _prompt(0, 10), GREEDY)
    _add(engine, "big", _prompt(1, 40), GREEDY)
    _add(engine, "empty", [], GREEDY)
    outputs = _drive(engine)
    big = outputs[("big", 0)]
    assert _finish(big) == "error"
    assert big[-1].error is not None and "40" in big[-1].error
    assert _finish(outputs[("empty", 0)]) == "error"
    assert _finish(outputs[("ok", 0)]) == "length"


def test_output_stops_at_the_context_length() -> None:
    engine, _ = _engine(FakeRunner(n_ctx=32), n_slots=1)
    _add(engine, "a", _prompt(0, 29), SamplingParams(temperature=0.0, max_tokens=10))
    outs = _drive(engine)[("a", 0)]
    assert _finish(outs) == "length"
    assert outs[-1].num_output_tokens == 3


def test_kv_full_evicts_idle_prefix_caches_first() -> None:
    runner = FakeRunner(n_cells=40)
    engine, _ = _engine(runner, n_slots=2, n_ctx=40)
    _add(engine, "first", _prompt(0, 10), SamplingParams(temperature=0.0, max_tokens=7))
    _add(engine, "old", _prompt(30, 10), SamplingParams(temperature=0.0, max_tokens=6))
    _drive(engine)
    assert engine.slots.idle_cached() == [1, 0]  # "old" (slot 1) finished first
    prompt = [*_prompt(20, 20)[1:], 7]  # no BOS: nothing in common with either cached slot
    _add(engine, "new", prompt, SamplingParams(temperature=0.0, max_tokens=12))
    outs = _drive(engine)[("new", 0)]  # into slot 0, whose cache it overwrites
    assert runner.num_full == 1
    assert runner.cleared == [1]
    assert _finish(outs) == "length"
    assert _tokens(outs) == _greedy(prompt, 12)


def test_kv_full_without_idle_caches_fails_the_newest_request() -> None:
    runner = FakeRunner(n_cells=40)
    engine, _ = _engine(runner, n_slots=2, n_ctx=40)
    params = SamplingParams(temperature=0.0, max_tokens=25)
    outputs: Outputs = defaultdict(list)
    _add(engine, "old", _prompt(0, 10), params)
    _step(engine, outputs)
    _add(engine, "new", _prompt(9, 10), params)
    _drive(engine, outputs)
    new = outputs[("new", 0)]
    assert _finish(new) == "error"
    assert new[-1].error == KV_FULL_ERROR
    assert 0 < new[-1].num_output_tokens < 25
    old = outputs[("old", 0)]
    assert _finish(old) == "length"
    assert _tokens(old) == _greedy(_prompt(0, 10), 25)
    assert runner.cleared == [1]
    assert engine.slots.num_busy == 0


def test_kv_full_during_an_n2_prefill_fails_each_choice_once() -> None:
    runner = FakeRunner(n_cells=30)
    engine, _ = _engine(runner, n_slots=3, n_ctx=64)
    outputs: Outputs = defaultdict(list)
    _add(engine, "old", _prompt(0, 10), SamplingParams(temperature=0.0, max_tokens=15))
    _step(engine, outputs)
    _add(engine, "new", _prompt(9, 20), GREEDY, n=2)  # 11 + 20 cells > 30
    _drive(engine, outputs)
    assert _finish(outputs[("new", 0)]) == "error"
    assert _finish(outputs[("new", 1)]) == "error"
    assert _finish(outputs[("old", 0)]) == "length"


# -- finishing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ignore_eos", "reason", "n_tokens"), [(False, "stop", 4), (True, "length", 6)]
)
def test_eos_stops_unless_ignored(ignore_eos: bool, reason: str, n_tokens: int) -> None:
    prompt = _prompt(0, 6)
    runner = FakeRunner(next_token=_script(len(prompt), [20, 21, 22, EOS, 23, 24]))
    engine, _ = _engine(runner, n_slots=1)
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=ignore_eos)
    _add(engine, "a", prompt, params)
    outs = _drive(engine)[("a", 0)]
    assert _finish(outs) == reason
    assert _tokens(outs) == [20, 21, 22, EOS, 23, 24][:n_tokens]
    assert _text(outs) == _decode(runner, _tokens(outs))
    assert outs[-1].num_output_tokens == n_tokens


def test_stop_token_ids_stop_without_their_text() -> None:
    prompt = _prompt(0, 6)
    engine, _ = _engine(FakeRunner(next_token=_script(len(prompt), [20, 21, 22])), n_slots=1)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, stop_token_ids=(21,)))
    outs = _drive(engine)[("a", 0)]
    assert _finish(outs) == "stop"
    assert _text(outs) == " w20"


def test_stop_string_across_tokens_is_never_emitted() -> None:
    prompt = _prompt(0, 6)
    engine, _ = _engine(FakeRunner(next_token=_script(len(prompt), [3, 4, 5, 6])), n_slots=1)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, stop=("3 w4",)))
    outs = _drive(engine)[("a", 0)]
    assert [o.delta_text for o in outs] == [" w", ""]
    assert _finish(outs) == "stop"
    assert outs[-1].num_output_tokens == 2


@pytest.mark.parametrize(
    ("max_tokens", "deltas"),
    [(3, [" w3", " ", "w4 w5"]), (2, [" w3", " w4"])],
    ids=["not-a-stop", "length"],
)
def test_text_held_for_a_stop_string_is_released(max_tokens: int, deltas: list[str]) -> None:
    # " w4" may begin "w4 w9": "w4" waits until " w5" rules it out, or until the last token
    prompt = _prompt(0, 6)
    engine, _ = _engine(FakeRunner(next_token=_script(len(prompt), [3, 4, 5])), n_slots=1)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=("w4 w9",))
    _add(engine, "a", prompt, params)
    outs = _drive(engine)[("a", 0)]
    assert [o.delta_text for o in outs] == deltas
    assert _finish(outs) == "length"


def test_multibyte_characters_split_across_tokens_stream_whole() -> None:
    prompt = _prompt(0, 6)
    script = [EURO_HEAD, EURO_TAIL, E_ACUTE, 3, EURO_HEAD]
    engine, _ = _engine(FakeRunner(next_token=_script(len(prompt), script)), n_slots=1)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, max_tokens=5))
    outs = _drive(engine)[("a", 0)]
    assert [o.delta_text for o in outs] == ["", "€", "é", " w3", "\ufffd"]


def test_stop_string_after_a_multibyte_character() -> None:
    prompt = _prompt(0, 6)
    script = [3, EURO_HEAD, EURO_TAIL, 4]
    engine, _ = _engine(FakeRunner(next_token=_script(len(prompt), script)), n_slots=1)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, stop=("€",)))
    outs = _drive(engine)[("a", 0)]
    assert _text(outs) == " w3"
    assert _finish(outs) == "stop"


def test_max_tokens_and_the_counts_of_every_output() -> None:
    engine, runner = _engine(n_slots=2)
    prompt = _prompt(0, 9)
    _add(engine, "a", prompt, SamplingParams(temperature=0.0, max_tokens=5))
    outs = _drive(engine)[("a", 0)]
    assert _finish(outs) == "length"
    assert [o.num_output_tokens for o in outs] == [1, 2, 3, 4, 5]
    assert {o.num_prompt_tokens for o in outs} == {9}
    assert [len(o.token_ids) for o in outs] == [1] * 5
    assert outs[0].queue_s is not None and outs[0].queue_s >= 0
    assert all(o.queue_s is None for o in outs[1:])
    assert _text(outs) == _decode(runner, _greedy(prompt, 5))


def test_logprobs_reach_the_outputs() -> None:
    engine, _ = _engine(n_slots=1)
    _add(engine, "a", _prompt(0, 6), SamplingParams(temperature=0.0, max_tokens=3, logprobs=2))
    for out in _drive(engine)[("a", 0)]:
        assert out.logprobs is not None and len(out.logprobs) == 1
        lp = out.logprobs[0]
        assert lp.token_id == out.token_ids[0]
        assert len(lp.top) == 2
        assert lp.top[0][0] == lp.token_id  # greedy: the token is the best alternative


def test_grammar_constrains_the_tokens_and_is_closed_at_the_end() -> None:
    engine, runner = _engine(n_slots=1)
    _add(engine, "a", _prompt(0, 6), SamplingParams(max_tokens=10, seed=3, grammar="only 5 7"))
    outs = _drive(engine)[("a", 0)]
    assert set(_tokens(outs)) <= {5, 7}
    assert runner.grammars[0].accepted == _tokens(outs)
    assert runner.grammars[0].is_closed


def test_a_grammar_that_does_not_parse_is_a_param_error() -> None:
    engine, _ = _engine(n_slots=1)
    with pytest.raises(ParamError) as err:
        engine.new_sequences("a", _prompt(0, 6), SamplingParams(grammar="root ::= nonsense"))
    assert err.value.param == "grammar"
