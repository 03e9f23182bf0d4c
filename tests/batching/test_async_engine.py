"""AsyncEngine's own accounting: capacity comes back the moment a stream is closed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from batching.async_engine import AsyncEngine
from batching.config import EngineConfig
from batching.engine import Engine, EngineUnavailableError, QueueFullError
from batching.outputs import SchedulerOutput, StepOutput
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


class _GatedRunner(FakeRunner):
    """A FakeRunner that, once armed, holds its next prompt-only call until released."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.armed, self.entered, self.release = False, threading.Event(), threading.Event()

    def forward(self, out: SchedulerOutput) -> int:
        if self.armed and out.prefill and not out.decode:
            self.armed = False
            self.entered.set()
            self.release.wait(timeout=5)
        return super().forward(out)


def _gated(n_slots: int = 4) -> tuple[AsyncEngine, _GatedRunner]:
    runner = _GatedRunner(n_ctx=4096, n_slots=n_slots)
    config = EngineConfig(model_path=Path("fake"), n_slots=n_slots, n_ctx=4096, max_queue=8)
    return AsyncEngine(Engine(runner, config)), runner


def test_a_request_sent_while_a_prompt_computes_joins_that_step() -> None:
    async def scenario() -> None:
        engine, runner = _gated()
        engine.start()
        try:
            old = engine.submit("old", PROMPT, ENDLESS)
            await old.__anext__()  # old decodes from now on
            runner.armed = True
            engine.submit("a", [1, 8, 9, 10, 11, 12], ENDLESS)
            await asyncio.to_thread(runner.entered.wait, 5)  # a's prompt call is running
            late = engine.submit("late", [1, 20, 21], ENDLESS)
            runner.release.set()
            await late.__anext__()
            batches = list(runner.batches)
            a_call = next(i for i, b in enumerate(batches) if b.num_prefill == 6)
            # late's prompt runs right after a's, before the step's decode call
            assert (batches[a_call + 1].num_decode, batches[a_call + 1].num_prefill) == (0, 3)
            assert batches[a_call + 2].num_decode == 3
        finally:
            runner.release.set()
            engine.shutdown()

    asyncio.run(scenario())


def test_a_stop_that_arrives_mid_step_still_stops_the_engine_thread() -> None:
    async def scenario() -> None:
        engine, runner = _gated()
        engine.start()
        old = engine.submit("old", PROMPT, ENDLESS)
        await old.__anext__()
        runner.armed = True
        engine.submit("a", [1, 8, 9, 10, 11, 12], ENDLESS)
        await asyncio.to_thread(runner.entered.wait, 5)
        engine._commands.put(("stop", None))  # what shutdown() sends, taken by the poll
        runner.release.set()
        thread = engine._thread
        assert thread is not None
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()
        engine.shutdown()

    asyncio.run(scenario())
