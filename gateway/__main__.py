"""The `llm-gateway` command: serve, demo-model, bench."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from gateway.settings import DEMO_JSON_STRING_MAX_CHARS, Settings, add_arguments

log = logging.getLogger("gateway")


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    """The command line; `defaults` carries the LLM_GATEWAY_* environment's values."""
    parser = argparse.ArgumentParser(
        prog="llm-gateway", description="OpenAI-compatible server for GGUF models."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a GGUF model (the built-in demo model without --model)",
        description="Serve the OpenAI API. Each flag can also be set by its env variable.",
    )
    add_arguments(serve, defaults)
    demo = commands.add_parser(
        "demo-model",
        help="write a random-weight LLaMA GGUF (for tests and benchmarks)",
        description="Write a random-weight LLaMA GGUF; its text is gibberish.",
    )
    demo.add_argument("--size", choices=("tiny", "7b"), default="tiny")
    demo.add_argument("--quantize", metavar="FTYPE", help="e.g. Q4_K_M (default: F16)")
    demo.add_argument("--vocab", type=Path, metavar="GGUF", help="copy this GGUF's tokenizer")
    demo.add_argument("--out", type=Path, metavar="PATH", help="default: ./demo-SIZE.gguf")
    demo.add_argument("--seed", type=int, default=0)
    commands.add_parser("bench", help="benchmark a running server (see: llm-gateway bench -h)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `llm-gateway` and `python -m gateway`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # Every later argument belongs to the benchmark's own parser.
        from gateway.bench import main as bench_main  # written alongside; import on use

        return bench_main(argv[1:])
    try:
        defaults = Settings.from_env()
    except ValueError as e:
        print(f"llm-gateway: {e}", file=sys.stderr)
        return 2
    args = build_parser(defaults).parse_args(argv)
    if args.command == "demo-model":
        return _demo_model(args)
    return serve(Settings.from_args(args))


def serve(settings: Settings) -> int:
    """Run the server until interrupted."""
    import uvicorn

    from gateway.app import create_app
    from gateway.server import GatewayServer

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.model is None:
        from batching.demo_model import ensure_demo_model

        cap = settings.json_string_max_chars
        settings = replace(
            settings,
            model=ensure_demo_model(),
            json_string_max_chars=DEMO_JSON_STRING_MAX_CHARS if cap is None else cap,
        )
    problem = _check_files(settings)
    if problem:
        log.error(problem)
        return 2
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,  # after the drain: for connections that still linger
    )
    server = GatewayServer(
        config, app.state.gateway, settings.shutdown_grace, settings.shutdown_min
    )
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once the drain is done
        return 128 + signal.SIGINT  # quietly, as a shell reports an interrupted command
    return 0


def _check_files(settings: Settings) -> str | None:
    if settings.model is not None and not settings.model.is_file():
        return f"no model file at {settings.model}"
    template = settings.chat_template
    if template is not None and template != "vicuna" and not Path(template).is_file():
        return f"--chat-template: {template} is neither 'vicuna' nor a file"
    return None


def _demo_model(args: argparse.Namespace) -> int:
    from batching.demo_model import write_demo_model

    suffix = f"-{args.quantize.lower()}" if args.quantize else ""
    out = args.out or Path(f"demo-{args.size}{suffix}.gguf")
    path = write_demo_model(out, args.size, args.quantize, args.vocab, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
