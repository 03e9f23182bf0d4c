"""Per-request sampling and stopping parameters."""

from __future__ import annotations

from dataclasses import dataclass, field


class ParamError(ValueError):
    """A sampling parameter is out of range; `param` names it for the API's error envelope."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one sequence picks its tokens and when it stops. Checked on construction."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    grammar: str | None = None  # GBNF, root rule "root"
    logprobs: int | None = None  # number of top alternatives to report per token; None = off

    def __post_init__(self) -> None:
        _check(self.max_tokens >= 1, "max_tokens", "max_tokens must be at least 1")
        _check(0.0 <= self.temperature <= 2.0, "temperature", "temperature must be in [0, 2]")
        _check(0.0 < self.top_p <= 1.0, "top_p", "top_p must be in (0, 1]")
        _check(self.top_k >= 0, "top_k", "top_k must be 0 (disabled) or positive")
        _check(0.0 <= self.min_p <= 1.0, "min_p", "min_p must be in [0, 1]")
        _check(
            -2.0 <= self.presence_penalty <= 2.0,
            "presence_penalty",
            "presence_penalty must be in [-2, 2]",
        )
        _check(
            -2.0 <= self.frequency_penalty <= 2.0,
            "frequency_penalty",
            "frequency_penalty must be in [-2, 2]",
        )
        _check(
            0.0 < self.repetition_penalty <= 2.0,
            "repetition_penalty",
            "repetition_penalty must be in (0, 2]",
        )
        _check(
            all(-100.0 <= v <= 100.0 for v in self.logit_bias.values()),
            "logit_bias",
            "logit_bias values must be in [-100, 100]",
        )
        _check(
            len(self.stop) <= 16 and all(self.stop),
            "stop",
            "stop takes at most 16 non-empty strings",
        )
        _check(
            self.logprobs is None or 0 <= self.logprobs <= 20,
            "logprobs",
            "logprobs must be in [0, 20]",
        )

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return (
            self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.repetition_penalty != 1.0
        )


def _check(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise ParamError(param, message)
