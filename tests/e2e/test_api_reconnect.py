"""Clients that leave give their places back at once: reconnecting below capacity is never a 429."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import running_gateway

pytestmark = pytest.mark.model
LONG = {"prompt": "Hi", "max_tokens": 2000, "ignore_eos": True, "stream": True}


@pytest.fixture(scope="module")
def small_url(gateway_settings: Settings) -> Iterator[str]:
    """4 slots and 8 waiting places: room for 12 requests."""
    with running_gateway(replace(gateway_settings, slots=4, max_queue=8)) as url:
        yield url


async def _connect(client: httpx.AsyncClient) -> tuple[int, httpx.Response]:
    """Open a stream and read its first event; the caller closes it (the client leaves)."""
    request = client.build_request("POST", "/v1/completions", json=LONG)
    response = await client.send(request, stream=True)
    if response.status_code == 200:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                break
    return response.status_code, response


async def _round(url: str, num_clients: int) -> list[int]:
    """num_clients streams connect, all leave at once, and all reconnect at once."""
    limits = httpx.Limits(max_connections=2 * num_clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        first = await asyncio.gather(*(_connect(client) for _ in range(num_clients)))
        assert [status for status, _ in first] == [200] * num_clients
        await asyncio.gather(*(response.aclose() for _, response in first))
        second = await asyncio.gather(*(_connect(client) for _ in range(num_clients)))
        await asyncio.gather(*(response.aclose() for _, response in second))
    return [status for status, _ in second]


def test_ten_clients_reconnecting_at_once_below_capacity_get_no_429(small_url: str) -> None:
    for _ in range(3):
        statuses = asyncio.run(_round(small_url, 10))
        assert statuses.count(429) == 0, statuses
        assert statuses == [200] * 10
