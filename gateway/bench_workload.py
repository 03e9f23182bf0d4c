"""Synthetic workloads for the load generator: seeded random prompts and Poisson arrivals."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# Token ids are drawn from a range that sits inside a 32k LLaMA vocabulary and clear of its
# control and byte-fallback tokens (ids < 259), so every id is an ordinary text piece.
TOKEN_LOW = 1000
TOKEN_HIGH = 30000
WORKLOADS = ("fixed", "mixed", "lognormal", "shared-prefix", "conversations")
# lognormal: chat-like long tails (median prompt 200, answer 150 tokens), clipped so that a
# prompt and its answer fit the 1,280 cells a slot has in the GPU benchmark
LOGNORMAL_PROMPT = (200.0, 0.8, 16, 1000)  # median, sigma, low, high
LOGNORMAL_OUTPUT = (150.0, 0.5, 8, 512)
LOGNORMAL_MAX_TOTAL = 1270
PROMPT_FORMATS = ("tokens", "text")

# Text prompts map each drawn id onto a word; the exact token count then depends on the server's
# tokenizer, which is why token-id prompts are the default.
_WORD_TEXT = (
    "river stone cloud paper window garden silver market engine forest signal candle harbor "
    "ladder orange pocket rabbit saddle thunder velvet whistle yellow anchor basket cotton "
    "desert feather glacier hammer island jacket kettle lemon marble needle ocean pepper "
    "quartz ribbon shadow timber umbrella valley wagon zebra bridge castle dragon empire "
    "falcon gravel hollow ivory jungle kingdom lantern meadow nickel orchard planet"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """How to draw prompts and output lengths for one benchmark run."""

    name: str = "fixed"
    prompt_len: int = 256
    output_len: int = 128
    prompt_len_range: tuple[int, int] = (64, 1024)
    output_len_range: tuple[int, int] = (16, 256)
    prefix_len: int = 1000
    suffix_len: int = 32
    num_prefixes: int = 1  # shared-prefix: distinct prefixes (system prompts), drawn per request
    turns: int = 4  # conversations: requests per conversation
    prompt_format: str = "tokens"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in WORKLOADS:
            raise ValueError(f"unknown workload {self.name!r}; choose from {WORKLOADS}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt format {self.prompt_format!r}")
        for lo, hi in (self.prompt_len_range, self.output_len_range):
            if not 1 <= lo <= hi:
                raise ValueError(f"bad length range {lo}..{hi}")
        if min(self.prompt_len, self.output_len, self.prefix_len, self.suffix_len) < 1:
            raise ValueError("lengths must be positive")
        if self.num_prefixes < 1:
            raise ValueError("num_prefixes must be positive")
        if self.turns < 1:
            raise ValueError("turns must be positive")


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send: its prompt (token ids or text) and its output length."""

    prompt: list[int] | str
    num_prompt_tokens: int
    max_tokens: int
    conversation: int = -1  # conversations: the turns of one go out one after another


def build_requests(config: WorkloadConfig, count: int) -> list[RequestSpec]:
    """Draw `count` requests; the same config always gives the same requests."""
    rng = random.Random(config.seed)
    is_shared = config.name in ("shared-prefix", "conversations")
    prefixes = [
        _draw_ids(rng, config.prefix_len) for _ in range(config.num_prefixes if is_shared else 0)
    ]
    if config.name == "conversations":
        return _conversations(rng, config, count, prefixes)
    specs = []
    for _ in range(count):
        if config.name == "fixed":
            ids = _draw_ids(rng, config.prompt_len)
            max_tokens = config.output_len
        elif config.name == "mixed":
            ids = _draw_ids(rng, rng.randint(*config.prompt_len_range))
            max_tokens = rng.randint(*config.output_len_range)
        elif config.name == "lognormal":
            ids = _draw_ids(rng, _lognormal(rng, *LOGNORMAL_PROMPT))
            max_tokens = min(_lognormal(rng, *LOGNORMAL_OUTPUT), LOGNORMAL_MAX_TOTAL - len(ids))
        else:
            # one prefix draws nothing more, so its requests stay those of earlier versions
            k = rng.randrange(len(prefixes)) if len(prefixes) > 1 else 0
            ids = prefixes[k] + _draw_ids(rng, config.suffix_len)
            max_tokens = config.output_len
        specs.append(_spec(ids, max_tokens, config.prompt_format))
    return specs


def _conversations(
    rng: random.Random, config: WorkloadConfig, count: int, prefixes: list[list[int]]
) -> list[RequestSpec]:
    """Chats that grow: each turn's prompt is the last one, a stand-in for its answer
    (`output_len` drawn tokens) and a new user message (`suffix_len`), after a system prompt
    (`prefix_len`, one of `num_prefixes`). The server's real answer differs from the stand-in,
    so what a prompt cache can reuse is the history up to the last turn's prompt; every server
    gets the same prompts."""
    specs: list[RequestSpec] = []
    conversation = 0
    while len(specs) < count:
        k = rng.randrange(len(prefixes)) if len(prefixes) > 1 else 0
        history = prefixes[k]
        for _ in range(min(config.turns, count - len(specs))):
            ids = history + _draw_ids(rng, config.suffix_len)
            specs.append(_spec(ids, config.output_len, config.prompt_format, conversation))
            history = ids + _draw_ids(rng, config.output_len)
        conversation += 1
    return specs


def _spec(
    ids: list[int], max_tokens: int, prompt_format: str, conversation: int = -1
) -> RequestSpec:
    prompt: list[int] | str = ids if prompt_format == "tokens" else _to_text(ids)
    return RequestSpec(prompt, len(ids), max_tokens, conversation)


def poisson_offsets(rate: float, count: int, seed: int) -> list[float]:
    """Start times (seconds from 0) of `count` arrivals of a Poisson process with `rate` per s."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    rng = random.Random(seed)
    offsets = []
    now = 0.0
    for _ in range(count):
        offsets.append(now)
        now += rng.expovariate(rate)
    return offsets


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))


def _draw_ids(rng: random.Random, length: int) -> list[int]:
    return [rng.randrange(TOKEN_LOW, TOKEN_HIGH) for _ in range(length)]


def _to_text(ids: list[int]) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in ids)
