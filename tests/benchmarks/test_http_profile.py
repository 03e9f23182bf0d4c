"""benchmarks/http_profile.py --engine-only: the engine over the simulated runner, timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from batching.config import EngineConfig
from tests.benchmarks.scripts import load_script


def test_engine_only_times_the_all_decode_steps(capsys: pytest.CaptureFixture[str]) -> None:
    hp = load_script("http_profile")
    config = EngineConfig(model_path=Path("sim.gguf"), n_slots=4, n_ctx=4 * 512, n_batch=1024)
    hp.engine_only(hp.SimRunner(4, 4 * 512, 0.001), config)
    out = capsys.readouterr().out
    assert "all-decode steps: 127," in out  # 128 tokens: the first comes with the prompt
    assert "the engine's own time:" in out
