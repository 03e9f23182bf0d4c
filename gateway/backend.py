"""What the API layer needs from an engine: batching.engine.AsyncEngine, or a fake in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from batching.async_engine import AsyncEngine
from batching.info import EngineStats, ModelInfo
from batching.outputs import StepOutput, StepStats
from batching.params import SamplingParams
from gateway.settings import Settings

StepObserver = Callable[[StepStats], None]


class OutputStream(Protocol):
    """The outputs of one request's choices; closing it before the end aborts the request."""

    def __aiter__(self) -> AsyncIterator[StepOutput]: ...

    async def __anext__(self) -> StepOutput: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    """The engine surface the gateway codes against."""

    @property
    def model(self) -> ModelInfo: ...

    @property
    def is_ready(self) -> bool: ...

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def compile_grammar(self, gbnf: str) -> None:
        """Parse a grammar once for later requests (thread-safe; ValueError if it does not)."""

    def submit(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams, n: int = 1
    ) -> OutputStream: ...

    def abort(self, request_id: str) -> None: ...

    def abort_all(self, error: str) -> None: ...

    def stats(self) -> EngineStats: ...


EngineLoader = Callable[[Settings, StepObserver], Backend]


def load_engine(settings: Settings, observer: StepObserver) -> Backend:
    """Load the model named by the settings (blocking; run it in a worker thread)."""
    return AsyncEngine.load(settings.engine_config(), observer=observer)
