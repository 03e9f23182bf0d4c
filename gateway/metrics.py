"""Prometheus metrics of the gateway, in a registry of their own (no global state).

Counters and histograms are fed by the request path (`RequestTrace`) and by the engine thread
(`observe_step`); the gauges (running, waiting, slots, KV cells and their 0-1 usage ratio) are
read from the engine at scrape time, so they are exact at every scrape, also after every client
has gone.
All names start with `gateway_`, use base units (seconds, tokens) and end in `_seconds` or
`_total` where Prometheus' conventions ask for it. Every series carries a `model` label (one per
gateway, so it costs nothing) so that dashboards can show several gateways side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from batching.outputs import StepOutput, StepStats

if TYPE_CHECKING:
    from batching.info import EngineStats, ModelInfo

log = logging.getLogger(__name__)

# Latencies of LLM serving span a few milliseconds (a cached prompt's first token) to minutes
# (a long generation behind a full queue); 10 ms apart between 20 and 160 ms, where a GPU's time
# to first token lies, so that a quantile read from the buckets (histogram_quantile, or
# `llm-gateway bench`'s server-side view) is within a few milliseconds there.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11,
    0.12, 0.13, 0.14, 0.15, 0.16, 0.18, 0.2, 0.225, 0.25, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# One decode step: about 10 ms for a 7B model on a GPU, up to seconds on a small CPU.
TOKEN_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip
TOKEN_COUNT_BUCKETS = tuple(float(2**i) for i in range(16))  # 1 .. 32768 tokens
SEQS_PER_STEP_BUCKETS = tuple(float(2**i) for i in range(9))  # 1 .. 256 sequences
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UBATCH_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0)

# When the choices of one request end differently, the request is labelled with the worst.
_REASON_ORDER = ("error", "abort", "length", "stop")
_MAX_ENDPOINTS = 32  # endpoint label values beyond this become "other" (bounded cardinality)
_CLIENT_CLOSED = 499  # nginx's status for "client closed the request"
_USAGE = (
    "gateway_kv_cache_usage_ratio",
    "Share of the KV-cache cells in use, 0 to 1 (kv_cache_cells_used / kv_cache_cells_capacity).",
)


class Metrics:
    """All metrics of one gateway serving one model."""

    def __init__(self, model: ModelInfo, engine_stats: Callable[[], EngineStats]) -> None:
        self.model_id = model.model_id
        self.registry = CollectorRegistry()
        self._endpoints: set[str] = set()
        Info("gateway_model", "The served model.", registry=self.registry).info(
            {
                "model": model.model_id,
                "quantization": model.quantization,
                "n_ctx": str(model.n_ctx),
                "slots": str(model.n_slots),
            }
        )
        self.requests = Counter(
            "gateway_requests_total",
            "Finished HTTP requests by endpoint, status code and finish reason.",
            ("model", "endpoint", "status", "finish_reason"),
            registry=self.registry,
        )
        # Children are bound once: the label lookup stays off the hot path and every series
        # exists (at 0) from the first scrape, so rate() panels have data before any traffic.
        self._bind_counters()
        self._bind_histograms()
        self.registry.register(_EngineCollector(self.model_id, engine_stats))

    def _counter(self, name: str, doc: str) -> Counter:
        return Counter(name, doc, ("model",), registry=self.registry).labels(self.model_id)

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        family = Histogram(name, doc, ("model",), registry=self.registry, buckets=buckets)
        return family.labels(self.model_id)

    def _bind_counters(self) -> None:
        self.rejected_requests = self._counter(
            "gateway_requests_rejected_total", "Requests refused because the queue was full."
        )
        self.aborted_requests = self._counter(
            "gateway_requests_aborted_total", "Requests whose client went away before the end."
        )
        self.prompt_tokens = self._counter(
            "gateway_prompt_tokens_total", "Prompt tokens of finished sequences."
        )
        self.cached_prompt_tokens = self._counter(
            "gateway_prompt_cached_tokens_total",
            "Prompt tokens of finished sequences reused from the KV cache (prefix cache hits).",
        )
        self.generation_tokens = self._counter(
            "gateway_generation_tokens_total", "Generated tokens."
        )
        self.decode_steps = self._counter(
            "gateway_decode_steps_total", "Engine steps (llama_decode batches)."
        )

    def _bind_histograms(self) -> None:
        h = self._histogram
        self.ttft = h(
            "gateway_time_to_first_token_seconds",
            "Time from the request read, checked and tokenized to its first generated token.",
            LATENCY_BUCKETS,
        )
        self.tpot = h(
            "gateway_time_per_output_token_seconds",
            "Time between consecutive generated tokens of one sequence (inter-token latency).",
            TOKEN_LATENCY_BUCKETS,
        )
        self.e2e = h(
            "gateway_request_duration_seconds",
            "End-to-end time of requests that reached the engine.",
            LATENCY_BUCKETS,
        )
        self.queue_time = h(
            "gateway_request_queue_seconds",
            "Time a sequence (each of a request's n choices and prompts) waited for a slot.",
            LATENCY_BUCKETS,
        )
        self.prefill_time = h(
            "gateway_request_prefill_seconds",
            "Time from a sequence's slot to its first token: its prompt's compute, and the"
            " llama_decode calls of the others that ran before and with it.",
            LATENCY_BUCKETS,
        )
        self.prompt_length = h(
            "gateway_request_prompt_tokens", "Prompt length of requests.", TOKEN_COUNT_BUCKETS
        )
        self.generation_length = h(
            "gateway_request_generation_tokens",
            "Generated tokens of each finished sequence.",
            TOKEN_COUNT_BUCKETS,
        )
        self.seqs_per_step = h(
            "gateway_step_sequences",
            "Sequences in one llama_decode (a step that finishes prompts while others decode"
            " makes several: one per finishing prompt, then the decodes).",
            SEQS_PER_STEP_BUCKETS,
        )
        self.step_duration = h(
            "gateway_step_duration_seconds",
            "Wall time of one llama_decode with its sampling and outputs.",
            STEP_BUCKETS,
        )
        self.step_ubatches = h(
            "gateway_step_ubatches",
            "Passes llama.cpp makes over the weights for one llama_decode's batch (its ubatches).",
            UBATCH_BUCKETS,
        )
        self.step_sample = h(
            "gateway_step_sample_seconds",
            "Time one llama_decode's rows take to sample.",
            STEP_BUCKETS,
        )

    def observe_step(self, stats: StepStats) -> None:
        """Record one engine step; called on the engine thread."""
        if stats.num_seqs == 0:
            return
        self.decode_steps.inc()
        self.seqs_per_step.observe(stats.num_seqs)
        self.step_duration.observe(stats.duration_s)
        self.step_ubatches.observe(stats.num_ubatches)
        self.step_sample.observe(stats.sample_s)

    def start_request(self, endpoint: str) -> RequestTrace:
        """Start timing a request that will go to the engine."""
        return RequestTrace(self, self._endpoint(endpoint))

    def count_request(self, endpoint: str, status: int, finish_reason: str = "none") -> None:
        """Count a request that never reached the engine (validation errors, 404s, ...)."""
        self.requests.labels(
            self.model_id, self._endpoint(endpoint), str(status), finish_reason
        ).inc()

    def rejected(self) -> None:
        """Count a request refused because the queue was full (its 429 is counted as usual)."""
        self.rejected_requests.inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _endpoint(self, endpoint: str) -> str:
        if endpoint not in self._endpoints:
            if len(self._endpoints) >= _MAX_ENDPOINTS:
                return "other"
            self._endpoints.add(endpoint)
        return endpoint


@dataclass(slots=True)
class _SeqState:
    """What a trace remembers about one sequence (one choice of one engine request)."""

    last_token_at: float | None = None
    num_output_tokens: int = 0  # generated tokens counted so far
    finish_reason: str | None = None


class RequestTrace:
    """Timings and token counts of one request, fed with its StepOutputs in arrival order.

    One API request may hold several engine requests (a list of prompts) of n choices each.
    Token counters count per sequence: each choice fills its own slot. The prompt-length
    histogram counts each prompt once.
    """

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self._m = metrics
        self._endpoint = endpoint
        self._start = time.perf_counter()
        self._has_first_token = False
        self._seqs: dict[tuple[str, int], _SeqState] = {}
        self._measured_prompts: set[str] = set()  # engine request ids
        self._is_done = False

    def on_output(self, out: StepOutput) -> None:
        """Account for one StepOutput of this request."""
        m, now = self._m, time.perf_counter()
        seq = self._seqs.get((out.request_id, out.index))
        if seq is None:
            seq = self._seqs[(out.request_id, out.index)] = _SeqState()
        if out.queue_s is not None:  # set on a sequence's first output only
            m.queue_time.observe(out.queue_s)
        if out.prefill_s is not None:  # set with a sequence's first token
            m.prefill_time.observe(out.prefill_s)
        if out.token_ids:
            if not self._has_first_token:
                self._has_first_token = True
                m.ttft.observe(now - self._start)
            if seq.last_token_at is not None:
                # Several tokens in one output (text held back) share the gap evenly.
                gap = (now - seq.last_token_at) / len(out.token_ids)
                for _ in out.token_ids:
                    m.tpot.observe(gap)
            seq.last_token_at = now
        # Counting the increase of the cumulative count keeps the throughput counter smooth,
        # and also works if only the last output carried the count.
        if out.num_output_tokens > seq.num_output_tokens:
            m.generation_tokens.inc(out.num_output_tokens - seq.num_output_tokens)
            seq.num_output_tokens = out.num_output_tokens
        if out.finish_reason is not None and seq.finish_reason is None:
            seq.finish_reason = out.finish_reason
            m.prompt_tokens.inc(out.num_prompt_tokens)
            m.cached_prompt_tokens.inc(out.num_cached_tokens)
            m.generation_length.observe(seq.num_output_tokens)
            if out.num_prompt_tokens and out.request_id not in self._measured_prompts:
                self._measured_prompts.add(out.request_id)
                m.prompt_length.observe(out.num_prompt_tokens)

    def finish(self, status: int) -> None:
        """Close the request: e2e latency and the requests counter; later calls do nothing."""
        if self._is_done:
            return
        self._is_done = True
        m = self._m
        m.e2e.observe(time.perf_counter() - self._start)
        reason = self.finish_reason(status)
        m.requests.labels(m.model_id, self._endpoint, str(status), reason).inc()
        if reason == "abort":
            m.aborted_requests.inc()

    def finish_reason(self, status: int) -> str:
        """The worst finish reason of the request's choices.

        A request that ends before all its choices did was cut short: by its client ("abort";
        the engine's own abort output is not delivered once the stream is closed) or by a
        server error ("error").
        """
        reasons = {s.finish_reason for s in self._seqs.values() if s.finish_reason is not None}
        if not reasons or any(s.finish_reason is None for s in self._seqs.values()):
            if status < 400 or status == _CLIENT_CLOSED:
                reasons.add("abort")
            elif status >= 500:
                reasons.add("error")
        for reason in _REASON_ORDER:
            if reason in reasons:
                return reason
        return min(reasons, default="none")


class _EngineCollector(Collector):
    """Gauges read from the engine at scrape time."""

    _GAUGES = (
        ("gateway_requests_running", "Requests holding a slot.", "running"),
        ("gateway_requests_waiting", "Requests queued for a slot.", "waiting"),
        ("gateway_slots_busy", "Slots in use.", "slots_busy"),
        ("gateway_slots_capacity", "Slots (parallel sequences).", "slots_total"),
        ("gateway_kv_cache_cells_used", "KV-cache cells in use.", "kv_cells_used"),
        ("gateway_kv_cache_cells_capacity", "KV-cache cells.", "kv_cells_total"),
    )

    def __init__(self, model_id: str, engine_stats: Callable[[], EngineStats]) -> None:
        self._model_id = model_id
        self._engine_stats = engine_stats

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, doc, _ in self._GAUGES:
            yield GaugeMetricFamily(name, doc, labels=("model",))
        yield GaugeMetricFamily(*_USAGE, labels=("model",))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self._engine_stats()
        except Exception:
            # A failing engine must not take the other metrics of the scrape down with it.
            log.exception("engine stats unavailable; engine gauges left out of this scrape")
            return
        for name, doc, attr in self._GAUGES:
            family = GaugeMetricFamily(name, doc, labels=("model",))
            family.add_metric((self._model_id,), float(getattr(stats, attr)))
            yield family
        yield self._usage(stats)

    def _usage(self, stats: EngineStats) -> GaugeMetricFamily:
        # The 0-1 ratio that inference-aware routers read (vLLM's kv_cache_usage_perc,
        # the Gateway API Inference Extension's KV-cache scorer): computed here, in one
        # snapshot, so that it never mixes the counts of two scrapes.
        family = GaugeMetricFamily(*_USAGE, labels=("model",))
        total = stats.kv_cells_total
        family.add_metric((self._model_id,), stats.kv_cells_used / total if total > 0 else 0.0)
        return family
