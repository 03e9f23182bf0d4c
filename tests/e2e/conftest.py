"""The real gateway (uvicorn + the engine + the tiny demo GGUF) on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.settings import DEMO_JSON_STRING_MAX_CHARS, Settings

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_gateway(settings: Settings) -> Iterator[str]:
    """Serve `settings` with uvicorn in a thread until the block ends; yields the base URL."""
    port = free_port()
    settings = replace(settings, host="127.0.0.1", port=port)
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait_healthy(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert thread.is_alive(), "the gateway's server thread died; see the log above"
        try:
            r = httpx.get(f"{url}/health", timeout=2)
            if r.status_code == 200:
                return
            assert r.json().get("status") != "error", r.text
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the gateway at {url} was not healthy after {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def gateway_settings(tiny_model: Path) -> Settings:
    """The shared gateway: the tiny model, 8 slots, no API key, and free JSON strings capped
    as `llm-gateway serve` caps them for the demo model (random weights never close one)."""
    return Settings(
        model=tiny_model,
        slots=8,
        ctx_size=16384,
        served_model_name="tiny",
        json_string_max_chars=DEMO_JSON_STRING_MAX_CHARS,
    )


@pytest.fixture(scope="session")
def gateway_url(gateway_settings: Settings) -> Iterator[str]:
    """Base URL of the shared real gateway (one per test session)."""
    with running_gateway(gateway_settings) as url:
        yield url
