"""Prompts to token ids.

A completion prompt is tokenized as llama-server does: special-token strings in it (`</s>`)
become control tokens. A chat prompt is split at the special strings that the TEMPLATE wrote;
each plain segment, client text included, is tokenized without parsing special tokens. For
SentencePiece vocabularies llama.cpp starts every segment after a control token with a space
prefix either way, so a chat prompt gets exactly the ids of a completion request that sends
the same rendered text, unless a client typed a special string itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.backend import Backend
from gateway.templates import RenderedPrompt


class PromptTokenizer:
    """Tokenizes prompts with one engine's vocabulary; remembers which strings are special."""

    def __init__(self, engine: Backend) -> None:
        self._engine = engine
        self._special_ids: dict[str, int | None] = {}

    def text(self, text: str) -> list[int]:
        """A completion prompt: BOS as the model wants it, special tokens parsed.

        A prompt that starts with the BOS text (as a rendered chat template often does) keeps
        one BOS, not two.
        """
        model = self._engine.model
        ids = self._engine.tokenize(text, model.add_bos, True)
        return ids[1:] if model.add_bos and ids[:2] == [model.bos_id, model.bos_id] else ids

    def chat(self, prompt: RenderedPrompt) -> list[int]:
        """A rendered chat prompt; text that clients wrote is never parsed for special tokens."""
        model = self._engine.model
        specials = {s: i for s in prompt.specials if (i := self.special_id(s)) is not None}
        pieces = [piece for piece in _split(prompt, specials) if piece != ""]
        # A template that writes bos_token itself gets no second BOS.
        ids = [model.bos_id] if model.add_bos and pieces[:1] != [model.bos_id] else []
        for piece in pieces:
            if isinstance(piece, int):
                ids.append(piece)
            else:
                ids += self._engine.tokenize(piece, False, False)
        return ids

    def special_id(self, text: str) -> int | None:
        """The id of `text` if the vocabulary has it as one special (control) token."""
        if text not in self._special_ids:
            parsed = self._engine.tokenize(text, False, True)
            is_special = len(parsed) == 1 and parsed != self._engine.tokenize(text, False, False)
            self._special_ids[text] = parsed[0] if is_special else None
        return self._special_ids[text]


def _split(prompt: RenderedPrompt, specials: dict[str, int]) -> Iterator[str | int]:
    """Plain text and special ids, splitting only at specials outside the client spans."""
    text = prompt.text
    if not specials:
        yield text
        return
    pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    pos = 0
    for start, end in _template_regions(prompt):
        for match in pattern.finditer(text, start, end):
            yield text[pos : match.start()]
            yield specials[match.group()]
            pos = match.end()
    yield text[pos:]


def _template_regions(prompt: RenderedPrompt) -> Iterator[tuple[int, int]]:
    pos = 0
    for start, end in prompt.client_spans:
        yield pos, start
        pos = end
    yield pos, len(prompt.text)
