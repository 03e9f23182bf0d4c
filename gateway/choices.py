"""StepOutputs folded per choice, and the wire objects (logprobs, usage) built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from batching.outputs import StepOutput, TokenLogprob
from gateway.protocol import (
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionLogprobs,
    PromptTokensDetails,
    TopLogprob,
    Usage,
)

API_FINISH_REASONS = ("stop", "length")  # the engine's "error" and "abort" become API errors


@dataclass(slots=True)
class ChoiceState:
    """Everything one choice produced so far."""

    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text_offsets: list[int] = field(default_factory=list)  # of each logprob token in the text
    num_chars: int = 0
    finish_reason: str | None = None
    error: str | None = None
    num_output_tokens: int = 0
    num_cached_tokens: int = 0

    @property
    def api_finish_reason(self) -> str | None:
        return self.finish_reason if self.finish_reason in API_FINISH_REASONS else None


class Tally:
    """The choices of one request (n per prompt) and the usage they add up to."""

    def __init__(self, prompt_lens: list[int], n: int) -> None:
        self.prompt_lens = prompt_lens
        self.n = n
        self.choices = [ChoiceState(i) for i in range(len(prompt_lens) * n)]

    def add(self, index: int, out: StepOutput) -> ChoiceState:
        """Fold one output of choice `index` in."""
        choice = self.choices[index]
        choice.text.append(out.delta_text)
        for lp in out.logprobs or ():
            choice.text_offsets.append(choice.num_chars)
            choice.num_chars += len(token_text(lp.token))
            choice.logprobs.append(lp)
        choice.num_output_tokens = max(choice.num_output_tokens, out.num_output_tokens)
        choice.num_cached_tokens = max(choice.num_cached_tokens, out.num_cached_tokens)
        if out.finish_reason is not None:
            choice.finish_reason = out.finish_reason
            if out.finish_reason not in API_FINISH_REASONS:
                choice.error = out.error or f"the request ended early ({out.finish_reason})"
        return choice

    @property
    def error(self) -> str | None:
        """The first engine error of any choice."""
        return next((c.error for c in self.choices if c.error), None)

    def usage(self) -> Usage:
        """Prompt tokens count once per prompt however many choices share them (as OpenAI)."""
        prompt = sum(self.prompt_lens)
        completion = sum(c.num_output_tokens for c in self.choices)
        # The first choice of a prompt computed it; the others copy its KV cells.
        cached = sum(
            self.choices[p * self.n].num_cached_tokens for p in range(len(self.prompt_lens))
        )
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        )


def token_text(piece: bytes) -> str:
    """A token's text; a piece that is part of a UTF-8 character shows as U+FFFD."""
    return piece.decode("utf-8", errors="replace")


def completion_logprobs(choice: ChoiceState, start: int = 0) -> CompletionLogprobs:
    """The legacy completions format for the choice's logprob tokens from `start` on."""
    tokens = choice.logprobs[start:]
    return CompletionLogprobs(
        tokens=[token_text(lp.token) for lp in tokens],
        token_logprobs=[lp.logprob for lp in tokens],
        top_logprobs=[{token_text(t): v for _, t, v in lp.top} for lp in tokens],
        text_offset=choice.text_offsets[start:],
    )


def chat_logprobs(choice: ChoiceState, start: int = 0) -> ChatLogprobs:
    """The chat format (token, logprob, bytes, top_logprobs) from `start` on."""
    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=token_text(lp.token),
                logprob=lp.logprob,
                bytes=list(lp.token),
                top_logprobs=[
                    TopLogprob(token=token_text(t), logprob=v, bytes=list(t)) for _, t, v in lp.top
                ],
            )
            for lp in choice.logprobs[start:]
        ]
    )
