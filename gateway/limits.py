"""How big a request may be: prompt characters and tokens, and sequences per request.

Each check is a 400 naming the parameter, raised before the work it bounds: characters are
counted before tokenizing (so a multi-megabyte prompt is refused in microseconds), and a
request asking for more sequences than the server has slots and waiting places together is
refused outright: it could never run, so a 429 telling it to retry would be a lie.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import APIError


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The limits of one server; `max_prompt_tokens` 0 leaves only the context length."""

    max_prompt_chars: int
    max_prompt_tokens: int
    capacity: int  # slots + waiting places: the most sequences in the server at once

    def check_sequences(self, num_prompts: int, n: int) -> None:
        """Refuse `num_prompts` x `n` sequences if they can never all be in the server."""
        if num_prompts * n <= self.capacity:
            return
        message = (
            f"this request asks for {num_prompts * n} sequences ({num_prompts} prompts x n={n}) "
            f"but this server holds at most {self.capacity} at once"
        )
        raise APIError(400, message, param="n" if n > 1 else "prompt")

    def check_chars(self, num_chars: int, param: str) -> None:
        """Refuse prompts longer than `max_prompt_chars` characters in all."""
        if num_chars > self.max_prompt_chars:
            message = (
                f"the prompt has {num_chars} characters; "
                f"this server takes at most {self.max_prompt_chars} characters"
            )
            raise APIError(400, message, param=param, code="prompt_too_long")

    def check_tokens(self, num_tokens: int, param: str) -> None:
        """Refuse a prompt longer than `max_prompt_tokens` tokens (when set)."""
        if self.max_prompt_tokens and num_tokens > self.max_prompt_tokens:
            message = (
                f"the prompt has {num_tokens} tokens; "
                f"this server takes at most {self.max_prompt_tokens} tokens"
            )
            raise APIError(400, message, param=param, code="prompt_too_long")
