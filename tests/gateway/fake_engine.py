"""A deterministic stand-in for batching.engine.AsyncEngine, and an app running on it.

Tokens are bytes (id = byte + 3; 1 = <s>, 2 = </s>). Choice i of a request "generates" TEXT
from position seed + i, one character per token, so every output is known in advance.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from batching.engine import EngineUnavailableError, QueueFullError
from batching.info import EngineStats, ModelInfo
from batching.outputs import StepOutput, TokenLogprob
from batching.params import SamplingParams
from gateway.app import create_app
from gateway.settings import Settings

TEXT = "The quick brown fox jumps over the lazy dog. "
BOS, EOS, OFFSET = 1, 2, 3


def fake_model(n_ctx: int = 256, n_slots: int = 4, chat_template: str | None = None) -> ModelInfo:
    return ModelInfo(
        path=Path("/models/fake.gguf"),
        model_id="fake",
        n_ctx=n_ctx,
        n_ctx_train=n_ctx,
        n_slots=n_slots,
        n_vocab=256 + OFFSET,
        bos_id=BOS,
        eos_id=EOS,
        add_bos=True,
        bos_text="<s>",
        eos_text="</s>",
        chat_template=chat_template,
        quantization="F16",
        description="fake",
    )


def expected_text(max_tokens: int, seed: int = 0, index: int = 0) -> str:
    """What choice `index` of a request with this seed generates (no stop strings)."""
    start = seed + index
    return "".join(TEXT[(start + t) % len(TEXT)] for t in range(max_tokens))


class FakeEngine:
    """The AsyncEngine surface over a scripted model; records what it was asked to do."""

    def __init__(
        self,
        model: ModelInfo | None = None,
        max_queue: int = 4,
        step_delay_s: float = 0.0,
        fail_after: int | None = None,
        script: str | None = None,
    ) -> None:
        self.model = model or fake_model()
        self.script = script  # every choice writes this text, then stops (tool-call tests)
        self.fail_after = fail_after  # tokens before every choice ends with finish_reason "error"
        self.max_queue = max_queue
        self.step_delay_s = step_delay_s
        self.is_ready = False
        self.submitted: list[tuple[str, list[int], SamplingParams, int]] = []
        self.aborted: list[str] = []
        self.compiled_grammars: list[str] = []  # parsed off the event loop by serving
        self.active: set[str] = set()
        self.streams: dict[str, FakeStream] = {}
        self.is_shut_down = False

    def start(self) -> None:
        self.is_ready = True

    def shutdown(self) -> None:
        self.is_ready = False
        self.is_shut_down = True

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        ids = [BOS] if add_bos else []
        for part in re.split("(<s>|</s>)", text) if parse_special else [text]:
            if parse_special and part in ("<s>", "</s>"):
                ids.append(BOS if part == "<s>" else EOS)
            else:
                ids += [b + OFFSET for b in part.encode()]
        return ids

    def detokenize(self, ids: list[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def compile_grammar(self, gbnf: str) -> None:
        self.compiled_grammars.append(gbnf)

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id - OFFSET]) if token_id >= OFFSET else b""

    def submit(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams, n: int = 1
    ) -> FakeStream:
        if len(self.active) >= self.model.n_slots + self.max_queue:
            raise QueueFullError(retry_after_s=2.5)
        if not self.is_ready:
            raise EngineUnavailableError("the engine is not running; try again later")
        self.submitted.append((request_id, prompt_ids, params, n))
        self.active.add(request_id)
        stream = FakeStream(self, request_id, prompt_ids, params, n)
        self.streams[request_id] = stream
        return stream

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def abort_all(self, error: str) -> None:
        """Every open stream ends at its next step with finish_reason "abort"."""
        self.is_ready = False
        for request_id in self.active:
            self.streams[request_id].abort_error = error

    def stats(self) -> EngineStats:
        busy = min(len(self.active), self.model.n_slots)
        used = 16 * len(self.active)  # KV cells: a made-up 16 per request
        return EngineStats(busy, len(self.active) - busy, busy, 4, used, 1024)


class FakeStream:
    """One request's outputs: a token per choice per step, interleaved like the engine's."""

    def __init__(
        self, engine: FakeEngine, request_id: str, prompt: list[int], params: SamplingParams, n: int
    ) -> None:
        self._engine = engine
        self._request_id = request_id
        self._gen = self._generate(prompt, params, n)
        self.is_closed = False
        self.abort_error: str | None = None

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> StepOutput:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self._engine.abort(self._request_id)
            self._engine.active.discard(self._request_id)
        await self._gen.aclose()

    async def _generate(
        self, prompt: list[int], params: SamplingParams, n: int
    ) -> AsyncGenerator[StepOutput, None]:
        texts, emitted = [""] * n, [0] * n
        done: set[int] = set()
        for t in range(params.max_tokens):
            await asyncio.sleep(self._engine.step_delay_s)
            if self.abort_error is not None:
                for i in sorted(set(range(n)) - done):
                    yield StepOutput(self._request_id, i, "", [], "abort", self.abort_error)
                break
            for i in set(range(n)) - done:
                script = self._engine.script
                char = script[t] if script else TEXT[((params.seed or 0) + i + t) % len(TEXT)]
                texts[i] += char
                reason = "length" if t == params.max_tokens - 1 else None
                if script and t == len(script) - 1:
                    reason = "stop"
                if t == self._engine.fail_after:
                    yield StepOutput(self._request_id, i, "", [], "error", "the KV cache is full")
                    done.add(i)
                    continue
                safe = len(texts[i])
                for stop in params.stop:
                    if stop in texts[i]:
                        safe, reason = texts[i].index(stop), "stop"
                        break
                    safe = min(safe, len(texts[i]) - _partial(texts[i], stop))
                delta, emitted[i] = texts[i][emitted[i] : safe], max(emitted[i], safe)
                yield self._output(i, prompt, char, delta, t + 1, reason, params.logprobs)
                if reason:
                    done.add(i)
            if len(done) == n:
                break
        self.is_closed = True
        self._engine.active.discard(self._request_id)

    def _output(
        self, i: int, prompt: list[int], char: str, delta: str, num: int, reason: str | None,
        k: int | None,
    ) -> StepOutput:  # fmt: skip
        token_id = ord(char) + OFFSET
        logprobs = None
        if k is not None:
            top = tuple((token_id + j, bytes([ord(char) + j]), -0.5 - j) for j in range(k))
            logprobs = [TokenLogprob(token_id, char.encode(), -0.5, top)]
        return StepOutput(
            self._request_id, i, delta, [token_id], reason,
            num_prompt_tokens=len(prompt), num_output_tokens=num, logprobs=logprobs,
        )  # fmt: skip


def _partial(text: str, stop: str) -> int:
    """Length of the longest end of `text` that starts `stop` (held back until decided)."""
    return max((k for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)


@asynccontextmanager
async def running_app(
    engine: FakeEngine | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeEngine, Starlette]]:
    """The gateway app on a FakeEngine, lifespan started and model loaded; an httpx client."""
    engine = engine or FakeEngine()
    app = create_app(
        replace(Settings(model=Path("/models/fake.gguf")), **settings), _loader(engine)
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        await wait_for_load(client)
        yield client, engine, app


async def wait_for_load(client: httpx.AsyncClient) -> httpx.Response:
    """/health once the model has loaded or failed to (bounded: a fake loads at once)."""
    for _ in range(500):
        health = await client.get("/health")
        if health.json()["status"] != "loading":
            return health
        await asyncio.sleep(0.01)
    raise AssertionError("the app was still loading after 5 s")


def _loader(engine: FakeEngine) -> Callable[..., FakeEngine]:
    return lambda settings, observer: engine
