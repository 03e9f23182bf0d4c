"""benchmarks/http_profile.py: the engine over a simulated runner, timed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batching.config import EngineConfig
from batching.engine import Engine
from batching.params import SamplingParams
from tests.benchmarks.scripts import load_script


def test_engine_only_times_the_all_decode_steps(capsys: pytest.CaptureFixture[str]) -> None:
    hp = load_script("http_profile")
    config = EngineConfig(model_path=Path("sim.gguf"), n_slots=4, n_ctx=4 * 512, n_batch=1024)
    hp.engine_only(hp.SimRunner(4, 4 * 512, 0.001), config)
    out = capsys.readouterr().out
    assert "all-decode steps: 127," in out  # 128 tokens: the first comes with the prompt
    assert "the engine's own time:" in out


def test_the_h200_cost_charges_each_ubatch_of_a_call() -> None:
    hp = load_script("http_profile")
    sim = load_script("policy_sim")
    runner = hp.H200Runner(4, 4 * 1280)
    engine = Engine(runner, EngineConfig(model_path=Path("sim.gguf"), n_slots=4, n_ctx=4 * 1280))
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    engine.add(engine.new_sequences("r", [1] + [5] * 599, params))  # 600 tokens: 512 + 88
    planned = engine.scheduler.schedule()
    before = time.perf_counter()
    assert runner.forward(planned) == 0
    expected = sim.ubatch_ms(512) + sim.ubatch_ms(88) + 1.5 + sim.kv_ms(1, 600)
    assert 1000 * (runner._done_at - before) == pytest.approx(expected, abs=1.0)
    assert runner.logits().shape == (1, hp.N_VOCAB)  # waited until then
    assert time.perf_counter() >= runner._done_at
