"""benchmarks/step_profile.py runs on the GPU host only after a five-minute build: a smoke run
here on the tiny model catches a broken script before device time is spent on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_step_profile_runs_its_samplings_and_closed_loops(
    tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "profile.json"
    args = ["--model", str(tiny_model), "--slots", "4", "--ctx-size", "2048", "--n-gpu-layers",
            "0", "--prompt-len", "12", "--max-tokens", "6", "--sampler-threads", "1,2",
            "--batches", "128:64,256:256", "--mixed-steps", "20", "--fixed-steps", "20",
            "--out", str(out)]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_profile.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    profile = json.loads(out.read_text())
    assert profile["b128:ub64:threadsauto:sampler1:t0.7_top_p0.9"]["sample_s"] > 0
    assert profile["b128:ub64:threadsauto:sampler2:t0.7_penalties"]["sample_s"] > 0
    assert profile["b256:ub256:threadsauto:sampler1:mixed"]["output_tok_s"] > 0
    assert profile["async_wall_per_step_ms"]["value"] > 0
