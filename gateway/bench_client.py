"""One streamed /v1/completions request, timed chunk by chunk; every failure becomes data."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

_MAX_ERROR_CHARS = 200


@dataclass(slots=True)
class RequestResult:
    """Timings (seconds) and token counts of one request; `error` is None when it succeeded."""

    max_tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    num_prompt_tokens: int = 0
    num_completion_tokens: int = 0
    error: str | None = None

    @property
    def is_ok(self) -> bool:
        """Whether the request streamed to [DONE] with a usage report."""
        return self.error is None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first, or None with fewer than two tokens."""
        if self.num_completion_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.num_completion_tokens - 1)


class SSEDecoder:
    """Incremental server-sent-events parser: bytes in, complete `data` payloads out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the data of every event completed by them."""
        self._buffer += chunk
        events: list[str] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append((value[1:] if value.startswith(b" ") else value).decode())
            # Comments (":" pings) and the event/id/retry fields carry nothing we time.
        return events

    def close(self) -> list[str]:
        """Flush an event left unterminated at the end of the stream."""
        return self.feed(b"\n\n")


async def send_request(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], timeout: float
) -> RequestResult:
    """POST one streaming request and time it; never raises."""
    result = RequestResult(max_tokens=int(payload.get("max_tokens", 0)))
    try:
        async with asyncio.timeout(timeout):
            await _stream(session, url, payload, result)
    except TimeoutError:
        result.error = f"timeout after {timeout:g} s"
    except aiohttp.ClientResponseError as exc:
        result.error = f"HTTP {exc.status}: {exc.message}"
    except aiohttp.ClientError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    except (ValueError, KeyError, TypeError) as exc:
        result.error = f"malformed SSE: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a load generator reports, it does not crash
        result.error = f"{type(exc).__name__}: {exc}"
    if result.error is not None:
        result.error = result.error[:_MAX_ERROR_CHARS]
    return result


async def _stream(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], result: RequestResult
) -> None:
    start = time.perf_counter()
    async with session.post(url, json=payload) as response:
        if response.status != 200:
            body = (await response.text(errors="replace")).strip().replace("\n", " ")
            result.error = f"HTTP {response.status}: {body}"
            return
        decoder = SSEDecoder()
        timer = _StreamTimer(start)
        async for chunk in response.content.iter_any():
            if timer.consume(decoder.feed(chunk), time.perf_counter()):
                break
        else:
            timer.consume(decoder.close(), time.perf_counter())
        result.e2e = time.perf_counter() - start
    timer.finish(result)


class _StreamTimer:
    """Folds the events of one stream into content timestamps, usage and an outcome."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.content_times: list[float] = []
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.is_done = False

    def consume(self, events: list[str], now: float) -> bool:
        """Take the events that arrived at `now`; True once the stream is over."""
        for data in events:
            if data == "[DONE]":
                self.is_done = True
                return True
            event = json.loads(data)
            if not isinstance(event, dict):
                raise TypeError(f"event is {type(event).__name__}, not an object")
            if "error" in event:
                self.error = f"stream error: {_error_text(event['error'])}"
                return True
            if isinstance(event.get("usage"), dict):
                self.usage = event["usage"]
            if _has_text(event):
                self.content_times.append(now)
        return False

    def finish(self, result: RequestResult) -> None:
        """Write TTFT, ITL, token counts or the error into `result`."""
        usage = self.usage or {}
        if self.error is not None:
            result.error = self.error
        elif not self.is_done:
            result.error = "stream ended before [DONE]"
        elif not isinstance(usage.get("completion_tokens"), int):
            result.error = "no usage"
        elif not self.content_times:
            result.error = "no content chunks"
        else:
            times = self.content_times
            result.ttft = times[0] - self.start
            result.itl = [later - earlier for earlier, later in itertools.pairwise(times)]
            result.num_completion_tokens = usage["completion_tokens"]
            prompt_tokens = usage.get("prompt_tokens")
            result.num_prompt_tokens = prompt_tokens if isinstance(prompt_tokens, int) else 0


def _has_text(event: dict[str, Any]) -> bool:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    text = choice.get("text")
    if text is None and isinstance(choice.get("delta"), dict):
        text = choice["delta"].get("content")
    return isinstance(text, str) and text != ""


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)
