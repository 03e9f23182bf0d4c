"""AsyncEngine's own accounting: capacity comes back the moment a stream is closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batching.async_engine import AsyncEngine
from batching.config import EngineConfig
from batching.engine import Engine, EngineUnavailableError, QueueFullError
from batching.outputs import StepOutput
from batching.params import SamplingParams
from tests.batching.fake_runner import FakeRunner

ENDLESS = SamplingParams(max_tokens=100_000, temperature=0.0, ignore_eos=True)
PROMPT = [1, 5, 6, 7]


def make_engine(n_slots: int = 4, max_queue: int = 8) -> AsyncEngine:
    config = EngineConfig(model_path=Path("fake"), n_slots=n_slots, n_ctx=4096, max_queue=max_queue)
    return AsyncEngine(Engine(FakeRunner(n_ctx=4096, n_slots=n_slots), config))


def test_closing_streams_frees_their_capacity_before_the_engine_steps() -> None:
    async def scenario() -> None:
        engine = make_engine()
        engine.is_ready = True  # accepting, but the engine thread never runs: no step happens
        streams = [engine.submit(f"a{i}", PROMPT, ENDLESS) for i in range(10)]
        for stream in streams:
            await stream.aclose()  # 10 clients leave at once...
        # ...and 10 come back at once: all fit in 4 slots + 8 waiting places.
        again = [engine.submit(f"b{i}", PROMPT, ENDLESS) for i in range(10)]
        assert len(again) == 10
        engine.submit("c0", PROMPT, ENDLESS)
        engine.submit("c1", PROMPT, ENDLESS)
        with pytest.raises(QueueFullError):
            engine.submit("c2", PROMPT, ENDLESS)  # 12 is the capacity: it still holds

    asyncio.run(scenario())


def test_a_finished_choice_is_released_once_however_the_stream_ends() -> None:
    async def scenario() -> None:
        engine = make_engine(n_slots=2, max_queue=0)
        engine.is_ready = True
        stream = engine.submit("a", PROMPT, ENDLESS, n=2)
        # choice 0 finishes in the engine; the client leaves before reading it
        engine._deliver([StepOutput("a", 0, "x", [5], finish_reason="length")])
        await stream.aclose()
        engine.submit("b", PROMPT, ENDLESS, n=2)  # both places are free, none counted twice
        with pytest.raises(QueueFullError):
            engine.submit("c", PROMPT, ENDLESS)
        late = [StepOutput("a", 1, "", [], finish_reason="abort")]
        engine._deliver(late)  # the engine's abort of the closed request arrives late
        with pytest.raises(QueueFullError):
            engine.submit("d", PROMPT, ENDLESS)  # and frees nothing a second time

    asyncio.run(scenario())


def test_abort_all_ends_every_open_stream_with_the_reason() -> None:
    async def scenario() -> None:
        engine = make_engine(n_slots=2, max_queue=2)
        engine.start()
        try:
            streams = [engine.submit(f"s{i}", PROMPT, ENDLESS, n=2) for i in range(2)]
            first = await streams[0].__anext__()
            assert first.finish_reason is None
            engine.abort_all("the server is shutting down")
            ends = []
            for stream in streams:
                outs = [out async for out in stream]
                ends += [out for out in outs if out.finish_reason is not None]
            assert len(ends) == 4  # every choice of every request, once
            assert {(o.finish_reason, o.error) for o in ends} == {
                ("abort", "the server is shutting down")
            }
            with pytest.raises(EngineUnavailableError):
                engine.submit("late", PROMPT, ENDLESS)
            for _ in range(200):  # the engine thread drops the sequences too
                if engine.stats().running == engine.stats().waiting == 0:
                    break
                await asyncio.sleep(0.01)
            assert engine.stats().slots_busy == 0
        finally:
            engine.shutdown()

    asyncio.run(scenario())
