"""GatewayServer: the first signal drains (uvicorn keeps listening), a second one exits."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import uvicorn
from sse_starlette.sse import AppStatus

from gateway.app import create_app
from gateway.server import GatewayServer
from gateway.settings import Settings
from tests.gateway.fake_engine import FakeEngine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_server(grace_s: float) -> GatewayServer:
    app = create_app(Settings(model=Path("/models/fake.gguf")), lambda s, o: FakeEngine())
    return GatewayServer(uvicorn.Config(app), app.state.gateway, grace_s)


async def test_the_first_signal_drains_and_then_lets_uvicorn_exit() -> None:
    server = make_server(grace_s=0.1)
    drain = server.config.app.state.gateway.drain
    server.handle_exit(signal.SIGTERM, None)
    assert drain.is_draining and not server.should_exit  # still listening: 503s, not refusals
    assert not await server.on_tick(1)  # the tick that starts the drain
    for _ in range(100):
        if server.should_exit:
            break
        await asyncio.sleep(0.01)
    assert server.should_exit and await server.on_tick(2)


async def test_a_second_signal_ends_the_grace_now_and_a_third_exits_without_waiting() -> None:
    server = make_server(grace_s=30)
    server.handle_exit(signal.SIGTERM, None)
    assert not await server.on_tick(1)  # the drain starts, with 30 s of grace
    server.handle_exit(signal.SIGTERM, None)
    for _ in range(100):  # nothing runs: the hurried drain is over at once
        if server.should_exit:
            break
        await asyncio.sleep(0.01)
    assert server.should_exit and not server.force_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.force_exit


def test_sse_starlette_no_longer_cuts_streams_on_the_exit_signal() -> None:
    make_server(grace_s=1)
    assert not AppStatus.enable_automatic_graceful_drain
