"""The server's own view of a benchmark run: its latency histograms, scraped around the run.

A gateway's /metrics splits its time to first token (counted from the request read, checked
and tokenized) into the time a request waited for a slot (queue) and the time from its slot to
its first token (prefill: its prompt and the calls that ran before it). Scraped just before and
just after the measured requests, the difference of each histogram covers those requests (and
any other client's, and none that the client gave up on before the server answered); what the
client measures beyond the server's TTFT is the HTTP path (connection, body, SSE and the client
itself). Servers without these metrics (llama-server) give no view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

# name in the report: the gateway's histogram
HISTOGRAMS = {
    "ttft": "gateway_time_to_first_token_seconds",
    "queue": "gateway_request_queue_seconds",
    "prefill": "gateway_request_prefill_seconds",
}
QUANTILES = (50, 90)
_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(slots=True)
class Histogram:
    """One histogram summed over its label sets: cumulative counts by upper bound."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.count - earlier.count,
            self.total - earlier.total,
        )

    def quantile(self, q: float) -> float:
        """The q-quantile (0-1), linear within its bucket, as Prometheus' histogram_quantile."""
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if math.isinf(le):
                    return lower  # beyond the last finite bound: the bound is all we know
                return lower + (le - lower) * (rank - below) / max(n - below, 1e-12)
            lower, below = le, n
        return lower


def parse(text: str) -> dict[str, Histogram]:
    """The HISTOGRAMS found in a Prometheus text exposition, by report name."""
    wanted = {family: name for name, family in HISTOGRAMS.items()}
    found: dict[str, Histogram] = {}
    for family in text_string_to_metric_families(text):
        name = wanted.get(family.name)
        if name is None or family.type != "histogram":
            continue
        hist = found.setdefault(name, Histogram())
        for sample in family.samples:
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                le = float(sample.labels["le"])
                hist.buckets[le] = hist.buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                hist.count += sample.value
            elif sample.name.endswith("_sum"):
                hist.total += sample.value
    return found


async def scrape(session: aiohttp.ClientSession, base_url: str) -> dict[str, Histogram]:
    """The server's histograms now; empty if it has none of ours or /metrics fails."""
    try:
        async with session.get(base_url.rstrip("/") + "/metrics", timeout=_TIMEOUT) as response:
            if response.status != 200:
                return {}
            return parse(await response.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


def server_view(
    before: dict[str, Histogram], after: dict[str, Histogram]
) -> dict[str, dict[str, float]] | None:
    """Mean and quantiles (ms) of each histogram over the requests between two scrapes."""
    view: dict[str, dict[str, float]] = {}
    for name in HISTOGRAMS:
        if name not in after:
            continue
        delta = after[name].minus(before.get(name, Histogram()))
        if delta.count <= 0:
            continue
        stats = {"count": delta.count, "mean": 1000 * delta.total / delta.count}
        for q in QUANTILES:
            stats[f"p{q}"] = 1000 * delta.quantile(q / 100)
        view[f"{name}_ms"] = stats
    return view or None


def format_view(view: dict[str, dict[str, float]]) -> str:
    """The server-side lines under the client's table."""
    columns = ("mean", *[f"p{q}" for q in QUANTILES])
    lines = [
        "server side, from its /metrics histograms (quantiles interpolated within a bucket;"
        " queue and prefill count each choice):",
        f"{'(ms)':<8}" + "".join(f"{c:>10}" for c in columns) + f"{'count':>10}",
    ]
    for key, stats in view.items():
        cells = "".join(f"{stats[c]:>10.1f}" for c in columns) + f"{stats['count']:>10.0f}"
        lines.append(f"{key.removesuffix('_ms').upper():<8}" + cells)
    return "\n".join(lines)
