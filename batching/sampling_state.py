"""One sequence's sampling state: parameters, draw position, penalty counts and grammar."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from batching.params import SamplingParams

Logits = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int32]
M64 = (1 << 64) - 1
# One row of the kernels' edits (batching.kernels.EDITS_DTYPE): the addresses of the logit_bias
# ids and values, of the ids seen and penalised and of the counts, then the three lengths and
# the repetition, frequency and presence penalties.
EditsRow = tuple[int, int, int, int, int, int, int, int, float, float, float]


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

    __slots__ = ("_ids", "counts", "counts_ptr", "ids_ptr", "num_ids")

    def __init__(self) -> None:
        self.counts: npt.NDArray[np.float32] | None = None
        self._ids = np.empty(16, np.int32)  # grows by doubling; the first num_ids are valid
        self.num_ids = 0
        # the arrays' addresses for the kernels, kept as ints: reading .ctypes.data costs
        # microseconds, and a penalised row needs them at every step
        self.ids_ptr: int = self._ids.ctypes.data
        self.counts_ptr = 0

    def add(self, token_ids: list[int], n_vocab: int) -> None:
        """Count tokens (one generated token, or a whole prompt)."""
        if self.counts is None:
            self.counts = np.zeros(n_vocab, np.float32)
            self.counts_ptr = self.counts.ctypes.data
        counts = self.counts
        for t in token_ids:
            before = counts.item(t)  # a Python float: cheaper than numpy's scalar
            if before == 0:
                if self.num_ids == len(self._ids):
                    self._ids = np.concatenate([self._ids, np.empty_like(self._ids)])
                    self.ids_ptr = self._ids.ctypes.data
                self._ids[self.num_ids] = t
                self.num_ids += 1
            counts[t] = before + 1

    def ids(self) -> Ids:
        """The ids with a count (a view, valid until the next add)."""
        return self._ids[: self.num_ids]


class SamplingState:
    """One sequence's sampler: its parameters, draw position, token counts and grammar."""

    __slots__ = (
        "_bias",
        "_bias_ids",
        "_bias_vals",
        "_kernel_row",
        "_outputs",
        "_prompt_ids",
        "_seen",
        "grammar",
        "needs_edits",
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
        self._bias = (self._bias_ids.ctypes.data, self._bias_vals.ctypes.data, len(self._bias_ids))
        # whether logit_bias or penalties change this sequence's row before sampling
        self.needs_edits = bool(p.has_penalties or self._bias_ids.size)

    def kernel_row(self) -> tuple[float, float, float, int, int, int]:
        """This sequence's parameters for the next draw, as the kernels take them."""
        return (*self._kernel_row, self.num_sampled)

    def edits(self, n_vocab: int) -> EditsRow:
        """This step's edits as the kernels take them (pointing into arrays this state owns):
        a plain tuple, rebuilt at every step in about a microsecond."""
        if self._prompt_ids:  # counted once the vocabulary size is known
            self._seen.add(self._prompt_ids, n_vocab)
            self._prompt_ids = []
        p = self.params
        seen, outs = self._seen, self._outputs
        rep = p.repetition_penalty != 1.0
        pen = bool(p.presence_penalty or p.frequency_penalty) and outs.counts is not None
        bias_ptr, bias_vals_ptr, n_bias = self._bias
        return (
            bias_ptr,
            bias_vals_ptr,
            seen.ids_ptr if rep else 0,
            outs.ids_ptr if pen else 0,
            outs.counts_ptr if pen else 0,
            n_bias,
            seen.num_ids if rep else 0,
            outs.num_ids if pen else 0,
            p.repetition_penalty if rep else 0.0,
            p.frequency_penalty if pen else 0.0,
            p.presence_penalty if pen else 0.0,
        )

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
        if self.needs_edits:
            p = self.params
            if p.presence_penalty or p.frequency_penalty:
                self._outputs.add([token_id], n_vocab)
            if p.repetition_penalty != 1.0:
                self._seen.add([token_id], n_vocab)
        if self.grammar is not None:
            self.grammar.accept(token_id)

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
            self.grammar = None
