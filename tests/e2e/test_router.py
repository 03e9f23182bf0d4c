"""vllm-router (its real Rust binary) in front of two real gateways on loopback ports.

Requests, streams and errors must pass through it unchanged and both replicas must serve. A
replica stopped with SIGTERM (a rolling update, a scale-in) must lose no request: it drains
(`--shutdown-grace`, here through LLM_GATEWAY_SHUTDOWN_GRACE): /health answers 503 at once, so
the router's health check takes it out of rotation; a new request that still reaches it gets 503
with Retry-After, which the router retries on the other replica; the requests in flight finish;
then the process exits by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_prometheus import free_port, scrape_gateway, wait_until

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"
SHUTDOWN_GRACE_S = 30
OUTPUT_LEN = 16  # tokens of each stream of the SIGTERM test
NUM_CLIENTS = 8  # its clients: 4 per replica, one per slot
ROUTER_FLAGS = [
    # the health check every second, out after one failure: a draining replica leaves at once
    "--worker-startup-check-interval", "1", "--health-check-interval-secs", "1",
    "--health-failure-threshold", "1", "--health-success-threshold", "1",
    "--policy", "round_robin", "--log-level", "warning",
]  # fmt: skip


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[bytes]


@dataclass
class Cluster:
    router: str
    replicas: list[Replica]


def _start(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _ok(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"{proc.args!r} exited; see its log in the test's tmp_path"
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def start_replica(model: Path, log: Path) -> Replica:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LLM_GATEWAY_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_S),
    }
    argv = [sys.executable, "-m", "gateway", "serve", "--model", str(model), "--port", str(port)]
    argv += ["--slots", "4", "--ctx-size", "2048", "--served-model-name", MODEL]
    return Replica(f"http://127.0.0.1:{port}", _start(argv, log, env))


@pytest.fixture
def cluster_factory(tiny_model: Path, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def make() -> Cluster:
        replicas = [start_replica(tiny_model, tmp_path / f"gateway-{i}.log") for i in range(2)]
        procs.extend(r.proc for r in replicas)
        for r in replicas:
            wait_until(lambda r=r: _ok(f"{r.url}/health", r.proc), 60, "a gateway to load")
        port, metrics_port = free_port(), free_port()
        argv = [sys.executable, "-m", "vllm_router.launch_router", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--worker-urls", *(r.url for r in replicas), *ROUTER_FLAGS]
        argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port)]
        router = _start(argv, tmp_path / "router.log")
        procs.append(router)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(f"{url}/health", router), 30, "the router to see both replicas")
        return Cluster(url, replicas)

    try:
        yield make
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture
def cluster(cluster_factory: Any) -> Cluster:
    made: Cluster = cluster_factory()
    return made


def served(replica: Replica) -> float:
    """Requests the replica answered with 200, from its own /metrics."""
    text, _ = scrape_gateway(replica.url)
    lines = [ln for ln in text.splitlines() if ln.startswith("gateway_requests_total{")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if 'status="200"' in ln)


def sse_data(text: str) -> list[Any]:
    datas = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data:")]
    return [d if d == "[DONE]" else json.loads(d) for d in datas]


def test_requests_pass_through_unchanged_and_both_replicas_serve(cluster: Cluster) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    direct = httpx.post(f"{cluster.replicas[0].url}/v1/completions", json=body, timeout=30)
    routed = [
        httpx.post(f"{cluster.router}/v1/completions", json=body, timeout=30) for _ in range(4)
    ]
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}
    answer = httpx.post(f"{cluster.router}/v1/chat/completions", json=chat, timeout=30)
    assert direct.status_code == 200 and all(r.status_code == 200 for r in routed)
    for r in routed:
        assert r.json()["choices"] == direct.json()["choices"]
        usage, alone = r.json()["usage"], direct.json()["usage"]  # cached tokens may differ
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
            alone["prompt_tokens"],
            alone["completion_tokens"],
        )
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 6
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    assert all(served(replica) >= 2 for replica in cluster.replicas)  # round robin spread them
    models = httpx.get(f"{cluster.router}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL]


def test_streams_pass_through_chunk_by_chunk(cluster: Cluster) -> None:
    body = {
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    with httpx.stream("POST", f"{cluster.router}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_data(r.read().decode())
    plain = httpx.post(
        f"{cluster.router}/v1/chat/completions", json={**body, "stream": False}, timeout=30
    ).json()
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["usage"]["completion_tokens"] == 16
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]


def test_gateway_errors_reach_the_client_unchanged(cluster: Cluster) -> None:
    too_long = {"model": MODEL, "prompt": "hello", "max_tokens": 100_000}
    unknown = {"model": "no-such-model", "prompt": "hello", "max_tokens": 4}
    for body, status, code in ((too_long, 400, "context_length_exceeded"),
                               (unknown, 404, "model_not_found")):  # fmt: skip
        direct = httpx.post(f"{cluster.replicas[1].url}/v1/completions", json=body, timeout=30)
        routed = httpx.post(f"{cluster.router}/v1/completions", json=body, timeout=30)
        assert (routed.status_code, direct.status_code) == (status, status)
        assert routed.json() == direct.json()
        assert routed.json()["error"]["code"] == code


async def _stream(client: httpx.AsyncClient, seed: int) -> tuple[int, list[Any]]:
    body = {
        "model": MODEL, "prompt": f"Story number {seed}:", "max_tokens": OUTPUT_LEN, "seed": seed,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            return r.status_code, sse_data((await r.aread()).decode())
    except httpx.HTTPError as e:
        return 0, [f"{type(e).__name__}: {e}"]


Result = tuple[float, tuple[int, list[Any]]]  # start time, (status, SSE events)


async def _load(router: str, sigterm_at: list[float], results: list[Result]) -> None:
    """Eight clients sending streams back to back; each stops after one sent after the SIGTERM."""
    deadline = time.monotonic() + 120  # a bound, for a very slow machine
    async with httpx.AsyncClient(base_url=router, timeout=60) as client:

        async def one_client(k: int) -> None:
            seed = k * 1000
            while time.monotonic() < deadline:
                start = time.monotonic()
                results.append((start, await _stream(client, seed)))
                seed += 1
                if sigterm_at and start > sigterm_at[0]:
                    return

        await asyncio.gather(*(one_client(k) for k in range(NUM_CLIENTS)))


def complete(result: tuple[int, list[Any]]) -> bool:
    """A 200 stream that ended with finish_reason "length", its usage and [DONE]."""
    status, events = result
    if status != 200 or len(events) < 3 or events[-1] != "[DONE]":
        return False
    last, usage = events[-3], events[-2]
    is_whole = usage["usage"]["completion_tokens"] == OUTPUT_LEN
    return bool(last["choices"][0]["finish_reason"] == "length" and is_whole)


def _log_tails(tmp_path: Path, lines: int = 15) -> str:
    """The end of each process's log, for a failure message (the logs vanish with tmp_path)."""
    tails = []
    for log in sorted(tmp_path.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(tails)


def test_a_replica_stopped_with_sigterm_loses_no_request(cluster: Cluster, tmp_path: Path) -> None:
    leaving, staying = cluster.replicas
    results: list[Result] = []
    sigterm_at: list[float] = []
    served_before: list[float] = []

    async def scenario() -> None:
        load = asyncio.create_task(_load(cluster.router, sigterm_at, results))
        # SIGTERM while requests are in flight on the leaving replica
        await asyncio.to_thread(
            wait_until, lambda: _in_flight(leaving) > 0, 10, "a request in flight on the replica"
        )
        served_before.append(await asyncio.to_thread(served, staying))
        leaving.proc.send_signal(signal.SIGTERM)
        sigterm_at.append(time.monotonic())
        await load

    asyncio.run(scenario())
    # It exits by itself once drained; uvicorn re-raises the SIGTERM it caught after a clean
    # shutdown, so the status is that of the signal (or 0).
    exit_code = leaving.proc.wait(timeout=SHUTDOWN_GRACE_S + 10)
    lost = [result for _, result in results if not complete(result)]
    assert not lost, f"{len(lost)} of {len(results)} lost: {lost[:3]}\n{_log_tails(tmp_path)}"
    started_after = [start for start, _ in results if start > sigterm_at[0]]
    assert len(started_after) == NUM_CLIENTS  # every client sent a new request...
    assert served(staying) >= served_before[0] + len(started_after)  # ...and the survivor served
    assert exit_code in (0, -signal.SIGTERM)


def _in_flight(replica: Replica) -> int:
    load: int = httpx.get(f"{replica.url}/get_load", timeout=5).json()["load"]
    return load
