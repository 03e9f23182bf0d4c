"""A Run's outputs as the JSON of OpenAI stream chunks; sse.py frames them as events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from gateway.chat_output import ChoiceOutput
from gateway.choices import chat_logprobs, completion_logprobs
from gateway.errors import APIError
from gateway.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    Usage,
)
from gateway.run import Run


class ChunkStream:
    """The chunks of one streamed response; closing it aborts whatever its Run still runs.

    Closing works even when the chunks were never iterated (the client left before the
    first byte): a generator that never started cannot clean up after itself. Its run's
    request id is the response's id (the x-request-id header).
    """

    def __init__(self, chunks: AsyncGenerator[str, None], run: Run) -> None:
        self._chunks = chunks
        self.run = run

    @property
    def request_id(self) -> str:
        return self.run.request_id

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._chunks

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self.run.close()


def completion_chunks(
    run: Run, model: str, req: CompletionRequest, echo: list[str] | None
) -> ChunkStream:
    """The stream of a completion request."""
    return ChunkStream(_completion_chunks(run, model, req, echo), run)


def chat_chunks(
    run: Run,
    model: str,
    req: ChatCompletionRequest,
    outputs: list[ChoiceOutput],
    fingerprint: str,
) -> ChunkStream:
    """The stream of a chat completion request; `outputs` turns each choice's text into deltas."""
    return ChunkStream(_chat_chunks(run, model, req, outputs, fingerprint), run)


async def _completion_chunks(
    run: Run, model: str, req: CompletionRequest, echo: list[str] | None
) -> AsyncGenerator[str, None]:
    """Text deltas per choice (the echoed prompt first), then the error or usage if any."""
    created = int(time.time())

    def dump(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        chunk = CompletionResponse(
            id=run.request_id, created=created, model=model, choices=choices, usage=usage
        )
        return chunk.model_dump_json()

    for choice in run.tally.choices:
        if echo:
            yield dump([CompletionChoice(index=choice.index, text=echo[choice.index // req.n])])
    async with aclosing(run.outputs()) as outputs:
        async for index, out in outputs:
            choice = run.tally.choices[index]
            logprobs = None
            if req.logprobs is not None and out.logprobs:
                logprobs = completion_logprobs(choice, len(choice.logprobs) - len(out.logprobs))
            reason = choice.api_finish_reason if out.finish_reason else None
            if out.delta_text or logprobs or reason:
                item = CompletionChoice(
                    index=index, text=out.delta_text, logprobs=logprobs, finish_reason=reason
                )
                yield dump([item])
    for tail in _tail(run, req.include_usage, lambda usage: dump([], usage)):
        yield tail


async def _chat_chunks(
    run: Run,
    model: str,
    req: ChatCompletionRequest,
    outputs: list[ChoiceOutput],
    fingerprint: str,
) -> AsyncGenerator[str, None]:
    """The role delta of every choice first, content or tool-call deltas, each choice's
    finish_reason; `outputs` turns each choice's text into deltas."""
    created = int(time.time())

    def dump(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=run.request_id, created=created, model=model, system_fingerprint=fingerprint,
            choices=choices, usage=usage,
        )  # fmt: skip
        # with include_usage every chunk carries "usage" (null until the last), as OpenAI's
        return chunk.model_dump_json(exclude=None if req.include_usage else {"usage"})

    for choice in run.tally.choices:
        role = DeltaMessage(role="assistant", content="")
        yield dump([ChatChunkChoice(index=choice.index, delta=role)])
    problems = []
    async with aclosing(run.outputs()) as engine_outputs:
        async for index, out in engine_outputs:
            choice, output = run.tally.choices[index], outputs[index]
            logprobs = None
            if req.logprobs and out.logprobs:
                logprobs = chat_logprobs(choice, len(choice.logprobs) - len(out.logprobs))
            deltas = output.feed(out.delta_text)
            if logprobs and not deltas:
                deltas = [DeltaMessage()]
            for i, delta in enumerate(deltas):
                item = ChatChunkChoice(
                    index=index, delta=delta, logprobs=logprobs if i == 0 else None
                )
                yield dump([item])
            if out.finish_reason and choice.api_finish_reason:
                reason = output.finish_reason(choice.api_finish_reason)
                if reason != "length":  # a complete answer: check what the grammar could not
                    problems.append(output.problem())
                end = ChatChunkChoice(index=index, delta=DeltaMessage(), finish_reason=reason)
                yield dump([end])
    for problem in problems:
        if problem:
            error = APIError(500, problem, code="schema_validation_failed")
            yield json.dumps(error.envelope())
    for tail in _tail(run, req.include_usage, lambda usage: dump([], usage)):
        yield tail


def _tail(run: Run, include_usage: bool, usage_chunk: Callable[[Usage], str]) -> list[str]:
    """After the last delta: an error event if the engine failed, then the usage chunk."""
    tail = []
    error = run.error()
    if error is not None:
        tail.append(json.dumps(error.envelope()))
    if include_usage:
        tail.append(usage_chunk(run.tally.usage()))
    return tail
