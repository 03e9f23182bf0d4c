"""Combine, tabulate and plot the GPU benchmark results (see benchmarks/README.md).

    python3 benchmarks/plot.py combine --dir /tmp/bench-results --out results.json [--meta k=v]
    python3 benchmarks/plot.py table results.json            # Markdown for BENCHMARKS.md
    python3 benchmarks/plot.py plot results.json results.png  # throughput and TTFT vs concurrency

`combine` runs on the GPU machine, which has no matplotlib: only `plot` imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GATEWAY = "gateway"
REFERENCE = "llama-server-np64"
BATCHED_COLUMNS = ("pp", "tg", "b", "n_kv", "t_pp", "s_pp", "t_tg", "s_tg", "t", "s")
SERVER_TITLES = {
    GATEWAY: "gateway (ours)",
    REFERENCE: "llama-server -np 64",
    "llama-server-np1": "llama-server -np 1",
    "http-sim": "gateway over a 16 ms simulated decode (no GPU)",
    "gateway-b2048": "gateway --batch-size 2048",
    "gateway-b": "gateway with $GATEWAY_B_ARGS (PROFILE=ab)",
}


def parse_batched_bench(text: str) -> list[dict[str, float]]:
    """Rows of llama-batched-bench's Markdown table (PP, TG, B, N_KV, times and speeds)."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != len(BATCHED_COLUMNS):
            continue
        try:
            values = [float(cell) for cell in cells]
        except ValueError:
            continue
        rows.append(dict(zip(BATCHED_COLUMNS, values, strict=True)))
    return rows


def combine(results_dir: Path, meta: dict[str, str]) -> dict[str, Any]:
    """One document from the per-run JSON files (in run order), batched-bench outputs, skips."""
    runs = []
    for path in sorted(results_dir.glob("*__*.json"), key=lambda p: p.stat().st_mtime):
        server, workload = path.stem.split("__", 1)
        runs.append({**json.loads(path.read_text()), "server": server, "workload": workload})
    batched = {}
    for path in sorted(results_dir.glob("batched-bench*.txt")):
        text = path.read_text(errors="replace")
        table = [line for line in text.splitlines() if line.startswith("|") or "n_kv_max" in line]
        batched[path.stem] = {"rows": parse_batched_bench(text), "table": table}
    skipped_path = results_dir / "skipped.txt"
    skipped = skipped_path.read_text().splitlines() if skipped_path.exists() else []
    return {"meta": meta, "batched_bench": batched, "skipped": skipped, "runs": runs}


def output_ceiling(data: dict[str, Any], batch: int) -> float | None:
    """batched-bench's output tokens per second of wall time, prompts included: B x TG / T."""
    for row in data.get("batched_bench", {}).get("batched-bench", {}).get("rows", []):
        if int(row["b"]) == batch and row["t"] > 0:
            return float(row["b"] * row["tg"] / row["t"])
    return None


def markdown_table(data: dict[str, Any]) -> str:
    """Rows server x workload, then gateway / llama-server -np 64 and / decode-ceiling ratios."""
    head = (
        "| server | workload | output tok/s | req/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms "
        "| ITL p50 ms | ITL p99 ms | e2e p50 ms | errors |"
    )
    lines = [head, "|" + "---|" * 11]
    for run in data["runs"]:
        s = run["summary"]
        cells = [
            SERVER_TITLES.get(run["server"], run["server"]),
            run["workload"],
            f"{s['output_tok_s']:,.0f}",
            f"{s['requests_s']:.2f}",
            _ms(s["ttft_ms"]["p50"]),
            _ms(s["ttft_ms"]["p99"]),
            _ms(s["tpot_ms"]["p50"]),
            _ms(s["itl_ms"]["p50"]),
            _ms(s["itl_ms"]["p99"]),
            _ms(s["e2e_ms"]["p50"]),
            f"{s['num_errors']}/{s['num_requests']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_ratio_lines(data)]
    if data.get("skipped"):
        lines += ["", "Not run: " + "; ".join(data["skipped"])]
    return "\n".join(lines)


def _ratio_lines(data: dict[str, Any]) -> list[str]:
    by_key = {(r["server"], r["workload"]): r for r in data["runs"]}
    lines = [
        "| workload | gateway tok/s | llama-server -np 64 tok/s | gateway / llama-server "
        "| TTFT p50 ms, ours / theirs | output ceiling tok/s (batched-bench B x TG / T) "
        "| gateway / ceiling |",
        "|" + "---|" * 7,
    ]
    for (server, workload), run in by_key.items():
        if server != GATEWAY:
            continue
        ours = run["summary"]["output_tok_s"]
        reference = by_key.get((REFERENCE, workload))
        theirs = reference["summary"]["output_tok_s"] if reference else None
        ttft = _ms(run["summary"]["ttft_ms"]["p50"])
        if reference:
            ttft += " / " + _ms(reference["summary"]["ttft_ms"]["p50"])
        config = run["config"]
        is_fixed_closed = (
            config.get("mode") == "closed"
            and config.get("workload") == "fixed"
            and config.get("endpoint", "completions") == "completions"
            and config.get("prompt_len") == 256
        )
        ceiling = output_ceiling(data, int(config["concurrency"])) if is_fixed_closed else None
        cells = [
            workload,
            f"{ours:,.0f}",
            "-" if theirs is None else f"{theirs:,.0f}",
            _ratio(ours, theirs),
            ttft,
            "-" if ceiling is None else f"{ceiling:,.0f}",
            _ratio(ours, ceiling),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(data: dict[str, Any], png: Path) -> None:
    """Output tok/s and TTFT p50 against concurrency, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tok, ax_ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in dict.fromkeys(r["server"] for r in data["runs"]):
        if server not in SERVER_TITLES or server == "http-sim":  # real servers only
            continue
        points = sorted(
            (int(r["config"]["concurrency"]), r["summary"])
            for r in data["runs"]
            if r["server"] == server
            and r["config"].get("mode") == "closed"
            and r["config"].get("workload") == "fixed"
        )
        if not points:
            continue
        xs = [c for c, _ in points]
        name = SERVER_TITLES.get(server, server)
        ax_tok.plot(xs, [s["output_tok_s"] for _, s in points], marker="o", label=name)
        ttft = [s["ttft_ms"]["p50"] for _, s in points]
        ax_ttft.plot(xs, [float("nan") if t is None else t for t in ttft], marker="o", label=name)
    rows = data.get("batched_bench", {}).get("batched-bench", {}).get("rows", [])
    if rows:
        xs = [int(r["b"]) for r in rows]
        ax_tok.plot(xs, [r["s_tg"] for r in rows], ls="--", c="grey", label="decode ceiling")
    ax_tok.set(xlabel="concurrent clients", ylabel="output tok/s", title="Throughput")
    ax_ttft.set(xlabel="concurrent clients", ylabel="TTFT p50 (ms)", title="Time to first token")
    ax_ttft.set_yscale("log")
    ticks = sorted({int(r["config"]["concurrency"]) for r in data["runs"]} | {1, 8, 16, 32, 64})
    for ax in (ax_tok, ax_ttft):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, labels=[str(t) for t in ticks])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("7B Q4_K_M, H200, 256-token prompts, 128 output tokens")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _ratio(ours: float, theirs: float | None) -> str:
    return "-" if not theirs else f"{ours / theirs:.2f}"


def main(argv: list[str]) -> int:
    """Dispatch the combine / table / plot subcommands."""
    parser = argparse.ArgumentParser(prog="benchmarks/plot.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p_combine = sub.add_parser("combine", help="merge per-run results into one JSON")
    p_combine.add_argument("--dir", type=Path, required=True)
    p_combine.add_argument("--out", type=Path, required=True)
    p_combine.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p_table = sub.add_parser("table", help="print the Markdown table")
    p_table.add_argument("results", type=Path)
    p_plot = sub.add_parser("plot", help="write the PNG")
    p_plot.add_argument("results", type=Path)
    p_plot.add_argument("png", type=Path)
    args = parser.parse_args(argv)
    if args.command == "combine":
        meta = dict(item.split("=", 1) for item in args.meta if "=" in item)
        args.out.write_text(json.dumps(combine(args.dir, meta), indent=1) + "\n")
        return 0
    data = json.loads(args.results.read_text())
    if args.command == "table":
        print(markdown_table(data))
    else:
        plot(data, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
