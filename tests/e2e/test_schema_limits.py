"""Hostile schemas against a real server process under a memory limit: each is a 400 within
a second that names the keyword, and the server keeps serving.

Without the bounds, `{"minLength": 5, "maxLength": 2}` became `char{5,2}`, which llama.cpp's
grammar parser expands into rules without end; under RLIMIT_AS that kills the process.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 3 * 2**30  # bytes of address space; the server needs well under 1 GiB
LIMITED_SERVER = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
    "from gateway.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


THOUSAND_PROPERTIES = {
    "type": "object",
    "properties": {f"p{i}": {"type": "string"} for i in range(1000)},
}


@pytest.fixture(scope="module")
def limited_gateway(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert resource.RLIMIT_AS  # the limit this test relies on exists here
    port = free_port()
    argv = [sys.executable, "-c", LIMITED_SERVER, "serve", "--model", str(tiny_model)]
    argv += ["--port", str(port), "--slots", "2", "--ctx-size", "1024"]
    log_path = tmp_path_factory.mktemp("limited") / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log_path)
            yield url
            assert proc.poll() is None, log_path.read_text()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the limited gateway did not start; log: {log.read_text()}")


def _ask(url: str, schema: Any) -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": "JSON please"}],
        "max_tokens": 16,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems"),
        ({"type": "string", "minLength": 100_000_000}, "minLength"),
        ({"type": "string", "pattern": "^(a{0,100}b){0,100}$"}, None),  # past llama's budget
        (THOUSAND_PROPERTIES, "properties"),
        ({"enum": []}, "enum"),
        ({"type": "string", "maxLength": "abc"}, "maxLength"),
        ({"type": "string", "maxLength": [1]}, "maxLength"),
    ],
)
def test_a_hostile_schema_is_a_quick_400_and_the_server_lives(
    limited_gateway: str, schema: Any, param: str | None
) -> None:
    start = time.monotonic()
    r = _ask(limited_gateway, schema)
    elapsed = time.monotonic() - start
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    prefix = "response_format.json_schema.schema"
    assert error["param"] == (f"{prefix}.{param}" if param else prefix)
    assert elapsed < 1.0
    assert httpx.get(f"{limited_gateway}/health", timeout=5).status_code == 200


def test_a_large_but_bounded_schema_is_served(limited_gateway: str) -> None:
    many = {"type": "object", "properties": {f"p{i}": {"type": "boolean"} for i in range(100)}}
    r = _ask(limited_gateway, many)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("{")
