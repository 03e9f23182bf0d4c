"""One client's big request never stalls the others: /health answers while it is processed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import running_gateway

pytestmark = pytest.mark.model
WORDS = "the quick brown fox jumps over the lazy dog " * 95_000  # about 4 MB


@pytest.fixture(scope="module")
def roomy_url(gateway_settings: Settings) -> Iterator[str]:
    """A gateway that lets 4 MB prompts through to the tokenizer (its limits are raised)."""
    settings = replace(
        gateway_settings, max_prompt_chars=10_000_000, max_body_bytes=16 * 2**20, max_queue=300
    )
    with running_gateway(settings) as url:
        yield url


def health_latencies_during(
    url: str, path: str, body: dict[str, object]
) -> tuple[int, list[float]]:
    """POST `body` in a thread; meanwhile GET /health again and again. (status, latencies)."""
    result: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: result.append(httpx.post(f"{url}{path}", json=body, timeout=120))
    )
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        worker.start()
        while worker.is_alive():
            start = time.perf_counter()
            assert client.get("/health").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.005)
    worker.join()
    return result[0].status_code, latencies


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": WORDS, "max_tokens": 1}),
        ("/v1/completions", {"prompt": [WORDS[:16_000]] * 250, "max_tokens": 1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": WORDS}]}),
    ],
    ids=["one-4MB-prompt", "250-prompts-of-16KB", "4MB-chat"],
)
def test_health_stays_fast_while_a_4_mb_prompt_is_tokenized(
    roomy_url: str, path: str, body: dict[str, object]
) -> None:
    status, latencies = health_latencies_during(roomy_url, path, body)
    assert status == 400  # far beyond the context: refused after tokenizing, as it must be
    assert len(latencies) >= 10, "the request was too quick to measure anything"
    latencies.sort()
    # Before: /health waited 4-5 s for the tokenizer. Parsing, rendering and tokenizing all
    # run in worker threads now (about 1 ms p50 here); the worst case allowed covers this test's
    # own client, which encodes the 4 MB body in this process, on a busy 2-core CI machine.
    assert latencies[-1] < 0.5 and latencies[len(latencies) // 2] < 0.05, latencies[-5:]


def test_two_thousand_prompts_are_refused_at_once(gateway_url: str) -> None:
    start = time.perf_counter()
    r = httpx.post(f"{gateway_url}/v1/completions", json={"prompt": ["hello"] * 2000}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert time.perf_counter() - start < 1.0
