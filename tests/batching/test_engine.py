"""The engine on the real tiny GGUF through llama.cpp: what batching must not change.

llama.cpp's CPU kernels move the logits by about 1e-3 when sequences share a pass, so the
prompts here are ones without near-ties: their texts must come out the same alone and batched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from batching.async_engine import AsyncEngine
from batching.config import EngineConfig
from batching.engine import Engine, EngineUnavailableError, QueueFullError
from batching.outputs import StepOutput, StepStats
from batching.params import ParamError, SamplingParams
from batching.runner import LlamaRunner

pytestmark = pytest.mark.model

PROMPTS = [
    "Hello world, the cat sat on the mat.",
    "Once upon a time there was a small village by the sea where",
    "The quick brown fox",
    "In 1999 the committee decided that every member should bring three apples and a pear",
    "Why?",
    "A list of colours: red, green, blue, yellow,",
    "She opened the door and saw",
    "Numbers: 1 2 3 4 5 6 7 8 9 10 11 12",
]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def runner(tiny_model: Path) -> Iterator[LlamaRunner]:
    r = LlamaRunner(EngineConfig(model_path=tiny_model, n_slots=8, n_ctx=8192, n_batch=512))
    yield r
    r.close()


def make_engine(runner: LlamaRunner, **kw: int) -> Engine:
    base = {"n_slots": 8, "n_ctx": 8192, "n_batch": 512}
    base.update(kw)
    config = EngineConfig(model_path=runner.info.path, **base)  # type: ignore[arg-type]
    for slot in range(config.n_slots):
        runner.clear_slot(slot)
    return Engine(runner, config)


def run(
    engine: Engine,
    requests: list[tuple[str, list[int], SamplingParams]],
    n: int = 1,
) -> dict[tuple[str, int], list[StepOutput]]:
    for request_id, ids, params in requests:
        engine.add(engine.new_sequences(request_id, ids, params, n))
    outs: dict[tuple[str, int], list[StepOutput]] = {}
    for _ in range(10_000):
        if not engine.has_work:
            break
        for out in engine.step():
            outs.setdefault((out.request_id, out.index), []).append(out)
    assert not engine.has_work
    return outs


def tokens_of(outs: list[StepOutput]) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def text_of(outs: list[StepOutput]) -> str:
    return "".join(o.delta_text for o in outs)


def ids(runner: LlamaRunner, text: str) -> list[int]:
    return runner.tokenize(text, add_bos=True, parse_special=False)


@pytest.mark.parametrize("n_requests", [1, 3, 8])
def test_batched_greedy_tokens_equal_each_request_alone(
    runner: LlamaRunner, n_requests: int
) -> None:
    prompts = PROMPTS[:n_requests]
    alone = [
        tokens_of(
            run(make_engine(runner, prefix_cache=False), [("a", ids(runner, p), GREEDY)])[("a", 0)]
        )
        for p in prompts
    ]
    engine = make_engine(runner, prefix_cache=False)
    together = run(engine, [(f"r{i}", ids(runner, p), GREEDY) for i, p in enumerate(prompts)])
    assert [tokens_of(together[(f"r{i}", 0)]) for i in range(n_requests)] == alone
    assert all(len(t) == GREEDY.max_tokens for t in alone)


def test_chunked_prefill_under_a_small_budget_gives_the_same_tokens(runner: LlamaRunner) -> None:
    requests = [(f"r{i}", ids(runner, p), GREEDY) for i, p in enumerate(PROMPTS)]
    wide = run(make_engine(runner, prefix_cache=False), requests)
    narrow = run(make_engine(runner, prefix_cache=False, n_batch=8), requests)
    assert {k: tokens_of(v) for k, v in narrow.items()} == {
        k: tokens_of(v) for k, v in wide.items()
    }


def test_a_doubled_step_fits_the_context_and_gives_the_same_tokens(
    runner: LlamaRunner, tiny_model: Path
) -> None:
    # a 16-token step budget, doubled while at most 2 requests wait: prompts of 14 and 16
    # tokens both start in the first step, one llama_decode of 30 tokens
    config = EngineConfig(model_path=tiny_model, n_slots=4, n_ctx=1024, n_batch=16, short_queue=2)
    assert config.max_call_tokens == 32
    prompts = [ids(runner, p) for p in (PROMPTS[1], PROMPTS[5])]
    assert [len(p) for p in prompts] == [14, 16]
    requests = [(f"r{i}", p, GREEDY) for i, p in enumerate(prompts)]
    small = LlamaRunner(config)
    try:
        engine = Engine(small, config)
        for request_id, prompt, params in requests:
            engine.add(engine.new_sequences(request_id, prompt, params))
        first = {out.request_id: out.token_ids for out in engine.step()}
        assert [s.is_prefilling for s in engine.scheduler.running] == [False, False]
        doubled = {k: first[k[0]] + tokens_of(v) for k, v in run(engine, []).items()}
    finally:
        small.close()
    reference = run(make_engine(runner, prefix_cache=False), requests)
    assert doubled == {k: tokens_of(v) for k, v in reference.items()}


def test_seeded_sampling_is_reproducible_alone_and_in_a_busy_batch(runner: LlamaRunner) -> None:
    seeded = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=1234, ignore_eos=True)
    prompt = ids(runner, PROMPTS[1])
    first = tokens_of(run(make_engine(runner), [("s", prompt, seeded)])[("s", 0)])
    again = tokens_of(run(make_engine(runner), [("s", prompt, seeded)])[("s", 0)])
    others = [
        (f"o{i}", ids(runner, p), SamplingParams(max_tokens=20, temperature=0.9, seed=i))
        for i, p in enumerate(PROMPTS[2:])
    ]
    busy = run(make_engine(runner), [*others[:3], ("s", prompt, seeded), *others[3:]])
    assert first == again == tokens_of(busy[("s", 0)])
    other_seed = SamplingParams(
        max_tokens=16, temperature=1.0, top_p=0.95, seed=99, ignore_eos=True
    )
    assert tokens_of(run(make_engine(runner), [("s", prompt, other_seed)])[("s", 0)]) != first


def _first_seen(engine: Engine, runner: LlamaRunner) -> list[str]:
    """Ids in the order their first output came, for every prompt queued at once."""
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(PROMPTS):
        engine.add(engine.new_sequences(f"r{i}", ids(runner, p), params))
    first_seen: list[str] = []
    finished: set[str] = set()
    while engine.has_work:
        assert engine.stats().slots_busy <= 2
        for out in engine.step():
            if out.request_id not in first_seen:
                first_seen.append(out.request_id)
            if out.finish_reason:
                assert out.finish_reason == "length"
                finished.add(out.request_id)
    assert finished == set(first_seen)
    return first_seen


def test_more_requests_than_slots_all_complete_shortest_prompt_first(runner: LlamaRunner) -> None:
    config = EngineConfig(model_path=runner.info.path, n_slots=2, n_ctx=8192, n_batch=512)
    for slot in range(8):
        runner.clear_slot(slot)
    engine = Engine(runner, config, clock=lambda: 0.0)  # no time passes: no aging
    by_length = sorted(range(len(PROMPTS)), key=lambda i: len(ids(runner, PROMPTS[i])))
    assert _first_seen(engine, runner) == [f"r{i}" for i in by_length]


def test_more_requests_than_slots_all_complete_in_fifo_order(runner: LlamaRunner) -> None:
    engine = make_engine(runner, n_slots=2, shortest_first=False)
    assert _first_seen(engine, runner) == [f"r{i}" for i in range(len(PROMPTS))]


def test_abort_frees_the_slot_and_a_waiting_request_starts_next_step(runner: LlamaRunner) -> None:
    engine = make_engine(runner, n_slots=1)
    long = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
    engine.add(engine.new_sequences("long", ids(runner, PROMPTS[0]), long))
    engine.add(engine.new_sequences("next", ids(runner, PROMPTS[1]), GREEDY))
    for _ in range(3):
        assert {o.request_id for o in engine.step()} == {"long"}
    engine.abort("long")
    outs = engine.step()
    assert any(o.request_id == "long" and o.finish_reason == "abort" for o in outs)
    assert any(o.request_id == "next" and o.token_ids for o in outs)
    assert engine.stats().slots_busy == 1
    rest = run(engine, [])
    assert rest[("next", 0)][-1].finish_reason == "length"


def test_prefix_reuse_skips_the_shared_prefix_and_keeps_the_text(runner: LlamaRunner) -> None:
    prefix = " ".join(f"word{i}" for i in range(60))
    first = ids(runner, prefix + " and then the first question")
    second = ids(runner, prefix + " and then another question")
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared >= 100
    cold = run(make_engine(runner, prefix_cache=False), [("b", second, GREEDY)])[("b", 0)]
    engine = make_engine(runner)
    run(engine, [("a", first, GREEDY)])
    warm = run(engine, [("b", second, GREEDY)])[("b", 0)]
    assert warm[-1].num_cached_tokens >= 100
    assert cold[-1].num_cached_tokens == 0
    assert text_of(warm) == text_of(cold)


def test_n_choices_share_the_prompt_and_differ_by_seed(runner: LlamaRunner) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7, ignore_eos=True)
    outs = run(make_engine(runner), [("n", ids(runner, PROMPTS[3]), params)], n=3)
    choices = [tokens_of(outs[("n", i)]) for i in range(3)]
    assert all(len(c) == 10 for c in choices)
    assert len({tuple(c) for c in choices}) == 3
    alone = SamplingParams(max_tokens=10, temperature=1.0, seed=8, ignore_eos=True)
    single = run(make_engine(runner), [("s", ids(runner, PROMPTS[3]), alone)])
    assert tokens_of(single[("s", 0)]) == choices[1]


def test_too_long_prompt_errors_while_the_others_finish(runner: LlamaRunner) -> None:
    engine = make_engine(runner, max_seq_len=256)
    too_long = ids(runner, " ".join(["apple"] * 400))
    outs = run(engine, [("ok", ids(runner, PROMPTS[0]), GREEDY), ("big", too_long, GREEDY)])
    assert outs[("big", 0)][-1].finish_reason == "error"
    assert "context" in (outs[("big", 0)][-1].error or "")
    assert outs[("ok", 0)][-1].finish_reason == "length"


def test_full_kv_cache_stops_one_request_with_a_reason_and_the_others_finish(
    tiny_model: Path,
) -> None:
    config = EngineConfig(model_path=tiny_model, n_slots=4, n_ctx=256, n_batch=256, kv_unified=True)
    runner = LlamaRunner(config)
    engine = Engine(runner, config)
    params = SamplingParams(max_tokens=150, temperature=0.0, ignore_eos=True)
    prompts = [ids(runner, f"{p} {p}") for p in PROMPTS[:4]]
    outs = run(engine, [(f"r{i}", p, params) for i, p in enumerate(prompts)])
    reasons = {k: v[-1].finish_reason for k, v in outs.items()}
    assert "error" in reasons.values()
    assert "length" in reasons.values()
    failed = next(v[-1] for v in outs.values() if v[-1].finish_reason == "error")
    assert "KV cache is full" in (failed.error or "")
    assert engine.stats().slots_busy == 0
    runner.close()


def test_async_engine_streams_outputs_and_frees_slots_on_close(tiny_model: Path) -> None:
    async def scenario() -> None:
        engine = AsyncEngine.load(EngineConfig(model_path=tiny_model, n_slots=2, max_queue=1))
        engine.start()
        try:
            prompt = engine.tokenize(PROMPTS[0], add_bos=True, parse_special=False)
            stream = engine.submit("a", prompt, GREEDY)
            outs = [o async for o in stream]
            assert outs[-1].finish_reason == "length"
            assert sum(len(o.token_ids) for o in outs) == GREEDY.max_tokens
            endless = SamplingParams(max_tokens=10_000, temperature=0.0, ignore_eos=True)
            streams = [engine.submit(f"b{i}", prompt, endless) for i in range(3)]
            with pytest.raises(QueueFullError) as err:
                engine.submit("overflow", prompt, endless)
            assert err.value.retry_after_s >= 1
            for s in streams:
                await s.__anext__() if s is not streams[2] else None
                await s.aclose()
            for _ in range(200):
                if engine.stats().running == engine.stats().waiting == 0:
                    break
                await asyncio.sleep(0.01)
            assert engine.stats().slots_busy == 0 and engine.stats().waiting == 0
        finally:
            engine.shutdown()
        with pytest.raises(EngineUnavailableError):
            engine.submit("late", [1, 2, 3], GREEDY)

    asyncio.run(scenario())


def test_more_choices_than_slots_is_refused_up_front(runner: LlamaRunner) -> None:
    engine = make_engine(runner, n_slots=2)
    with pytest.raises(ParamError) as err:
        engine.new_sequences("n", ids(runner, PROMPTS[0]), GREEDY, n=3)
    assert err.value.param == "n"


def test_a_slot_idle_between_busy_ones_keeps_its_cache_and_changes_no_text(
    runner: LlamaRunner,
) -> None:
    """The throwaway token in an idle slot (a Filler) leaves every text and the slot's cached
    prefix as they were, and the decode steps around it stay one pass over the weights."""
    long = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    short = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    prefix = " ".join(f"word{i}" for i in range(60))
    later = ids(runner, prefix + " and then the second question")
    # as long as the idle slot's cache: a much longer idle slot gets no filler
    prompt_a = ids(runner, " ".join(f"item{i}" for i in range(50)) + PROMPTS[0])
    prompt_c = ids(runner, " ".join(f"thing{i}" for i in range(50)) + PROMPTS[2])
    alone = {
        name: tokens_of(run(make_engine(runner), [(name, p, params)])[(name, 0)])
        for name, p, params in [("a", prompt_a, long), ("c", prompt_c, long), ("d", later, GREEDY)]
    }
    stats: list[StepStats] = []
    engine = make_engine(runner)
    engine.observer = stats.append
    engine.add(engine.new_sequences("a", prompt_a, long))
    engine.add(engine.new_sequences("b", ids(runner, prefix + " and then a first one"), short))
    engine.add(engine.new_sequences("c", prompt_c, long))
    outs: dict[str, list[StepOutput]] = {}

    def step() -> None:
        for out in engine.step():
            outs.setdefault(out.request_id, []).append(out)

    while not any(o.finish_reason for o in outs.get("b", [])):
        step()
    cached = runner.slot_length(1)
    for _ in range(4):  # slot 1 sits idle between slots 0 and 2
        step()
    assert [s.num_ubatches for s in stats[-4:]] == [1, 1, 1, 1]
    assert runner.slot_length(1) == cached  # each step's throwaway cell went again
    engine.add(engine.new_sequences("d", later, GREEDY))
    while engine.has_work:
        step()
    assert outs["d"][-1].num_cached_tokens >= 100  # the idle slot's prefix was still there
    assert {k: tokens_of(outs[k]) for k in ("a", "c", "d")} == alone
