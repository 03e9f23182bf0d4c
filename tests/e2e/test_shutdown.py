"""SIGTERM to a real server process mid-stream: every client gets a whole answer or an explicit
error, new requests get 503s, and the process exits in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 2.0
SHORT = {"prompt": "Hi", "max_tokens": 8, "ignore_eos": True}  # well within the grace
LONG = {"prompt": "Hi", "max_tokens": 4000, "ignore_eos": True}  # far longer than the grace


@pytest.fixture
def server(tiny_model: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python3 -m gateway serve` on a free loopback port, its grace set by the environment."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_GATEWAY_SHUTDOWN_GRACE": str(GRACE_S)}
    log = (tmp_path / "server.log").open("wb")
    command = [sys.executable, "-m", "gateway", "serve", "--model", str(tiny_model)]
    command += ["--port", str(port), "--slots", "8", "--ctx-size", "32768"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def _wait_healthy(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited while starting"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server was not healthy after 60 s")


class Client(threading.Thread):
    """One request, its outcome recorded: ("whole" | "error" | "cut", detail)."""

    def __init__(self, url: str, body: dict[str, object], stream: bool) -> None:
        super().__init__()
        self.url, self.body, self.stream = url, {**body, "stream": stream}, stream
        self.first_byte = threading.Event()
        self.outcome: tuple[str, str] = ("cut", "no answer")

    def run(self) -> None:
        try:
            if self.stream:
                self.outcome = self._streamed()
            else:
                self.first_byte.set()
                r = httpx.post(f"{self.url}/v1/completions", json=self.body, timeout=60)
                self.outcome = _plain(r)
        except httpx.HTTPError as e:
            self.outcome = ("cut", repr(e))
        finally:
            self.first_byte.set()

    def _streamed(self) -> tuple[str, str]:
        datas = []
        with httpx.stream("POST", f"{self.url}/v1/completions", json=self.body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    datas.append(line.removeprefix("data: "))
                    self.first_byte.set()
        if datas[-1:] != ["[DONE]"]:
            return ("cut", f"no [DONE] after {len(datas)} events")
        last = json.loads(datas[-2])
        if "error" in last:
            return ("error", last["error"]["code"])
        if last["choices"] and last["choices"][0]["finish_reason"]:
            return ("whole", last["choices"][0]["finish_reason"])
        return ("cut", "no finish_reason before [DONE]")


def _load(url: str) -> int:
    """Requests in the engine, running or waiting (the router's load endpoint)."""
    load: int = httpx.get(f"{url}/get_load", timeout=5).json()["load"]
    return load


def _plain(r: httpx.Response) -> tuple[str, str]:
    if r.status_code == 200:
        return ("whole", r.json()["choices"][0]["finish_reason"])
    if r.status_code == 503 and r.headers.get("retry-after"):
        return ("error", r.json()["error"]["code"])
    return ("cut", f"{r.status_code} {r.text[:200]}")


def test_sigterm_drains_then_ends_the_rest_explicitly_and_exits(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = server
    long_ones = [Client(url, LONG, stream=True) for _ in range(3)]
    long_ones.append(Client(url, LONG, stream=False))
    for client in long_ones:
        client.start()
    for client in long_ones:
        assert client.first_byte.wait(30)
    time.sleep(0.3)  # the long ones are generating now
    short_ones = [Client(url, SHORT, stream=s) for s in (True, False)]
    for client in short_ones:
        client.start()
    # every short one still running must be in the engine before the signal: a plain request's
    # client thread can still be connecting, and one that arrives after the signal rightly gets
    # a 503 (the long ones are 4 of the engine's load throughout)
    deadline = time.monotonic() + 10
    while _load(url) - len(long_ones) < sum(c.is_alive() for c in short_ones):
        assert time.monotonic() < deadline, "the short requests never reached the engine"
        time.sleep(0.005)

    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    health = httpx.get(f"{url}/health", timeout=5)
    late = httpx.post(f"{url}/v1/completions", json=SHORT, timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert late.status_code == 503 and late.headers["retry-after"]
    assert late.json()["error"]["code"] == "server_shutting_down"

    for client in long_ones + short_ones:
        client.join(timeout=30)
    outcomes = [c.outcome for c in long_ones + short_ones]
    assert all(kind in ("whole", "error") for kind, _ in outcomes), outcomes
    assert [c.outcome for c in short_ones] == [("whole", "length")] * 2, outcomes
    assert [c.outcome for c in long_ones] == [("error", "server_shutting_down")] * 4, outcomes
    proc.wait(timeout=GRACE_S + 10)
    assert time.monotonic() - signalled < GRACE_S + 8
    assert proc.returncode in (0, -signal.SIGTERM)


def test_ctrl_c_drains_and_exits_quietly(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, url = server
    client = Client(url, SHORT, stream=True)
    client.start()
    assert client.first_byte.wait(30)
    proc.send_signal(signal.SIGINT)
    client.join(timeout=30)
    assert client.outcome == ("whole", "length")
    proc.wait(timeout=GRACE_S + 10)
    assert proc.returncode == 128 + signal.SIGINT  # as a shell reports an interrupted command
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-2000:]
