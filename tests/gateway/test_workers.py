"""Prompt work (rendering, tokenizing) runs in worker threads: it never stalls the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.gateway.fake_engine import FakeEngine, running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowTokenizer(FakeEngine):
    """Tokenizing takes 0.4 s of (GIL-free) work, as a multi-megabyte prompt does."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        self.threads.add(threading.current_thread().name)
        time.sleep(0.4)
        return super().tokenize(text, add_bos, parse_special)


async def _health_latencies(client: httpx.AsyncClient, busy: asyncio.Task[object]) -> list[float]:
    latencies = []
    while not busy.done():
        start = time.perf_counter()
        assert (await client.get("/health")).status_code == 200
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0.01)
    return latencies


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "x", "max_tokens": 2}),
        ("/v1/completions", {"prompt": ["x", "y"], "max_tokens": 2}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
        ("/generate/", {"prompt": "x", "max_tokens": 2}),
    ],
)
async def test_health_answers_while_a_prompt_is_tokenized(
    path: str, body: dict[str, object]
) -> None:
    engine = SlowTokenizer()
    async with running_app(engine) as (client, _, _):
        busy = asyncio.create_task(client.post(path, json=body))
        await asyncio.sleep(0.05)
        latencies = await _health_latencies(client, busy)
        assert (await busy).status_code == 200
    assert len(latencies) >= 5 and max(latencies) < 0.2  # the loop never waited 0.4 s for it
    assert threading.main_thread().name not in engine.threads
