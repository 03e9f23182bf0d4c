"""Metrics: counter and histogram values after known traffic, scrape-time gauges, promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batching.info import EngineStats, ModelInfo
from batching.outputs import StepOutput, StepStats
from gateway.metrics import Metrics

MODEL = "tiny-demo"
ENDPOINT = "/v1/completions"
INSTALL_HINT = "apt-get install -y prometheus (Debian's package brings prometheus and promtool)"


def require_tool(name: str, hint: str = INSTALL_HINT) -> str:
    """Path of an external program; skip without it, but fail under CI (env CI set)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found; install it with: {hint}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (a skip is a failure under CI)")
        pytest.skip(message)
    return path


def model_info() -> ModelInfo:
    return ModelInfo(
        path=Path("/models/tiny-demo.gguf"),
        model_id=MODEL,
        n_ctx=2048,
        n_ctx_train=4096,
        n_slots=4,
        n_vocab=256,
        bos_id=1,
        eos_id=2,
        add_bos=True,
        bos_text="<s>",
        eos_text="</s>",
        chat_template=None,
        quantization="Q8_0",
        description="tiny demo",
    )


def engine_stats(**changes: int) -> EngineStats:
    idle = EngineStats(
        running=0, waiting=0, slots_busy=0, slots_total=4, kv_cells_used=0, kv_cells_total=2048
    )
    return replace(idle, **changes)


class Clock:
    """A perf_counter that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("gateway.metrics.time.perf_counter", fake)
    return fake


def make_metrics(stats: EngineStats | None = None) -> Metrics:
    snapshot = stats or engine_stats()
    return Metrics(model_info(), lambda: snapshot)


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, keyed by name and label set."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    labels.setdefault("model", MODEL)
    return scrape(metrics)[(name, frozenset(labels.items()))]


def step_stats(num_seqs: int, duration_s: float = 0.01, num_ubatches: int = 1) -> StepStats:
    """A step of `num_seqs` decoding sequences."""
    return StepStats(
        num_decode_seqs=num_seqs,
        num_prefill_tokens=0,
        num_seqs=num_seqs,
        duration_s=duration_s,
        schedule_s=0.0,
        decode_s=duration_s,
        sample_s=duration_s / 10,
        update_s=0.0,
        num_ubatches=num_ubatches,
    )


def outputs(
    num_prompt: int, num_output: int, reason: str = "stop", index: int = 0, cached: int = 0
) -> Iterator[StepOutput]:
    """The StepOutputs of one sequence generating one token per step (cumulative counts)."""
    for i in range(1, num_output + 1):
        is_last = i == num_output
        yield StepOutput(
            request_id="req",
            index=index,
            delta_text="x",
            token_ids=[i],
            finish_reason=reason if is_last else None,
            num_prompt_tokens=num_prompt if is_last else 0,
            num_cached_tokens=cached if is_last else 0,
            num_output_tokens=i,
            queue_s=0.5 if i == 1 else None,
            prefill_s=0.125 if i == 1 else None,
        )


def test_counters_and_histograms_after_requests_of_known_lengths(clock: Clock) -> None:
    metrics = make_metrics()
    requests = [(5, 3, "stop"), (17, 1, "length"), (40, 8, "stop")]  # prompt, output, reason
    for num_prompt, num_output, reason in requests:
        trace = metrics.start_request(ENDPOINT)
        clock.now += 0.2  # time to the first token
        for out in outputs(num_prompt, num_output, reason, cached=2):
            trace.on_output(out)
            clock.now += 0.05  # one token every 50 ms
        trace.finish(200)

    def histogram(name: str) -> tuple[float, float]:
        return value(metrics, f"{name}_count"), value(metrics, f"{name}_sum")

    ok = {"endpoint": ENDPOINT, "status": "200"}
    assert value(metrics, "gateway_requests_total", **ok, finish_reason="stop") == 2
    assert value(metrics, "gateway_requests_total", **ok, finish_reason="length") == 1
    assert value(metrics, "gateway_prompt_tokens_total") == 5 + 17 + 40
    assert value(metrics, "gateway_prompt_cached_tokens_total") == 3 * 2
    assert value(metrics, "gateway_generation_tokens_total") == 3 + 1 + 8
    assert value(metrics, "gateway_requests_aborted_total") == 0
    assert histogram("gateway_time_to_first_token_seconds") == pytest.approx((3, 0.6))
    # 2 + 0 + 7 gaps between tokens of 50 ms each
    assert histogram("gateway_time_per_output_token_seconds") == pytest.approx((9, 0.45))
    assert histogram("gateway_request_duration_seconds") == pytest.approx((3, 0.6 + 12 * 0.05))
    assert histogram("gateway_request_queue_seconds") == pytest.approx((3, 1.5))
    assert histogram("gateway_request_prefill_seconds") == pytest.approx((3, 0.375))
    assert histogram("gateway_request_prompt_tokens") == (3, 62)
    assert histogram("gateway_request_generation_tokens") == (3, 12)
    assert value(metrics, "gateway_request_prompt_tokens_bucket", le="16.0") == 1
    assert value(metrics, "gateway_request_generation_tokens_bucket", le="1.0") == 1


def test_generated_tokens_counted_once_whether_counts_are_cumulative_or_final() -> None:
    metrics = make_metrics()
    trace = metrics.start_request(ENDPOINT)
    for out in outputs(4, 3):
        if not out.is_finished:
            out.num_output_tokens = 0  # only the last output carries the counts
        trace.on_output(out)
    trace.finish(200)
    trace.finish(200)  # a second finish is ignored
    assert value(metrics, "gateway_generation_tokens_total") == 3
    assert value(metrics, "gateway_request_generation_tokens_sum") == 3
    assert value(metrics, "gateway_request_duration_seconds_count") == 1


def test_n_choices_interleaved(clock: Clock) -> None:
    metrics = make_metrics()
    trace = metrics.start_request("/v1/chat/completions")
    first = list(outputs(10, 3, "stop", index=0))
    second = list(outputs(10, 2, "length", index=1, cached=10))
    clock.now += 1.0
    for pair in zip(first, [*second, None], strict=True):
        for out in pair:
            if out is not None:
                trace.on_output(out)
        clock.now += 0.1
    trace.finish(200)
    labels = {"endpoint": "/v1/chat/completions", "status": "200", "finish_reason": "length"}
    assert value(metrics, "gateway_requests_total", **labels) == 1
    assert value(metrics, "gateway_time_to_first_token_seconds_count") == 1
    assert value(metrics, "gateway_time_to_first_token_seconds_sum") == pytest.approx(1.0)
    assert value(metrics, "gateway_time_per_output_token_seconds_count") == 2 + 1
    assert value(metrics, "gateway_time_per_output_token_seconds_sum") == pytest.approx(0.3)
    assert value(metrics, "gateway_prompt_tokens_total") == 20  # one prompt per slot
    assert value(metrics, "gateway_prompt_cached_tokens_total") == 10
    assert value(metrics, "gateway_generation_tokens_total") == 5
    assert value(metrics, "gateway_request_queue_seconds_count") == 2
    assert value(metrics, "gateway_request_prompt_tokens_count") == 1
    assert value(metrics, "gateway_request_generation_tokens_count") == 2


def test_a_list_of_prompts_is_one_request_of_several_engine_requests() -> None:
    metrics = make_metrics()
    trace = metrics.start_request(ENDPOINT)
    for request_id, num_prompt, num_output in (("cmpl-0", 6, 2), ("cmpl-1", 9, 3)):
        for out in outputs(num_prompt, num_output):
            out.request_id = request_id  # the same choice index 0 in both
            trace.on_output(out)
    trace.finish(200)
    labels = {"endpoint": ENDPOINT, "status": "200", "finish_reason": "stop"}
    assert value(metrics, "gateway_requests_total", **labels) == 1
    assert value(metrics, "gateway_prompt_tokens_total") == 15
    assert value(metrics, "gateway_generation_tokens_total") == 5
    assert value(metrics, "gateway_request_prompt_tokens_count") == 2
    assert value(metrics, "gateway_request_generation_tokens_count") == 2
    assert value(metrics, "gateway_request_duration_seconds_count") == 1


def test_several_tokens_in_one_output_share_the_gap(clock: Clock) -> None:
    metrics = make_metrics()
    trace = metrics.start_request(ENDPOINT)
    trace.on_output(StepOutput("r", 0, "a", [1], num_output_tokens=1))
    clock.now += 0.3
    trace.on_output(StepOutput("r", 0, "bcd", [2, 3, 4], "stop", num_output_tokens=4))
    trace.finish(200)
    assert value(metrics, "gateway_time_per_output_token_seconds_count") == 3
    assert value(metrics, "gateway_time_per_output_token_seconds_sum") == pytest.approx(0.3)
    assert value(metrics, "gateway_time_per_output_token_seconds_bucket", le="0.1") == 3


@pytest.mark.parametrize(
    ("reasons", "status", "expected"),
    [
        (["abort"], 200, "abort"),
        (["stop", None], 200, "abort"),  # choice 1 never ended: the client went away
        ([], 200, "abort"),  # gone before any output
        ([None], 499, "abort"),
        ([None], 500, "error"),
        (["error"], 200, "error"),
        (["stop", "error", "abort"], 200, "error"),
        (["length", "stop"], 200, "length"),
        ([], 429, "none"),  # the queue was full
    ],
)
def test_finish_reason_of_a_request(reasons: list[str | None], status: int, expected: str) -> None:
    metrics = make_metrics()
    trace = metrics.start_request(ENDPOINT)
    for index, reason in enumerate(reasons):
        trace.on_output(StepOutput("r", index, "", [7], reason, num_output_tokens=1))
    trace.finish(status)
    labels = {"endpoint": ENDPOINT, "status": str(status), "finish_reason": expected}
    assert value(metrics, "gateway_requests_total", **labels) == 1
    assert value(metrics, "gateway_requests_aborted_total") == (expected == "abort")


def test_requests_that_never_reach_the_engine() -> None:
    metrics = make_metrics()
    metrics.count_request(ENDPOINT, 400)
    metrics.count_request(ENDPOINT, 400)
    metrics.rejected()
    metrics.count_request(ENDPOINT, 429)
    bad = {"endpoint": ENDPOINT, "finish_reason": "none"}
    assert value(metrics, "gateway_requests_total", **bad, status="400") == 2
    assert value(metrics, "gateway_requests_total", **bad, status="429") == 1
    assert value(metrics, "gateway_requests_rejected_total") == 1
    assert value(metrics, "gateway_request_duration_seconds_count") == 0


def test_endpoint_label_is_bounded() -> None:
    metrics = make_metrics()
    for i in range(100):
        metrics.count_request(f"/nope/{i}", 404)
    endpoints = {
        dict(k[1])["endpoint"] for k in scrape(metrics) if k[0] == "gateway_requests_total"
    }
    assert len(endpoints) == 33
    other = {"endpoint": "other", "status": "404", "finish_reason": "none"}
    assert value(metrics, "gateway_requests_total", **other) == 100 - 32


def test_observe_step() -> None:
    metrics = make_metrics()
    for num_seqs, num_ubatches in ((1, 1), (3, 1), (64, 5), (0, 0)):
        metrics.observe_step(step_stats(num_seqs, duration_s=0.02, num_ubatches=num_ubatches))
    assert value(metrics, "gateway_decode_steps_total") == 3  # an empty step is no step
    assert value(metrics, "gateway_step_sequences_count") == 3
    assert value(metrics, "gateway_step_sequences_sum") == 68
    assert value(metrics, "gateway_step_sequences_bucket", le="4.0") == 2
    assert value(metrics, "gateway_step_duration_seconds_sum") == pytest.approx(0.06)
    assert value(metrics, "gateway_step_ubatches_sum") == 7  # llama.cpp's passes per step
    assert value(metrics, "gateway_step_ubatches_bucket", le="1.0") == 2
    assert value(metrics, "gateway_step_sample_seconds_sum") == pytest.approx(0.006)


def test_steps_from_another_thread_while_requests_run() -> None:
    metrics = make_metrics()

    def engine_loop() -> None:
        for _ in range(2000):
            metrics.observe_step(step_stats(2))

    threads = [threading.Thread(target=engine_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        trace = metrics.start_request(ENDPOINT)
        for out in outputs(3, 2):
            trace.on_output(out)
        trace.finish(200)
    for thread in threads:
        thread.join(timeout=30)
    assert value(metrics, "gateway_decode_steps_total") == 8000
    assert value(metrics, "gateway_step_sequences_sum") == 16000
    assert value(metrics, "gateway_generation_tokens_total") == 400


def test_engine_gauges_are_read_at_scrape_time() -> None:
    snapshots = [
        engine_stats(running=3, waiting=5, slots_busy=3, kv_cells_used=700),
        engine_stats(kv_cells_used=64),  # every client has gone; prefix caches remain
    ]
    metrics = Metrics(model_info(), lambda: snapshots[0])
    busy = scrape(metrics)
    snapshots.pop(0)
    idle = scrape(metrics)

    def gauge(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
        return samples[(name, frozenset({("model", MODEL)}))]

    expected = {
        "gateway_requests_running": (3, 0),
        "gateway_requests_waiting": (5, 0),
        "gateway_slots_busy": (3, 0),
        "gateway_slots_capacity": (4, 4),
        "gateway_kv_cache_cells_used": (700, 64),
        "gateway_kv_cache_cells_capacity": (2048, 2048),
        "gateway_kv_cache_usage_ratio": (700 / 2048, 64 / 2048),
    }
    for name, values in expected.items():
        assert (gauge(busy, name), gauge(idle, name)) == values, name


@pytest.mark.parametrize(
    ("used", "total", "ratio"), [(0, 2048, 0.0), (512, 2048, 0.25), (2048, 2048, 1.0), (0, 0, 0.0)]
)
def test_kv_cache_usage_ratio_is_a_share_between_0_and_1(
    used: int, total: int, ratio: float
) -> None:
    metrics = make_metrics(engine_stats(kv_cells_used=used, kv_cells_total=total))
    assert value(metrics, "gateway_kv_cache_usage_ratio") == ratio


def test_failing_engine_stats_leave_the_other_metrics() -> None:
    def broken() -> EngineStats:
        raise RuntimeError("engine gone")

    metrics = Metrics(model_info(), broken)
    samples = scrape(metrics)
    assert not any(name == "gateway_requests_running" for name, _ in samples)
    assert value(metrics, "gateway_requests_rejected_total") == 0


def test_model_info_and_separate_registries() -> None:
    first, second = make_metrics(), make_metrics()  # no global registry: no clash
    first.rejected()
    info = {"quantization": "Q8_0", "n_ctx": "2048", "slots": "4"}
    assert value(first, "gateway_model_info", **info) == 1
    assert value(first, "gateway_requests_rejected_total") == 1
    assert value(second, "gateway_requests_rejected_total") == 0


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    metrics = make_metrics(engine_stats(running=1, slots_busy=1))
    trace = metrics.start_request(ENDPOINT)
    for out in outputs(12, 4, cached=3):
        trace.on_output(out)
    trace.finish(200)
    metrics.count_request(ENDPOINT, 400)
    metrics.observe_step(step_stats(1))
    body, _ = metrics.render()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip(), result.stdout.decode()  # lint findings, if any
