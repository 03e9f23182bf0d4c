"""benchmarks/http_profile.py --engine-only: the engine over the simulated runner, timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from batching.config import EngineConfig

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "http_profile", ROOT / "benchmarks" / "http_profile.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["http_profile"] = module
    spec.loader.exec_module(module)
    return module


def test_engine_only_times_the_all_decode_steps(capsys: pytest.CaptureFixture[str]) -> None:
    hp = _load()
    config = EngineConfig(model_path=Path("sim.gguf"), n_slots=4, n_ctx=4 * 512, n_batch=1024)
    hp.engine_only(hp.SimRunner(4, 4 * 512, 0.001), config)
    out = capsys.readouterr().out
    assert "all-decode steps: 127," in out  # 128 tokens: the first comes with the prompt
    assert "the engine's own time:" in out
