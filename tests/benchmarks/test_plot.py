"""benchmarks/plot.py: combining the per-run JSON files of a GPU bench call and its table."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks.scripts import load_script


def _summary(tok_s: float) -> dict[str, object]:
    """A report's summary with every latency at 1 ms."""
    latency = {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0}
    return {
        "output_tok_s": tok_s, "requests_s": 1.0, "num_errors": 0, "num_requests": 4,
        "ttft_ms": latency, "tpot_ms": latency, "itl_ms": latency, "e2e_ms": latency,
    }  # fmt: skip


def test_the_file_name_names_the_server_whatever_the_report_holds(tmp_path: Path) -> None:
    plot = load_script("plot")
    view = {"ttft_ms": {"count": 4, "mean": 9.0, "p50": 9.0, "p90": 9.0}}
    reports = {
        "gateway__mixed-c64.json": {"label": "gateway:mixed-c64", "server_side": view},
        "llama-server-np64__mixed-c64.json": {"label": "ls:mixed-c64", "server_side": None},
    }
    for name, report in reports.items():
        config = {"mode": "closed", "workload": "mixed", "concurrency": 64}
        (tmp_path / name).write_text(
            json.dumps({**report, "config": config, "summary": _summary(1)})
        )
    data = plot.combine(tmp_path, {"gpu": "test"})
    servers = {(run["server"], run["workload"]) for run in data["runs"]}
    assert servers == {("gateway", "mixed-c64"), ("llama-server-np64", "mixed-c64")}
    by_server = {run["server"]: run for run in data["runs"]}
    assert by_server["gateway"]["server_side"] == view
    assert "mixed-c64" in plot.markdown_table(data)
