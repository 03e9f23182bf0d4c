"""Streaming against the real gateway: 16 clients at once, a client that leaves, README's curl."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.model
README = Path(__file__).resolve().parents[2] / "README.md"
NUM_CLIENTS = 16


async def stream_chat(client: httpx.AsyncClient, i: int) -> list[dict[str, Any]]:
    """One streamed chat; asserts the SSE framing and returns the chunks."""
    body = {
        "model": "tiny", "messages": [{"role": "user", "content": f"Tell story {i}."}],
        "max_tokens": 12, "temperature": 0.8, "seed": i, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines()]
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events), events
    assert events[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in events[:-1]]


def well_formed_text(chunks: list[dict[str, Any]]) -> str:
    """The streamed text, after checking the chunk order a client relies on."""
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    body, usage = chunks[1:-1], chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1
    reasons = [c["choices"][0]["finish_reason"] for c in body]
    assert reasons[-1] in ("stop", "length") and not any(reasons[:-1])
    return "".join(c["choices"][0]["delta"].get("content", "") for c in body)


def test_16_concurrent_streams_each_equal_its_request_alone(gateway_url: str) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        limits = httpx.Limits(max_connections=NUM_CLIENTS)
        async with httpx.AsyncClient(base_url=gateway_url, timeout=60, limits=limits) as client:
            alone = [well_formed_text(await stream_chat(client, i)) for i in range(NUM_CLIENTS)]
            together = await asyncio.gather(*(stream_chat(client, i) for i in range(NUM_CLIENTS)))
            return alone, [well_formed_text(chunks) for chunks in together]

    alone, together = asyncio.run(scenario())
    assert together == alone
    assert len(set(alone)) > 1  # the seeds made different stories


def engine_gauge(gateway_url: str, name: str) -> float:
    text = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_a_client_that_leaves_mid_stream_frees_its_slot(gateway_url: str) -> None:
    body = {
        "model": "tiny", "prompt": "An endless tale:", "max_tokens": 2000, "stream": True,
        "ignore_eos": True,
    }  # fmt: skip
    with (
        httpx.Client(base_url=gateway_url, timeout=30) as client,
        client.stream("POST", "/v1/completions", json=body) as r,
    ):
        lines = r.iter_lines()  # held open: dropping the iterator closes the connection
        assert next(lines).startswith("data: {")
        assert engine_gauge(gateway_url, "gateway_slots_busy") >= 1
    deadline = time.monotonic() + 10  # bounded: the abort lands within an engine step or two
    while engine_gauge(gateway_url, "gateway_slots_busy") > 0:
        assert time.monotonic() < deadline, "the slot stayed busy after the client left"
        time.sleep(0.05)


def readme_curl_example() -> str:
    """The `curl -N` streaming example of README.md, as a shell command."""
    assert README.is_file(), "README.md is missing"
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), re.DOTALL)
    examples = [b for b in blocks if "curl -N" in b]
    assert examples, "README.md has no ```bash block with a `curl -N` streaming example"
    lines = examples[0].replace("\\\n", " ").splitlines()
    command: str = next(line for line in lines if "curl -N" in line)
    return command.strip()


def test_the_readme_curl_example_streams_tokens(gateway_url: str) -> None:
    command = readme_curl_example()
    command = re.sub(r"https?://(localhost|127\.0\.0\.1):\d+", gateway_url, command)
    command = re.sub(r'"model":\s*"[^"]*"', '"model": "tiny"', command)
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    events = [line for line in result.stdout.splitlines() if line]
    assert len(events) >= 3 and events[-1] == "data: [DONE]", result.stdout
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert any(c["choices"] and c["choices"][0].get("delta", {}).get("content") for c in chunks)
