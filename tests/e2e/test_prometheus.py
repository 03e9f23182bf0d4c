"""A real Prometheus scrapes a real gateway; every dashboard query must return data.

Also checks the deploy/ files offline: the dashboard only uses metrics the gateway exports, its
PromQL parses (promtool), and the Prometheus config is valid.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.test_metrics import engine_stats, make_metrics, model_info, require_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llm-gateway.json"
JOB = "llm-gateway"  # the job of deploy/prometheus/prometheus.yml and of the PodMonitor
RATE_WINDOW = "1m"  # stands in for Grafana's $__rate_interval; covers the whole test


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def concrete(expr: str, model: str) -> str:
    """The query Grafana would send, with its variables filled in."""
    for var in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(var, RATE_WINDOW)
    # Grafana escapes the value's regex metacharacters; a PromQL string doubles backslashes.
    escaped = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\\\1", model)
    expr = expr.replace("${model}", escaped).replace("$model", escaped)
    # $job defaults to the gateway's job; $instance to All, whose regex is .*
    expr = expr.replace("$job", JOB).replace("$instance", ".*")
    assert "$" not in expr, f"unknown variable left in {expr}"
    return expr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `check()` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


# -- offline checks of deploy/ ---------------------------------------------------------------


def test_dashboard_uses_only_exported_metrics() -> None:
    metrics = make_metrics(engine_stats())
    metrics.count_request("/v1/completions", 200)  # request series exist once counted
    body, _ = metrics.render()
    exported = {"up"}
    for family in text_string_to_metric_families(body.decode()):
        exported |= {s.name for s in family.samples}
    queries = dashboard_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        names = set(re.findall(r"\b(gateway_[a-z_]+|up)\b", expr))
        assert names, f"{title}: {expr} uses no metric"
        assert names <= exported, f"{title}: unknown metric {names - exported}"
        assert "$model" in expr or "up{" in expr, f"{title}: not filtered by $model"
        assert '$job", instance=~"$instance"' in expr, f"{title}: not filtered by $job/$instance"


def test_dashboard_panels_cover_the_operator_questions() -> None:
    titles = {title for title, _ in dashboard_queries()}
    for needed in (
        "Gateway up",
        "Token throughput",
        "Time to first token",
        "Time per output token",
        "End-to-end latency",
        "Running and waiting requests",
        "Slot and KV-cache usage",
        "Sequences per step",
        "Prompt cache hit ratio",
        "Error and rejection rates",
        "Token throughput per instance",
        "Running and waiting per instance",
        "KV-cache usage per instance",
        "Time to first token p99 per instance",
        "Prompt cache hit ratio per instance",
        "Failures per instance",
    ):
        assert needed in titles


def test_dashboard_offers_job_and_instance_variables() -> None:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    by_name = {v["name"]: v for v in variables}
    assert by_name["job"]["current"]["value"] == JOB
    assert by_name["instance"]["includeAll"] and by_name["instance"]["allValue"] == ".*"
    assert "$job" in by_name["instance"]["query"]["query"]
    assert "$instance" in by_name["model"]["query"]["query"]


def test_promtool_accepts_the_config_and_the_queries(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, timeout=30
    )
    assert config.returncode == 0, config.stdout.decode() + config.stderr.decode()
    # Each query as a recording rule: promtool parses its PromQL without a server.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr, model_info().model_id)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    rules_file = tmp_path / "rules.json"  # JSON is YAML
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


# -- a real Prometheus against a real gateway --------------------------------------------------


@pytest.fixture
def gateway_url(tiny_model: Path, tmp_path: Path) -> Iterator[str]:
    """A real gateway process (`python -m gateway serve`) on a loopback port."""
    url = f"http://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "gateway", "serve", "--model", str(tiny_model)]
    argv += ["--port", url.rsplit(":", 1)[1], "--slots", "4", "--ctx-size", "1024"]
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_until(lambda: _is_ready(f"{url}/health", proc), 60, "the gateway to load")
            yield url
        finally:
            _stop(proc)


@pytest.fixture
def prometheus_binary() -> str:
    """Checked before the gateway starts, so that a missing Prometheus skips at once."""
    require_tool("promtool")
    return require_tool("prometheus")


@pytest.fixture
def prometheus(prometheus_binary: str, tmp_path: Path, gateway_url: str) -> Iterator[str]:
    """Prometheus on a loopback port with the project's config pointed at the test gateway."""
    binary = prometheus_binary
    config = PROMETHEUS_YML.read_text()
    assert "gateway:8000" in config and "scrape_interval: 5s" in config
    target = gateway_url.removeprefix("http://")
    config = config.replace("gateway:8000", target).replace(
        "scrape_interval: 5s", "scrape_interval: 1s"
    )
    (tmp_path / "prometheus.yml").write_text(config)
    url = f"http://127.0.0.1:{free_port()}"
    argv = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--log.level=warn",
    ]
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _is_ready(f"{url}/-/ready", proc), 20, "Prometheus to start")
            yield url
        finally:
            _stop(proc)


def _is_ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"it exited ({proc.args!r}); see the log in the test's tmp_path"
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector of a PromQL query, through Prometheus' HTTP API."""
    r = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


async def send_load(gateway_url: str, model: str) -> None:
    """Completions (a shared prompt, so the prefix cache hits), a stream, an error, a cancel."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:

        async def complete(i: int) -> None:
            body = {"model": model, "prompt": "Once upon a time", "max_tokens": 8 + i, "seed": i}
            r = await client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text

        async def stream_chat() -> None:
            messages = [{"role": "user", "content": "Tell me a story."}]
            body = {"model": model, "messages": messages, "max_tokens": 8, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                assert [line async for line in r.aiter_lines() if line][-1] == "data: [DONE]"

        async def cancel_stream() -> None:
            body = {"model": model, "prompt": "A long tale:", "max_tokens": 200, "stream": True}
            body["ignore_eos"] = True
            async with client.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        break  # leaving the block closes the connection mid-stream

        bad = await client.post("/v1/completions", json={"model": model, "max_tokens": -1})
        assert bad.status_code == 400, bad.text
        await asyncio.gather(*(complete(i) for i in range(3)), stream_chat(), cancel_stream())


def scrape_gateway(gateway_url: str) -> tuple[str, dict[str, float]]:
    """The gateway's /metrics text, and each sample name's values summed over its labels."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return text, totals


def metric_labels(text: str, name: str) -> dict[str, str]:
    """The labels of the one sample called `name`."""
    (sample,) = (
        s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )
    return sample.labels


def is_idle(gateway_url: str) -> bool:
    _, totals = scrape_gateway(gateway_url)
    busy = ("gateway_requests_running", "gateway_requests_waiting", "gateway_slots_busy")
    return all(totals[name] == 0 for name in busy)


@pytest.mark.model
def test_every_dashboard_query_returns_data(prometheus: str, gateway_url: str) -> None:
    model = httpx.get(f"{gateway_url}/v1/models", timeout=5).json()["data"][0]["id"]
    wait_until(lambda: query(prometheus, 'up{job="llm-gateway"} == 1'), 15, "a first scrape")
    asyncio.run(send_load(gateway_url, model))
    time.sleep(2.5)  # scrapes between the waves, so that series born in the first one increase
    asyncio.run(send_load(gateway_url, model))

    # Every client has gone: nothing may stay running, queued or holding a slot.
    wait_until(lambda: is_idle(gateway_url), 10, "running, waiting and busy slots to reach 0")
    text, totals = scrape_gateway(gateway_url)
    assert totals["gateway_requests_aborted_total"] >= 2
    assert totals["gateway_requests_rejected_total"] == 0
    assert totals["gateway_request_prompt_tokens_count"] >= 8
    assert totals["gateway_generation_tokens_total"] > 0
    assert totals["gateway_prompt_cached_tokens_total"] > 0

    promtool = require_tool("promtool")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout.decode()

    model_label = metric_labels(text, "gateway_model_info")["model"]  # what $model offers
    queries = [(title, concrete(expr, model_label)) for title, expr in dashboard_queries()]
    empty: list[tuple[str, str]] = []

    def all_have_data() -> bool:
        empty[:] = [(t, q) for t, q in queries if not has_data(query(prometheus, q))]
        return not empty

    try:
        wait_until(all_have_data, 15, "every dashboard query to return data")
    except AssertionError as e:
        raise AssertionError(f"{e}; no data for: {empty}") from None
