"""One API request inside the engine: one engine request per prompt, outputs in order."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator

from batching.engine import EngineUnavailableError, QueueFullError
from batching.outputs import StepOutput
from batching.params import ParamError, SamplingParams
from gateway.backend import Backend, OutputStream
from gateway.choices import Tally
from gateway.errors import CLIENT_CLOSED, APIError
from gateway.metrics import RequestTrace

log = logging.getLogger(__name__)


class Run:
    """The engine requests of one API request, its metrics trace and its tally of choices."""

    def __init__(
        self, request_id: str, streams: list[OutputStream], trace: RequestTrace, tally: Tally
    ) -> None:
        self.request_id = request_id
        self.tally = tally
        self._streams = streams
        self._trace = trace

    @classmethod
    async def start(
        cls,
        engine: Backend,
        trace: RequestTrace,
        request_id: str,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int,
    ) -> Run:
        """Submit every prompt (n choices each); all or none: a refusal closes the others."""
        streams: list[OutputStream] = []
        try:
            for p, ids in enumerate(prompts):
                sub_id = request_id if len(prompts) == 1 else f"{request_id}-{p}"
                streams.append(engine.submit(sub_id, ids, params, n))
        except (QueueFullError, ParamError, EngineUnavailableError) as e:
            for stream in streams:
                await stream.aclose()
            if isinstance(e, ParamError):
                raise APIError.from_param_error(e) from e
            if isinstance(e, EngineUnavailableError):
                raise APIError(
                    503, str(e), code="engine_unavailable", headers={"Retry-After": "5"}
                ) from e
            retry_after = str(max(1, math.ceil(e.retry_after_s)))
            headers = {"Retry-After": retry_after}
            raise APIError(429, str(e), code="queue_full", headers=headers) from e
        return cls(request_id, streams, trace, Tally([len(ids) for ids in prompts], n))

    async def outputs(self) -> AsyncGenerator[tuple[int, StepOutput], None]:
        """(choice index, output) in arrival order per prompt; closing early aborts the rest."""
        status = 200
        try:
            for p, stream in enumerate(self._streams):
                async for out in stream:
                    self._trace.on_output(out)
                    index = p * self.tally.n + out.index
                    self.tally.add(index, out)
                    yield index, out
        except (asyncio.CancelledError, GeneratorExit):
            status = CLIENT_CLOSED
            raise
        finally:
            for stream in self._streams:
                await stream.aclose()
            error = self.error()
            if error is not None:
                log.warning("request %s ended early: %s", self.request_id, error.message)
                status = error.status if status == 200 else status
            self._trace.finish(status)

    async def close(self) -> None:
        """Abort every choice still running and give its capacity back (idempotent)."""
        for stream in self._streams:
            await stream.aclose()

    async def collect(self) -> Tally:
        """Wait for every choice to end; an engine error becomes a 500, a shutdown a 503."""
        async for _ in self.outputs():
            pass
        error = self.error()
        if error is not None:
            raise error
        return self.tally

    def error(self) -> APIError | None:
        """Why a choice ended early: the engine failed (500) or the server stops (503)."""
        if not self.tally.error:
            return None
        if any(c.finish_reason == "abort" for c in self.tally.choices):
            headers = {"Retry-After": "5"}
            return APIError(
                503, self.tally.error, code="server_shutting_down", headers=headers, is_counted=True
            )
        return APIError(500, self.tally.error, code="engine_error", is_counted=True)
