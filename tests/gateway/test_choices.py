"""Folding StepOutputs per choice: text, finish reasons, usage and logprob offsets."""

from __future__ import annotations

from batching.outputs import StepOutput, TokenLogprob
from gateway.choices import Tally, chat_logprobs, completion_logprobs


def out(index: int, text: str, num: int, reason: str | None = None, **kw: object) -> StepOutput:
    return StepOutput("r", index, text, [], reason, num_prompt_tokens=5, num_output_tokens=num,
                      **kw)  # type: ignore[arg-type]  # fmt: skip


def test_usage_counts_each_prompt_once_and_every_choices_tokens() -> None:
    tally = Tally(prompt_lens=[5, 7], n=2)
    for index, num in enumerate([3, 4, 1, 2]):
        tally.add(index, out(index % 2, "x", num, "length", num_cached_tokens=2 + index))
    usage = tally.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 10, 22)
    # Choice 0 of each prompt computed it; the others copied its cells.
    assert usage.prompt_tokens_details.cached_tokens == 2 + 4


def test_engine_errors_and_aborts_are_not_finish_reasons() -> None:
    tally = Tally([3], n=2)
    tally.add(0, out(0, "ok", 1, "stop"))
    tally.add(1, out(1, "", 1, "error", error="the KV cache is full"))
    assert tally.choices[0].api_finish_reason == "stop"
    assert tally.choices[1].api_finish_reason is None
    assert tally.error == "the KV cache is full"


def test_logprob_offsets_follow_the_token_texts() -> None:
    tally = Tally([1], n=1)
    pieces = [b"He", b"llo", b"\xe2\x82"]  # the last is half of a UTF-8 character
    for i, piece in enumerate(pieces):
        top = ((i, piece, -0.1), (99, b"?", -3.0))
        lp = TokenLogprob(i, piece, -0.1, top)
        tally.add(0, out(0, piece.decode(errors="ignore"), i + 1, logprobs=[lp]))
    legacy = completion_logprobs(tally.choices[0])
    assert legacy.tokens == ["He", "llo", "\ufffd"] and legacy.text_offset == [0, 2, 5]
    assert legacy.top_logprobs[0] == {"He": -0.1, "?": -3.0}
    assert completion_logprobs(tally.choices[0], start=2).text_offset == [5]
    chat = chat_logprobs(tally.choices[0]).content or []
    assert chat[2].bytes == [0xE2, 0x82] and chat[2].top_logprobs[1].token == "?"
