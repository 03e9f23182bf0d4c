"""Statistics of a benchmark run: percentiles, the JSON summary and the stdout table."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from gateway.bench_client import RequestResult

PERCENTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
_MAX_ERROR_KINDS = 5


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between ranks as numpy does."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def describe_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """Mean and percentiles in milliseconds; None for every field when there is no data."""
    if not seconds:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    values = [s * 1000.0 for s in seconds]
    summary: dict[str, float | None] = {"mean": sum(values) / len(values)}
    for q in PERCENTILES:
        summary[f"p{q}"] = percentile(values, q)
    return summary


def summarize(results: Sequence[RequestResult], wall_s: float) -> dict[str, Any]:
    """Aggregate the measured requests of one run into the JSON summary."""
    ok = [r for r in results if r.is_ok]
    completion_tokens = sum(r.num_completion_tokens for r in ok)
    per_second = 1.0 / wall_s if wall_s > 0 else 0.0
    latencies: dict[str, list[float]] = {
        "ttft": [r.ttft for r in ok],
        "tpot": [t for r in ok if (t := r.tpot) is not None],
        "itl": [gap for r in ok for gap in r.itl],
        "e2e": [r.e2e for r in ok],
    }
    errors = Counter(r.error for r in results if r.error is not None)
    return {
        "num_requests": len(results),
        "num_ok": len(ok),
        "num_errors": len(results) - len(ok),
        "wall_s": wall_s,
        "output_tok_s": completion_tokens * per_second,
        "requests_s": len(ok) * per_second,
        "total_prompt_tokens": sum(r.num_prompt_tokens for r in ok),
        "total_completion_tokens": completion_tokens,
        "num_short": sum(1 for r in ok if r.num_completion_tokens < r.max_tokens),
        **{f"{name}_ms": describe_ms(values) for name, values in latencies.items()},
        "errors": [
            {"message": message, "count": count}
            for message, count in errors.most_common(_MAX_ERROR_KINDS)
        ],
    }


def format_table(summary: dict[str, Any], label: str = "") -> str:
    """A readable multi-line report of one summary."""
    lines = [
        f"== {label or 'benchmark'} ==",
        f"requests   {summary['num_ok']} ok, {summary['num_errors']} errors, "
        f"wall {summary['wall_s']:.2f} s",
        f"throughput {summary['output_tok_s']:,.1f} output tok/s, "
        f"{summary['requests_s']:,.2f} req/s",
        f"tokens     {summary['total_prompt_tokens']:,} prompt, "
        f"{summary['total_completion_tokens']:,} completion, {summary['num_short']} short",
        f"{'(ms)':<6}" + "".join(f"{h:>10}" for h in ("mean", *[f"p{q}" for q in PERCENTILES])),
    ]
    for name in LATENCY_METRICS:
        stats = summary[f"{name}_ms"]
        cells = [stats["mean"], *[stats[f"p{q}"] for q in PERCENTILES]]
        lines.append(f"{name.upper():<6}" + "".join(_cell(v) for v in cells))
    for error in summary["errors"]:
        lines.append(f"error x{error['count']}: {error['message']}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.1f}"
