"""The asyncio front door of the engine: one engine thread, per-request output streams."""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from batching.config import EngineConfig
from batching.engine import (
    Engine,
    EngineUnavailableError,
    QueueFullError,
    StepObserver,
)
from batching.info import EngineStats, ModelInfo
from batching.outputs import StepOutput
from batching.params import SamplingParams

logger = logging.getLogger("batching.engine")


class RequestStream:
    """The outputs of one request's choices, in order; closing it early aborts the request.

    Two counts: `_running` choices hold capacity until the engine reports their end (or the
    stream is closed, which gives it back at once); `_remaining` ends are still to be read.
    """

    def __init__(self, engine: AsyncEngine, request_id: str, n: int) -> None:
        self._engine = engine
        self.request_id = request_id
        self._queue: asyncio.Queue[StepOutput] = asyncio.Queue()
        self._remaining = n
        self._running = set(range(n))

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self

    async def __anext__(self) -> StepOutput:
        if self._remaining == 0:
            raise StopAsyncIteration
        try:
            out = await self._queue.get()
        except BaseException:  # cancelled: the client went away
            await self.aclose()
            raise
        if out.finish_reason is not None:
            self._remaining -= 1
        return out

    async def aclose(self) -> None:
        """Stop listening; an unfinished request is aborted and its capacity freed now."""
        self._remaining = 0
        if self._running:
            self._engine._release(self, abort=True)

    def _end(self, out: StepOutput) -> None:
        """Queue an output (on the event loop); a choice's last one gives its place back."""
        if out.finish_reason is not None and out.index in self._running:
            self._running.discard(out.index)
            self._engine._release(self, abort=False, num_seqs=1)
        self._queue.put_nowait(out)


class AsyncEngine:
    """Runs the Engine on its own thread; asyncio code submits, aborts and awaits outputs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.model: ModelInfo = engine.runner.info
        self._max_queue = engine.config.max_queue
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}
        self._num_seqs = 0  # sequences submitted and not finished, counted on the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stats = engine.stats()
        self._stopping = False  # a stop command arrived (it may come in mid-step)
        self.is_ready = False

    @classmethod
    def load(cls, config: EngineConfig, observer: StepObserver | None = None) -> AsyncEngine:
        """Load the model (blocking: seconds for a 7B model) and build the engine."""
        from batching.runner import LlamaRunner

        return cls(Engine(LlamaRunner(config), config, observer))

    def start(self) -> None:
        """Start the engine thread; call from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        self.is_ready = True

    def shutdown(self) -> None:
        """Stop the engine thread and free llama.cpp's memory."""
        self.is_ready = False
        if self._thread is not None:
            self._commands.put(("stop", None))
            self._thread.join(timeout=30)
            if self._thread.is_alive():  # still in a step: freeing its memory would crash it
                logger.error("the engine thread did not stop within 30 s; not freeing it")
                return
            self._thread = None
        self._engine.close()

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        return self._engine.runner.tokenize(text, add_bos, parse_special)

    def detokenize(self, ids: list[int]) -> str:
        pieces = self._engine.runner.pieces
        return b"".join(pieces[t] for t in ids).decode("utf-8", errors="replace")

    def compile_grammar(self, gbnf: str) -> None:
        """Parse a grammar into the runner's cache (slow for a large one: call it off the event
        loop); the sequences that use it later only clone the parsed grammar."""
        self._engine.runner.make_grammar(gbnf).close()

    def token_bytes(self, token_id: int) -> bytes:
        return self._engine.runner.pieces[token_id]

    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int = 1,
    ) -> RequestStream:
        """Queue a request; iterate the result for its outputs (QueueFullError when full)."""
        if not self.is_ready:
            raise EngineUnavailableError("the engine is not running; try again later")
        slots = self.model.n_slots
        if self._num_seqs + n > slots + self._max_queue:
            waiting = max(self._num_seqs - slots, 0)
            raise QueueFullError(retry_after_s=float(min(60, 1 + math.ceil(waiting / slots))))
        seqs = self._engine.new_sequences(request_id, prompt_ids, params, n)
        stream = RequestStream(self, request_id, n)
        self._streams[request_id] = stream
        self._num_seqs += n
        self._commands.put(("add", seqs))
        return stream

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def abort_all(self, error: str) -> None:
        """End every open request now with finish_reason "abort" and `error`; refuse new ones.

        For a server that stops: each client reads an explicit end instead of waiting for
        outputs that will never come. Call on the event loop.
        """
        self.is_ready = False
        self._end_all("abort", error)

    def stats(self) -> EngineStats:
        return self._stats

    def _release(self, stream: RequestStream, abort: bool, num_seqs: int = 0) -> None:
        """Give back `num_seqs` places, plus those of the choices still running if `abort`.

        The count is the event loop's own: a client that leaves frees its places at once,
        without waiting for the engine thread to step and report the abort.
        """
        if abort:
            num_seqs += len(stream._running)
            stream._running.clear()
            self.abort(stream.request_id)
        self._num_seqs = max(self._num_seqs - num_seqs, 0)
        if not stream._running and self._streams.get(stream.request_id) is stream:
            del self._streams[stream.request_id]

    def _end_all(self, finish_reason: str, error: str) -> None:
        for stream in list(self._streams.values()):
            running = sorted(stream._running)
            self._release(stream, abort=True)
            for index in running:
                out = StepOutput(stream.request_id, index, "", [], finish_reason, error)
                stream._queue.put_nowait(out)

    # -- engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._handle_commands(block=not self._engine.has_work):
                if self._engine.has_work:
                    self._publish(self._engine.step(emit=self._publish, poll=self._poll))
                self._stats = self._engine.stats()
        except Exception:
            logger.exception("the engine thread failed; the server stops taking requests")
            self.is_ready = False
            self._call_soon(self._fail_all)

    def _poll(self) -> None:
        """Take the requests and aborts sent since the step began (Engine.step, mid-step)."""
        self._stopping = not self._handle_commands(block=False)

    def _handle_commands(self, block: bool) -> bool:
        if self._stopping:
            return False
        try:
            cmd = self._commands.get(block=block)
        except queue.Empty:
            return True
        while True:
            kind, arg = cmd
            if kind == "stop":
                return False
            if kind == "add":
                self._engine.add(arg)
            else:
                self._engine.abort(arg)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
        return True  # _run refreshes the stats after this and the step that follows

    def _publish(self, outputs: list[StepOutput]) -> None:
        if outputs:
            self._call_soon(self._deliver, outputs)

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is not None:  # a closed stream gave its places back already
                stream._end(out)

    def _fail_all(self) -> None:
        self._end_all("error", "the engine stopped unexpectedly")
