"""One sequence's sampling state: parameters, draw position, penalty counts and grammar."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from batching.kernels import EDITS_DTYPE
from batching.params import SamplingParams

Logits = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int32]
M64 = (1 << 64) - 1


class Grammar(Protocol):
    """A grammar constraint over next tokens (llama.cpp's GBNF sampler behind the runner)."""

    def allows(self, token_id: int) -> bool:
        """Whether the grammar accepts this token next."""

    def mask(self, row: Logits) -> None:
        """Set the logits of tokens the grammar forbids now to -inf, in place."""

    def accept(self, token_id: int) -> None:
        """Advance the grammar past a chosen token."""

    def close(self) -> None:
        """Free the native grammar."""


class TokenCounts:
    """How often each token id occurred, in an array, with the ids that occurred in order."""

    __slots__ = ("_ids", "counts", "num_ids")

    def __init__(self) -> None:
        self.counts: npt.NDArray[np.float32] | None = None
        self._ids = np.empty(16, np.int32)  # grows by doubling; the first num_ids are valid
        self.num_ids = 0

    def add(self, token_ids: list[int], n_vocab: int) -> None:
        """Count tokens (one generated token, or a whole prompt)."""
        if self.counts is None:
            self.counts = np.zeros(n_vocab, np.float32)
        for t in token_ids:
            if self.counts[t] == 0:
                if self.num_ids == len(self._ids):
                    self._ids = np.concatenate([self._ids, np.empty_like(self._ids)])
                self._ids[self.num_ids] = t
                self.num_ids += 1
            self.counts[t] += 1

    def ids(self) -> Ids:
        """The ids with a count (a view, valid until the next add)."""
        return self._ids[: self.num_ids]


class SamplingState:
    """One sequence's sampler: its parameters, draw position, token counts and grammar."""

    __slots__ = (
        "_bias_ids",
        "_bias_vals",
        "_edits",
        "_kernel_row",
        "_outputs",
        "_prompt_ids",
        "_seen",
        "grammar",
        "num_sampled",
        "params",
        "seed",
    )

    def __init__(
        self,
        params: SamplingParams,
        seed: int,
        prompt_ids: list[int],
        grammar: Grammar | None = None,
    ) -> None:
        self.params = params
        self.seed = seed & M64
        self.num_sampled = 0  # the position of the next draw in this sequence's stream
        self.grammar = grammar
        p = params
        inv_temp = 0.0 if p.temperature == 0.0 else 1.0 / p.temperature
        self._kernel_row = (inv_temp, p.top_p, p.min_p, p.top_k, self.seed)
        self._bias_ids = np.fromiter(p.logit_bias.keys(), dtype=np.int32)
        self._bias_vals = np.fromiter(p.logit_bias.values(), dtype=np.float32)
        self._outputs = TokenCounts()  # generated tokens: presence and frequency penalties
        self._seen = TokenCounts()  # prompt and generated tokens: the repetition penalty
        self._prompt_ids = prompt_ids if p.repetition_penalty != 1.0 else []
        self._edits: npt.NDArray[np.void] | None = None  # this row of the kernels' edits

    @property
    def needs_edits(self) -> bool:
        """Whether logit_bias or penalties change this sequence's row before sampling."""
        return bool(self.params.has_penalties or self._bias_ids.size)

    def kernel_row(self) -> tuple[float, float, float, int, int, int]:
        """This sequence's parameters for the next draw, as the kernels take them."""
        return (*self._kernel_row, self.num_sampled)

    def edits(self, n_vocab: int) -> npt.NDArray[np.void]:
        """This step's edits as the kernels take them (pointing into arrays this state owns)."""
        if self._prompt_ids:  # counted once the vocabulary size is known
            self._seen.add(self._prompt_ids, n_vocab)
            self._prompt_ids = []
            self._edits = None
        if self._edits is None:
            self._edits = self._build_edits()
        return self._edits

    def edit(self, row: Logits) -> None:
        """Apply the same edits as the kernels to a copy of the row (for a grammar's redraw)."""
        p = self.params
        row[self._bias_ids] += self._bias_vals
        if self._seen.num_ids:
            ids = self._seen.ids()
            x = row[ids]
            row[ids] = np.where(x > 0, x / p.repetition_penalty, x * p.repetition_penalty)
        if self._outputs.num_ids and self._outputs.counts is not None:
            ids = self._outputs.ids()
            row[ids] -= p.frequency_penalty * self._outputs.counts[ids] + p.presence_penalty

    def accept(self, token_id: int, n_vocab: int) -> None:
        """Record a chosen token for the draw position, penalties and the grammar."""
        self.num_sampled += 1
        p = self.params
        if p.presence_penalty or p.frequency_penalty:
            self._outputs.add([token_id], n_vocab)
            self._edits = None
        if p.repetition_penalty != 1.0:
            self._seen.add([token_id], n_vocab)
            self._edits = None
        if self.grammar is not None:
            self.grammar.accept(token_id)

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
            self.grammar = None

    def _build_edits(self) -> npt.NDArray[np.void]:
        p = self.params
        edits = np.zeros((), EDITS_DTYPE)
        edits["bias_ids"] = self._bias_ids.ctypes.data
        edits["bias_values"] = self._bias_vals.ctypes.data
        edits["n_bias"] = len(self._bias_ids)
        if p.repetition_penalty != 1.0:
            edits["seen_ids"] = self._seen.ids().ctypes.data
            edits["n_seen"] = self._seen.num_ids
            edits["repetition"] = p.repetition_penalty
        if (p.presence_penalty or p.frequency_penalty) and self._outputs.counts is not None:
            edits["penalty_ids"] = self._outputs.ids().ctypes.data
            edits["counts"] = self._outputs.counts.ctypes.data
            edits["n_penalty"] = self._outputs.num_ids
            edits["frequency"] = p.frequency_penalty
            edits["presence"] = p.presence_penalty
        return edits
