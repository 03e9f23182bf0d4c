"""A bounded thread pool for the CPU work of requests, so that it never blocks the event loop.

Rendering a chat template and tokenizing a prompt take milliseconds, or seconds for a
multi-megabyte prompt; on the event loop they would stall /health and every other stream
for as long. llama.cpp's tokenizer releases the GIL, and Python work in a thread yields the
GIL to the loop every few milliseconds (sys.getswitchinterval), so the loop keeps answering.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Workers:
    """`num_threads` threads; work beyond them queues for the next free one."""

    def __init__(self, num_threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="prompt")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread; its exception is raised here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Let running work finish in the background; drop what has not started."""
        self._executor.shutdown(wait=False, cancel_futures=True)
