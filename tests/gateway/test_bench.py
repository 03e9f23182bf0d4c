"""Tests of the load generator against a fake streaming server on a loopback port."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.bench import closed_loop, main
from gateway.bench_client import RequestResult, SSEDecoder
from gateway.bench_server import HISTOGRAMS, parse, server_view
from gateway.bench_server import Histogram as Scraped
from gateway.bench_stats import describe_ms, percentile, summarize
from gateway.bench_workload import (
    TOKEN_HIGH,
    TOKEN_LOW,
    RequestSpec,
    WorkloadConfig,
    build_requests,
    poisson_offsets,
)

NUM_TEXT_CHUNKS = 3  # fewer chunks than max_tokens: usage, not chunks, must give the count
FAILURES = ("http500", "cut", "no-usage")


class FakeServer:
    """An OpenAI-style completions endpoint whose behaviour is picked by the model name."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/completions", self.complete, methods=["POST"]),
                Route("/v1/chat/completions", self.complete, methods=["POST"]),
                Route("/metrics", self.metrics),
            ]
        )
        # like the gateway's when set: every request observes 40 ms queue + 60 ms prefill
        self.registry: CollectorRegistry | None = None
        self.histograms: dict[str, Histogram] = {}

    def serve_metrics(self, on: bool) -> None:
        self.registry = CollectorRegistry() if on else None
        self.histograms = {}
        for name, family in HISTOGRAMS.items() if on else ():
            base = family.removesuffix("_seconds")
            self.histograms[name] = Histogram(base, "", unit="seconds", registry=self.registry)

    async def metrics(self, request: Request) -> Response:
        if self.registry is None:
            return Response("not found", status_code=404)
        return Response(generate_latest(self.registry), media_type="text/plain")

    async def complete(self, request: Request) -> Response:
        payload = await request.json()
        self.payloads.append(payload)
        model = payload["model"]
        if model == "cycle":  # ok, then every failure kind in turn
            model = ("ok", *FAILURES)[(len(self.payloads) - 1) % (1 + len(FAILURES))]
        if model == "http500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        for name, seconds in (("queue", 0.04), ("prefill", 0.06), ("ttft", 0.1)):
            if name in self.histograms:
                self.histograms[name].observe(seconds)
        return StreamingResponse(self.chunks(model, payload), media_type="text/event-stream")

    async def chunks(self, model: str, payload: dict[str, Any]) -> AsyncIterator[str]:
        if model == "slow":
            await asyncio.sleep(1.0)
        for i in range(NUM_TEXT_CHUNKS):
            yield _event({"choices": [{"index": 0, "text": f"t{i}", "finish_reason": None}]})
            await asyncio.sleep(0.001)
            if model == "cut":
                raise RuntimeError("connection lost mid-stream")
        yield _event({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
        if model != "no-usage":
            prompt = payload.get("prompt") or payload["messages"][0]["content"].split()
            usage = {"prompt_tokens": len(prompt), "completion_tokens": 7}
            yield _event({"choices": [], "usage": usage})
        yield "data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeServer, str]]:
    """Serve a FakeServer with uvicorn on a free 127.0.0.1 port in a background thread."""
    fake = FakeServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app, log_level="critical", lifespan="off", ws="none", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


def _run(base_url: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    argv = ["--base-url", base_url, "--no-progress", "--timeout", "5", "--out", str(out)]
    main([*argv, "--prompt-len", "8", "--output-len", "7", *extra])
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_percentile_interpolates_like_numpy() -> None:
    values = [float(v) for v in range(10, 0, -1)]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_describe_ms_converts_and_handles_empty() -> None:
    stats = describe_ms([0.001, 0.002, 0.003])
    assert stats["mean"] == pytest.approx(2.0)
    assert stats["p50"] == pytest.approx(2.0)
    assert describe_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_summarize_on_known_results() -> None:
    ok = [
        RequestResult(max_tokens=5, ttft=0.1, e2e=0.5, itl=[0.1] * 4, num_completion_tokens=5),
        RequestResult(max_tokens=5, ttft=0.3, e2e=0.7, itl=[0.2, 0.2], num_completion_tokens=3),
    ]
    failed = [RequestResult(error="HTTP 500: boom"), RequestResult(error="HTTP 500: boom")]
    summary = summarize([*ok, *failed, RequestResult(error="no usage")], wall_s=2.0)
    assert (summary["num_requests"], summary["num_ok"], summary["num_errors"]) == (5, 2, 3)
    assert summary["output_tok_s"] == pytest.approx(4.0)
    assert summary["requests_s"] == pytest.approx(1.0)
    assert summary["num_short"] == 1
    assert summary["ttft_ms"]["p50"] == pytest.approx(200.0)
    assert summary["tpot_ms"]["mean"] == pytest.approx(150.0)  # 0.4/4 and 0.4/2
    assert summary["itl_ms"]["p99"] == pytest.approx(200.0)
    assert summary["errors"][0] == {"message": "HTTP 500: boom", "count": 2}


def test_sse_decoder_across_chunk_boundaries() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b': ping\r\n\r\ndata: {"a"') == []
    assert decoder.feed(b": 1}\r\n\r\ndata:[DONE]\n") == ['{"a": 1}']
    assert decoder.close() == ["[DONE]"]


def test_workloads_are_seeded_and_shaped() -> None:
    fixed = build_requests(WorkloadConfig(prompt_len=16, output_len=4), 20)
    assert all(len(s.prompt) == 16 and s.max_tokens == 4 for s in fixed)
    assert len({tuple(s.prompt) for s in fixed}) == 20
    ids = [t for s in fixed for t in s.prompt]
    assert all(isinstance(t, int) and TOKEN_LOW <= t < TOKEN_HIGH for t in ids)
    mixed_config = WorkloadConfig(name="mixed", prompt_len_range=(5, 9), output_len_range=(2, 3))
    mixed = build_requests(mixed_config, 50)
    assert mixed == build_requests(mixed_config, 50)
    assert {len(s.prompt) for s in mixed} == set(range(5, 10))
    assert {s.max_tokens for s in mixed} == {2, 3}
    shared = build_requests(WorkloadConfig(name="shared-prefix", prefix_len=10, suffix_len=3), 5)
    assert len({tuple(s.prompt[:10]) for s in shared}) == 1
    assert len({tuple(s.prompt[10:]) for s in shared}) == 5
    several = WorkloadConfig(name="shared-prefix", prefix_len=10, suffix_len=3, num_prefixes=4)
    requests = build_requests(several, 200)
    assert len({tuple(s.prompt[:10]) for s in requests}) == 4  # every prefix is used
    assert requests == build_requests(several, 200)
    text = build_requests(WorkloadConfig(prompt_len=12, prompt_format="text"), 1)[0]
    assert isinstance(text.prompt, str) and len(text.prompt.split()) == 12


def test_a_conversation_turn_is_the_last_prompt_an_answer_and_a_new_message() -> None:
    config = WorkloadConfig(name="conversations", prefix_len=10, suffix_len=3, output_len=5)
    specs = build_requests(config, 10)  # two conversations of 4 turns, then 2 of a third
    assert [s.conversation for s in specs] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert specs == build_requests(config, 10)
    for turn, spec in enumerate(specs[:4]):
        assert spec.num_prompt_tokens == 10 + 3 + turn * (5 + 3) and spec.max_tokens == 5
    for last, spec in itertools.pairwise(specs):
        if spec.conversation == last.conversation:
            assert spec.prompt[: len(last.prompt)] == last.prompt  # the history is sent again
            assert len(spec.prompt) == len(last.prompt) + 5 + 3  # a stand-in answer, a message
    assert specs[4].prompt[:10] == specs[0].prompt[:10]  # one system prompt
    assert specs[4].prompt[10:13] != specs[0].prompt[10:13]
    with pytest.raises(ValueError, match="turns"):
        WorkloadConfig(name="conversations", turns=0)


def test_a_conversation_goes_out_turn_after_turn_from_one_client() -> None:
    specs = [RequestSpec([1], 1, 1, conversation=c) for c in (0, 0, 0, 1, 1, 1, 2, 2, 2)]
    specs.insert(4, RequestSpec([2], 1, 1))  # an independent request among them
    spans: dict[int, tuple[float, float]] = {}

    async def send(spec: RequestSpec) -> RequestResult:
        index = next(i for i, s in enumerate(specs) if s is spec)
        start = time.monotonic()
        await asyncio.sleep(0.01)
        spans[index] = (start, time.monotonic())
        return RequestResult(max_tokens=1)

    results = asyncio.run(closed_loop(send, specs, 3, lambda: None))
    assert len(results) == len(spans) == 10 and all(r.is_ok for r in results)
    for conversation in (0, 1, 2):
        turns = [i for i, s in enumerate(specs) if s.conversation == conversation]
        for last, nxt in itertools.pairwise(turns):
            assert spans[nxt][0] >= spans[last][1]  # never two turns of one at once
    assert spans[3][0] < spans[0][1]  # while conversations run side by side


def test_conversations_refuse_an_open_loop(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--workload", "conversations", "--request-rate", "5"])
    assert "closed loop" in capsys.readouterr().err


def test_lognormal_workload_has_long_tails_that_fit_a_slot() -> None:
    specs = build_requests(WorkloadConfig(name="lognormal", seed=3), 2000)
    prompts = sorted(s.num_prompt_tokens for s in specs)
    outputs = sorted(s.max_tokens for s in specs)
    assert 170 <= prompts[1000] <= 230 and 130 <= outputs[1000] <= 170  # medians
    assert prompts[-1] == 1000 and prompts[1980] > 800  # some prompts run long
    assert all(s.num_prompt_tokens + s.max_tokens <= 1270 for s in specs)
    assert specs == build_requests(WorkloadConfig(name="lognormal", seed=3), 2000)


def test_chat_endpoint_sends_messages_and_the_sampling_parameters(
    fake: tuple[FakeServer, str], tmp_path: Path
) -> None:
    server, url = fake
    before = len(server.payloads)
    extra = ("--endpoint", "chat", "--prompt-format", "text", "--temperature", "0.7")
    report = _run(url, tmp_path, "--model", "ok", "--num-requests", "2", "--top-p", "0.9", *extra)
    assert report["summary"]["num_ok"] == 2
    payload = server.payloads[before]
    assert payload["messages"][0]["role"] == "user"
    assert len(payload["messages"][0]["content"].split()) == 8 and "prompt" not in payload
    assert payload["temperature"] == 0.7 and payload["top_p"] == 0.9
    assert "top_k" not in payload and "min_p" not in payload  # sent only when asked
    assert report["config"]["endpoint"] == "chat" and report["config"]["top_p"] == 0.9


def test_poisson_offsets_match_rate() -> None:
    offsets = poisson_offsets(rate=20.0, count=2000, seed=1)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert offsets[-1] / (len(offsets) - 1) == pytest.approx(1 / 20, rel=0.1)


def test_completion_tokens_come_from_usage(fake: tuple[FakeServer, str], tmp_path: Path) -> None:
    server, url = fake
    before = len(server.payloads)
    report = _run(url, tmp_path, "--model", "ok", "--num-requests", "6", "--concurrency", "3")
    summary = report["summary"]
    assert summary["num_ok"] == 6 and summary["num_errors"] == 0
    assert summary["total_completion_tokens"] == 6 * 7
    assert summary["total_prompt_tokens"] == 6 * 8
    assert summary["tpot_ms"]["p50"] is not None and summary["itl_ms"]["p50"] is not None
    payload = server.payloads[before]
    assert payload["stream"] is True and payload["ignore_eos"] is True
    assert payload["stream_options"] == {"include_usage": True}
    assert payload["temperature"] == 0.0 and payload["max_tokens"] == 7
    assert len(payload["prompt"]) == 8 and all(isinstance(t, int) for t in payload["prompt"])


def test_failures_are_counted_not_raised(fake: tuple[FakeServer, str], tmp_path: Path) -> None:
    server, url = fake
    server.payloads.clear()
    report = _run(url, tmp_path, "--model", "cycle", "--num-requests", "8", "--concurrency", "2")
    summary = report["summary"]
    assert summary["num_ok"] == 2 and summary["num_errors"] == 6
    messages = {e["message"]: e["count"] for e in summary["errors"]}
    assert messages.pop("no usage") == 2
    assert any(m.startswith("HTTP 500") and "boom" in m for m in messages)
    assert sum(messages.values()) == 4


def test_timeout_and_refused_connection_are_errors(
    fake: tuple[FakeServer, str], tmp_path: Path
) -> None:
    _, url = fake
    slow = _run(url, tmp_path, "--model", "slow", "--num-requests", "1", "--timeout", "0.2")
    assert slow["summary"]["errors"] == [{"message": "timeout after 0.2 s", "count": 1}]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused = _run(f"http://127.0.0.1:{closed_port}", tmp_path, "--num-requests", "2")
    assert refused["summary"]["num_errors"] == 2


def test_open_loop_sends_all_requests(fake: tuple[FakeServer, str], tmp_path: Path) -> None:
    server, url = fake
    before = len(server.payloads)
    extra = ("--model", "ok", "--num-requests", "10", "--request-rate", "200", "--warmup", "2")
    report = _run(url, tmp_path, *extra)
    assert len(server.payloads) - before == 12
    assert report["summary"]["num_requests"] == 10 and report["summary"]["num_ok"] == 10
    assert report["config"]["mode"] == "open"


def test_json_report_and_table(
    fake: tuple[FakeServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake
    report = _run(url, tmp_path, "--model", "ok", "--num-requests", "2", "--label", "gw_c1")
    assert set(report) == {"label", "config", "summary", "server_side"}
    assert report["label"] == "gw_c1"
    assert report["server_side"] is None  # a server without the gateway's metrics has no view
    assert report["config"]["workload"] == "fixed" and report["config"]["concurrency"] == 1
    for key in ("output_tok_s", "requests_s", "num_errors", "errors", "wall_s"):
        assert key in report["summary"]
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(report["summary"][metric]) == {"mean", "p50", "p90", "p99"}
    table = capsys.readouterr().out
    assert "== gw_c1 ==" in table and "output tok/s" in table and "TTFT" in table


def test_the_server_side_view_covers_only_the_measured_requests(
    fake: tuple[FakeServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = fake
    server.serve_metrics(True)
    try:
        extra = ("--model", "ok", "--num-requests", "6", "--warmup", "3", "--concurrency", "2")
        report = _run(url, tmp_path, *extra)
    finally:
        server.serve_metrics(False)
    view = report["server_side"]
    assert set(view) == {"ttft_ms", "queue_ms", "prefill_ms"}
    assert {stats["count"] for stats in view.values()} == {6}  # not the 3 warm-up requests
    assert view["queue_ms"]["mean"] == pytest.approx(40)
    assert view["prefill_ms"]["mean"] == pytest.approx(60)
    assert view["ttft_ms"]["mean"] == pytest.approx(100)
    # every observation is in the bucket (75, 100] ms of prometheus_client's default buckets
    assert 75 < view["ttft_ms"]["p50"] <= view["ttft_ms"]["p90"] <= 100
    out = capsys.readouterr().out
    assert "server side" in out and "PREFILL" in out


def test_quantiles_interpolate_within_the_bucket_like_prometheus() -> None:
    hist = Scraped({0.1: 10, 0.2: 30, math.inf: 30}, count=30, total=4.0)
    assert hist.quantile(0.5) == pytest.approx(0.125)  # rank 15: 5 of the 20 in (0.1, 0.2]
    assert hist.quantile(0.2) == pytest.approx(0.06)  # rank 6: 6 of the 10 in (0, 0.1]
    beyond = Scraped({0.1: 1, math.inf: 4}, count=4, total=9.0)
    assert beyond.quantile(0.9) == 0.1  # past the last finite bound: that bound


def test_the_view_is_the_difference_of_two_scrapes() -> None:
    def exposition(count: int, total: float, fast: int) -> str:
        family = "gateway_request_queue_seconds"
        return (
            f"# TYPE {family} histogram\n"
            f'{family}_bucket{{model="m",le="0.05"}} {fast}\n'
            f'{family}_bucket{{model="m",le="+Inf"}} {count}\n'
            f'{family}_count{{model="m"}} {count}\n{family}_sum{{model="m"}} {total}\n'
        )

    before, after = parse(exposition(10, 5.0, 10)), parse(exposition(14, 5.6, 12))
    view = server_view(before, after)
    assert view is not None and set(view) == {"queue_ms"}
    assert view["queue_ms"]["count"] == 4 and view["queue_ms"]["mean"] == pytest.approx(150)
    assert view["queue_ms"]["p50"] == pytest.approx(50)  # 2 of the 4 new ones are <= 50 ms
    assert server_view(after, after) is None  # no request in between
    assert parse("# TYPE other_seconds histogram\nother_seconds_count 3\n") == {}
    odd = "# TYPE gateway_request_queue_seconds histogram\ngateway_request_queue_seconds_bucket 1\n"
    assert parse(odd)["queue"].buckets == {}  # a bucket without its bound is left out
