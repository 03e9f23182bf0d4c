"""`llm-gateway bench`: a streaming load generator for any OpenAI-compatible completions server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

# aiohttp rather than httpx: at 64 streams it parses thousands of SSE chunks a second with less
# Python work per chunk, so the client disturbs the server it shares the host with less, and
# TCPConnector(force_close=True) gives each request a fresh connection (llama-server drops
# keep-alive connections under load). Both libraries are installed on the GPU machine.
import aiohttp
from tqdm import tqdm

from gateway.bench_client import RequestResult, send_request
from gateway.bench_server import format_view, scrape, server_view
from gateway.bench_stats import format_table, summarize
from gateway.bench_workload import (
    PROMPT_FORMATS,
    WORKLOADS,
    RequestSpec,
    WorkloadConfig,
    build_requests,
    poisson_offsets,
)

Send = Callable[[RequestSpec], Awaitable[RequestResult]]
ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `llm-gateway bench`."""
    parser = argparse.ArgumentParser(
        prog="llm-gateway bench",
        description="Stream completion requests to an OpenAI-compatible server and report "
        "throughput and latency (TTFT, TPOT, ITL, e2e).",
    )
    add = parser.add_argument
    add("--base-url", default="http://127.0.0.1:8000", help="server root, without /v1")
    add("--model", default="default", help="model name sent in each request")
    add("--label", default="", help="name of this run in the report and the JSON")
    add("--workload", choices=WORKLOADS, default="fixed")
    add("--prompt-len", type=int, default=256, help="prompt tokens (fixed)")
    add(
        "--output-len",
        type=int,
        default=128,
        help="max_tokens (fixed, shared-prefix, conversations)",
    )
    add("--prompt-len-range", type=int, nargs=2, default=(64, 1024), metavar=("LO", "HI"))
    add("--output-len-range", type=int, nargs=2, default=(16, 256), metavar=("LO", "HI"))
    add(
        "--prefix-len",
        type=int,
        default=1000,
        help="shared prefix tokens (shared-prefix; conversations: the system prompt)",
    )
    add(
        "--suffix-len",
        type=int,
        default=32,
        help="distinct suffix tokens (shared-prefix; conversations: each user message)",
    )
    add(
        "--num-prefixes",
        type=int,
        default=1,
        help="distinct shared prefixes (shared-prefix, conversations)",
    )
    add("--turns", type=int, default=4, help="requests per conversation (conversations)")
    add("--prompt-format", choices=PROMPT_FORMATS, default="tokens")
    add("--concurrency", type=int, default=1, help="closed loop: clients in flight")
    add("--request-rate", type=float, default=None, help="open loop: Poisson arrivals per s")
    add("--num-requests", type=int, default=64, help="measured requests")
    add("--warmup", type=int, default=0, help="requests sent and discarded before measuring")
    add("--endpoint", choices=ENDPOINTS, default="completions", help="chat sends messages")
    add("--temperature", type=float, default=0.0)
    add("--top-p", type=float, default=None, help="sent only when given")
    add("--top-k", type=int, default=None, help="sent only when given (not an OpenAI field)")
    add("--min-p", type=float, default=None, help="sent only when given (not an OpenAI field)")
    add("--no-ignore-eos", dest="ignore_eos", action="store_false", help="let EOS end early")
    add("--timeout", type=float, default=300.0, help="seconds allowed for one request")
    add("--seed", type=int, default=0)
    add("--out", type=Path, default=None, help="write the JSON report here")
    add("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def make_payload(spec: RequestSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of one streaming completion (or chat completion) request."""
    payload: dict[str, Any] = {"model": args.model}
    if args.endpoint == "chat":
        text = spec.prompt if isinstance(spec.prompt, str) else " ".join(map(str, spec.prompt))
        payload["messages"] = [{"role": "user", "content": text}]
    else:
        payload["prompt"] = spec.prompt
    payload |= {
        "max_tokens": spec.max_tokens,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": args.ignore_eos,
    }
    for name in ("top_p", "top_k", "min_p"):
        if getattr(args, name) is not None:
            payload[name] = getattr(args, name)
    return payload


async def closed_loop(
    send: Send, specs: Sequence[RequestSpec], concurrency: int, on_done: Callable[[], Any]
) -> list[RequestResult]:
    """Keep `concurrency` requests in flight until every spec has been sent; the turns of a
    conversation go out one after another from one client."""
    results: list[RequestResult] = [RequestResult() for _ in specs]
    groups: list[list[int]] = []
    turns_of: dict[int, list[int]] = {}
    for index, spec in enumerate(specs):
        if spec.conversation < 0:
            groups.append([index])
        elif spec.conversation in turns_of:
            turns_of[spec.conversation].append(index)
        else:
            turns_of[spec.conversation] = [index]
            groups.append(turns_of[spec.conversation])
    queue = iter(groups)

    async def client() -> None:
        for group in queue:
            for index in group:
                results[index] = await send(specs[index])
                on_done()

    await asyncio.gather(*(client() for _ in range(max(1, min(concurrency, len(specs))))))
    return results


async def open_loop(
    send: Send, specs: Sequence[RequestSpec], offsets: Sequence[float], on_done: Callable[[], Any]
) -> list[RequestResult]:
    """Start each request at its arrival time, however many are still in flight."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []

    async def one(spec: RequestSpec) -> RequestResult:
        result = await send(spec)
        on_done()
        return result

    for spec, offset in zip(specs, offsets, strict=True):
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(spec)))
    return list(await asyncio.gather(*tasks))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Send the warmup and then the measured requests; return the JSON report."""
    workload = _workload(args)
    specs = build_requests(workload, args.warmup + args.num_requests)
    warmup, measured = specs[: args.warmup], specs[args.warmup :]
    url = args.base_url.rstrip("/") + ENDPOINTS[args.endpoint]
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    no_total = aiohttp.ClientTimeout(total=None)  # send_request applies --timeout itself
    async with aiohttp.ClientSession(connector=connector, timeout=no_total) as session:

        async def send(spec: RequestSpec) -> RequestResult:
            return await send_request(session, url, make_payload(spec, args), args.timeout)

        if warmup:
            await closed_loop(send, warmup, args.concurrency, lambda: None)
        before = await scrape(session, args.base_url)
        bar = tqdm(
            total=len(measured),
            desc=args.label or "bench",
            unit="req",
            file=sys.stderr,
            disable=args.no_progress,
        )
        start = time.perf_counter()
        if args.request_rate is not None:
            offsets = poisson_offsets(args.request_rate, len(measured), args.seed)
            results = await open_loop(send, measured, offsets, bar.update)
        else:
            results = await closed_loop(send, measured, args.concurrency, bar.update)
        wall_s = time.perf_counter() - start
        bar.close()
        view = server_view(before, await scrape(session, args.base_url)) if before else None
    summary = summarize(results, wall_s)
    return {
        "label": args.label,
        "config": _config(args, url),
        "summary": summary,
        "server_side": view,
    }


def main(argv: list[str]) -> int:
    """Run one benchmark; 0 when at least one request succeeded, else 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _workload(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.endpoint == "chat" and args.prompt_format != "text":
        parser.error("--endpoint chat sends words: add --prompt-format text")
    if args.num_requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--num-requests and --concurrency must be >= 1, --warmup >= 0")
    if args.request_rate is not None and args.request_rate <= 0:
        parser.error("--request-rate must be positive")
    if args.request_rate is not None and args.workload == "conversations":
        parser.error("--workload conversations runs in a closed loop: each turn waits for the last")
    report = asyncio.run(run(args))
    print(format_table(report["summary"], args.label), flush=True)
    if report["server_side"]:
        print(format_view(report["server_side"]), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["summary"]["num_ok"] > 0 else 1


def _workload(args: argparse.Namespace) -> WorkloadConfig:
    return WorkloadConfig(
        name=args.workload,
        prompt_len=args.prompt_len,
        output_len=args.output_len,
        prompt_len_range=tuple(args.prompt_len_range),
        output_len_range=tuple(args.output_len_range),
        prefix_len=args.prefix_len,
        suffix_len=args.suffix_len,
        num_prefixes=args.num_prefixes,
        turns=args.turns,
        prompt_format=args.prompt_format,
        seed=args.seed,
    )


def _config(args: argparse.Namespace, url: str) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["url"] = url
    config["mode"] = "open" if args.request_rate is not None else "closed"
    return config


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
