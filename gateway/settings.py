"""Settings of one gateway process, from defaults, environment variables and flags.

Every setting has a flag (`--ctx-size`) and an environment variable (`LLM_GATEWAY_CTX_SIZE`);
a flag wins over the variable, which wins over the default. This is the only module that
reads the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from batching.config import EngineConfig
from gateway.jsonschema.limits import MAX_REPEAT, Limits

ENV_PREFIX = "LLM_GATEWAY_"
DEMO_JSON_STRING_MAX_CHARS = 32
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _origins(value: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in value.split(",") if origin.strip())


def _opt_str(value: str) -> str | None:
    return value or None


def _opt_path(value: str) -> Path | None:
    # An empty value means "not set": compose files pass ${LLM_GATEWAY_MODEL:-} through as is.
    return Path(value) if value else None


def _string_cap(value: str) -> int | None:
    if not value.strip():
        return None
    cap = int(value)
    if not 0 <= cap <= MAX_REPEAT:
        raise ValueError(f"must be 0 (no limit) to {MAX_REPEAT}")
    return cap


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1/0, true/false, yes/no or on/off")


def _int_from(low: int) -> Callable[[str], int]:
    """The parser of whole numbers `low` or more."""

    def parse(value: str) -> int:
        number = int(value)
        if number < low:
            raise ValueError(f"must be {low} or more")
        return number

    return parse


_at_least_one, _non_negative, _minus_one_or_more = _int_from(1), _int_from(0), _int_from(-1)


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _meta(parse: Callable[[str], Any], help: str, metavar: str = "") -> dict[str, Any]:
    return {"parse": parse, "help": help, "metavar": metavar}


@dataclass(frozen=True, slots=True)
class Settings:
    """How one gateway serves one model."""

    model: Path | None = field(
        default=None,
        metadata=_meta(
            _opt_path,
            "GGUF model file; without it (or empty), the built-in demo model (random weights)",
            "PATH",
        ),
    )
    host: str = field(default="127.0.0.1", metadata=_meta(str, "address to listen on"))
    port: int = field(default=8000, metadata=_meta(int, "port to listen on"))
    slots: int = field(
        default=8, metadata=_meta(int, "parallel sequences decoded together (llama.cpp seq ids)")
    )
    ctx_size: int = field(
        default=16384,
        metadata=_meta(
            int, "KV-cache cells of all slots: each slot holds ctx-size/slots unless --kv-unified"
        ),
    )
    kv_unified: bool = field(
        default=False,
        metadata=_meta(
            _flag, "one KV pool shared by all slots (longer requests; slower attention)", "0|1"
        ),
    )
    batch_size: int = field(
        default=1024, metadata=_meta(int, "a step's tokens (n_batch); see --short-queue")
    )
    split_prompts: bool = field(
        default=False,
        metadata=_meta(
            _flag,
            "let a new prompt fill a step's leftover budget (default: it starts in a step that"
            " can finish it, unless it is the step's only prompt)",
            "0|1",
        ),
    )
    prompts_first: bool = field(
        default=True,
        metadata=_meta(
            _flag,
            "run a step's finishing prompts in a llama_decode before its decode tokens, so"
            " first tokens do not wait for the decode pass",
            "0|1",
        ),
    )
    prompt_per_call: bool = field(
        default=True,
        metadata=_meta(
            _flag,
            "run each prompt a step finishes in a llama_decode of its own, shortest first,"
            " where that costs no extra pass over the weights",
            "0|1",
        ),
    )
    admit_late: bool = field(
        default=True,
        metadata=_meta(
            _flag,
            "let requests that arrive while a step's prompts compute join that step (into its"
            " leftover budget, or a budget of their own when nothing was left waiting)",
            "0|1",
        ),
    )
    short_queue: int = field(
        default=-1,
        metadata=_meta(
            _minus_one_or_more,
            "a step planned while at most N requests wait (stragglers, not a wave) may take"
            " twice --batch-size tokens; -1: never",
            "N",
        ),
    )
    shortest_first: bool = field(
        default=True,
        metadata=_meta(
            _flag,
            "admit the waiting request with the shortest prompt first, aged by its wait"
            " (0: arrival order)",
            "0|1",
        ),
    )
    overlap_output: bool = field(
        default=True,
        metadata=_meta(
            _flag,
            "hand a step's tokens to the HTTP side once the next llama_decode has started, so"
            " streaming them overlaps the GPU's work (0: at once)",
            "0|1",
        ),
    )
    ubatch_size: int = field(
        default=0,
        metadata=_meta(
            _non_negative,
            "most tokens per pass over the weights (n_ubatch); 0 = 512 or the batch size",
            "N",
        ),
    )
    n_gpu_layers: int = field(
        default=0, metadata=_meta(int, "layers offloaded to the GPU; -1 or 99 = all")
    )
    threads: int = field(
        default=0,
        metadata=_meta(
            int, "llama.cpp CPU threads; 0 = 4 when every layer is on the GPU, else all cores", "N"
        ),
    )
    sampler_threads: int = field(
        default=0,
        metadata=_meta(int, "threads that sample a step's rows; 0 = half the cores, 1 to 8", "N"),
    )
    api_key: str | None = field(
        default=None,
        metadata=_meta(
            _opt_str, "require 'Authorization: Bearer KEY' on /v1/* and /generate/", "KEY"
        ),
    )
    served_model_name: str | None = field(
        default=None,
        metadata=_meta(_opt_str, "model id in the API; default: the GGUF's file name", "NAME"),
    )
    chat_template: str | None = field(
        default=None,
        metadata=_meta(
            _opt_str,
            "'vicuna' or a jinja2 file; default: the GGUF's own template, else vicuna",
            "PATH|vicuna",
        ),
    )
    max_queue: int = field(
        default=256, metadata=_meta(int, "waiting requests beyond the slots before 429s", "N")
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            _origins, "comma-separated origins allowed by CORS ('*' for any)", "ORIGINS"
        ),
    )
    max_body_bytes: int = field(
        default=4 * 2**20, metadata=_meta(int, "largest request body accepted", "BYTES")
    )
    max_prompt_chars: int = field(
        default=1_000_000,
        metadata=_meta(
            _at_least_one, "longest prompt in characters (all prompts, all messages)", "N"
        ),
    )
    max_prompt_tokens: int = field(
        default=0,
        metadata=_meta(
            _non_negative, "longest prompt in tokens; 0 = the model's context only", "N"
        ),
    )
    prompt_threads: int = field(
        default=4,
        metadata=_meta(
            _at_least_one, "threads that render and tokenize prompts off the event loop", "N"
        ),
    )
    send_timeout: float = field(
        default=30.0,
        metadata=_meta(
            _seconds,
            "seconds a stream waits on a client that stopped reading before aborting; 0 = never",
            "SECONDS",
        ),
    )
    shutdown_grace: float = field(
        default=30.0,
        metadata=_meta(
            _seconds,
            "on SIGTERM: seconds running requests may take to finish before they are ended",
            "SECONDS",
        ),
    )
    shutdown_min: float = field(
        default=2.0,
        metadata=_meta(
            _seconds,
            "on SIGTERM: seconds to keep answering 503 at least, so that a load balancer's"
            " health check sees it before the port closes",
            "SECONDS",
        ),
    )
    log_level: str = field(
        default="info", metadata=_meta(_log_level, "one of " + ", ".join(LOG_LEVELS), "LEVEL")
    )
    json_string_max_chars: int | None = field(
        default=None,
        metadata=_meta(
            _string_cap,
            "longest JSON string a grammar (tools, response_format) lets the model write where "
            f"the schema sets no maxLength; 0 = no limit; default: {DEMO_JSON_STRING_MAX_CHARS} "
            "for the built-in demo model (random weights never close a string), else no limit",
            "N",
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by LLM_GATEWAY_* variables (of `os.environ` unless given)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = env_name(f.name)
            if name in environ:
                try:
                    values[f.name] = f.metadata["parse"](environ[name])
                except ValueError as e:
                    raise ValueError(f"{name}={environ[name]!r}: {_why(e)}") from e
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """The settings parsed by a parser that `add_arguments` filled."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @property
    def model_name(self) -> str:
        """The model id clients send and see."""
        if self.served_model_name:
            return self.served_model_name
        return self.model.stem if self.model is not None else "demo"

    def grammar_limits(self) -> Limits:
        """The bounds of every grammar this server builds."""
        cap = self.json_string_max_chars
        return Limits(max_string=cap or None)

    def engine_config(self) -> EngineConfig:
        """The engine's configuration; needs `model` set."""
        if self.model is None:
            raise ValueError("no model path")
        return EngineConfig(
            model_path=self.model,
            n_slots=self.slots,
            n_ctx=self.ctx_size,
            n_batch=self.batch_size,
            n_ubatch=min(self.ubatch_size or 512, self.batch_size),
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.threads or None,
            sampler_threads=self._sampler_threads(),
            max_queue=self.max_queue,
            kv_unified=self.kv_unified,
            split_prompts=self.split_prompts,
            prompts_first=self.prompts_first,
            prompt_per_call=self.prompt_per_call,
            admit_late=self.admit_late,
            shortest_first=self.shortest_first,
            short_queue=self.short_queue,
            overlap_output=self.overlap_output,
        )

    def _sampler_threads(self) -> int:
        """Asked for, or half the cores (1 to 8); never more than the cores: the pool's
        threads spin briefly, and spinning threads without a core of their own slow each
        other down. On the H200 host's fresh logits 8 threads brought top-p, top-k and
        penalty rows of a 64-row step under 1 ms, where 4 left penalties at 1.2 ms."""
        return min(self.sampler_threads or max(1, min(8, _cores() // 2)), _cores())


def _cores() -> int:
    return os.cpu_count() or 1


def env_name(setting: str) -> str:
    """The environment variable of one setting: ctx_size -> LLM_GATEWAY_CTX_SIZE."""
    return ENV_PREFIX + setting.upper()


def add_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    """One flag per setting, defaulting to `defaults` (the environment's values)."""
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        if isinstance(default, bool):
            shown = str(int(default))  # as the flag takes it: 1 or 0
        if f.name == "api_key" and default:
            shown = "(set)"  # never print a secret
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_cli_type(f.metadata["parse"]),
            default=default,
            metavar=f.metadata["metavar"] or None,
            help=f"{f.metadata['help']} [env {env_name(f.name)}; default: {shown}]".replace(
                "%", "%%"
            ),
        )


def _cli_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse: its own message ("must be 0 or more"), not "invalid _seconds value"."""
    if parse in (str, int):
        return parse

    def checked(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{value!r}: {_why(e)}") from None

    return checked


def _why(e: ValueError) -> str:
    """A parse error in the setting's words: int()'s and float()'s become "not a number"."""
    why = str(e)
    return "not a number" if why.startswith(("invalid literal", "could not convert")) else why
