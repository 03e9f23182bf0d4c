"""Pick the next token of every sequence in a step at once, each with its own parameters.

The heavy work (argmax, temperature, min-p, top-k, top-p, the draw, log-probabilities) runs in
the compiled kernels of batching/_sampling.c, straight on llama.cpp's logits rows: no copy of
the logits is made except of the rows that logit_bias or penalties change. Draws are keyed by
(seed, position), so a seeded sequence keeps its text alone or in any batch.

A grammar row is sampled without its grammar first and the grammar is asked only whether it
allows that token; only when it does not is the row masked (the slow part) and drawn again. The
result is exact: an allowed token t comes out with probability p_t + (1 - A) * p_t / A = p_t / A,
where A is the allowed mass.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from batching.kernels import PARAMS_DTYPE, Kernels
from batching.outputs import TokenLogprob
from batching.params import SamplingParams

Logits = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
_NO_IDS: Ids = np.empty(0, np.int64)
_NO_FLOATS: Floats = np.empty(0, np.float32)
M64 = (1 << 64) - 1
REDRAW_KEY = 0x9E3779B97F4A7C15  # xored into the seed for the draw after a grammar mask


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


class Adjustments(NamedTuple):
    """One row's sparse edits: logit_bias, the repetition penalty, presence/frequency."""

    bias_ids: Ids
    bias_values: Floats
    seen_ids: Ids  # tokens of the prompt and output, for the repetition penalty
    repetition_penalty: float
    penalty_ids: Ids
    penalty_deltas: Floats  # frequency * count + presence, subtracted


class TokenCounts:
    """How often each token id occurred, in an array, with the ids that occurred in order."""

    __slots__ = ("_ids", "_num_ids", "counts")

    def __init__(self) -> None:
        self.counts: Floats | None = None
        self._ids = np.empty(16, np.int64)  # grows by doubling; the first _num_ids are valid
        self._num_ids = 0

    def __bool__(self) -> bool:
        return self._num_ids > 0

    def add(self, token_id: int, n_vocab: int) -> None:
        if self.counts is None:
            self.counts = np.zeros(n_vocab, np.float32)
        if self.counts[token_id] == 0:
            if self._num_ids == len(self._ids):
                self._ids = np.concatenate([self._ids, np.empty_like(self._ids)])
            self._ids[self._num_ids] = token_id
            self._num_ids += 1
        self.counts[token_id] += 1

    def add_all(self, token_ids: list[int], n_vocab: int) -> None:
        """Count many tokens at once (a prompt)."""
        if self.counts is None:
            self.counts = np.zeros(n_vocab, np.float32)
        ids = np.asarray(token_ids, np.int64)
        fresh = np.unique(ids[self.counts[ids] == 0])
        np.add.at(self.counts, ids, 1.0)
        self._ids = np.concatenate([self._ids[: self._num_ids], fresh, np.empty(16, np.int64)])
        self._num_ids += len(fresh)

    def ids(self) -> Ids:
        """The ids with a count (a view, valid until the next add)."""
        return self._ids[: self._num_ids]


class SamplingState:
    """One sequence's sampler: its parameters, draw position, token counts and grammar."""

    __slots__ = (
        "_bias_ids",
        "_bias_vals",
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
        self._bias_ids = np.fromiter(p.logit_bias.keys(), dtype=np.int64)
        self._bias_vals = np.fromiter(p.logit_bias.values(), dtype=np.float32)
        self._outputs = TokenCounts()  # generated tokens: presence and frequency penalties
        self._seen = TokenCounts()  # prompt and generated tokens: the repetition penalty
        self._prompt_ids = prompt_ids if p.repetition_penalty != 1.0 else []

    @property
    def needs_processing(self) -> bool:
        """Whether logit_bias or penalties change this sequence's row before sampling."""
        return bool(self.params.has_penalties or self._bias_ids.size)

    def kernel_row(self) -> tuple[float, float, float, int, int, int]:
        """This sequence's parameters for the next draw, as the kernels take them."""
        return (*self._kernel_row, self.num_sampled)

    def adjustments(self, n_vocab: int) -> Adjustments:
        """What logit_bias and the penalties change in this sequence's row at this step."""
        p = self.params
        if self._prompt_ids:  # counted once the vocabulary size is known
            self._seen.add_all(self._prompt_ids, n_vocab)
            self._prompt_ids = []
        seen = self._seen.ids() if p.repetition_penalty != 1.0 else _NO_IDS
        pen_ids, deltas = _NO_IDS, _NO_FLOATS
        if (p.presence_penalty or p.frequency_penalty) and self._outputs:
            assert self._outputs.counts is not None
            pen_ids = self._outputs.ids()
            deltas = p.frequency_penalty * self._outputs.counts[pen_ids] + p.presence_penalty
        return Adjustments(
            self._bias_ids, self._bias_vals, seen, p.repetition_penalty, pen_ids, deltas
        )

    def accept(self, token_id: int, n_vocab: int) -> None:
        """Record a chosen token for the draw position, penalties and the grammar."""
        self.num_sampled += 1
        p = self.params
        if p.presence_penalty or p.frequency_penalty:
            self._outputs.add(token_id, n_vocab)
        if p.repetition_penalty != 1.0:
            self._seen.add(token_id, n_vocab)
        if self.grammar is not None:
            self.grammar.accept(token_id)

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
            self.grammar = None


class Sampler:
    """Samples every row of a step; owns the kernels' threads and scratch memory."""

    def __init__(self, n_threads: int = 1) -> None:
        self.kernels = Kernels(n_threads)

    def sample(
        self,
        logits: Logits,
        rows: list[int],
        states: list[SamplingState],
        pieces: list[bytes],
    ) -> tuple[list[int], list[TokenLogprob | None] | None]:
        """Sample one token per state from `logits[rows[i]]`; return tokens and logprobs."""
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        n_vocab = logits.shape[1]
        row_ids = np.asarray(rows, np.intp)
        raw = _row_pointers(logits, row_ids)
        processed = [i for i, s in enumerate(states) if s.needs_processing]
        edit = _Edit.make(logits, row_ids, processed, states)
        ptrs = raw if edit is None else edit.pointers(raw)
        params = np.array([s.kernel_row() for s in states], dtype=PARAMS_DTYPE)
        try:
            tokens = self.kernels.sample(n_vocab, ptrs, params)
            for i, state in enumerate(states):
                if state.grammar is not None and not state.grammar.allows(int(tokens[i])):
                    row = logits[rows[i]] if edit is None else edit.row(i, logits[rows[i]])
                    tokens[i] = self._redraw(state, row, params[i : i + 1])
        finally:
            if edit is not None:
                edit.undo()
        out = tokens.tolist()
        for state, token in zip(states, out, strict=True):
            state.accept(token, n_vocab)
        return out, self._logprobs(n_vocab, raw, states, tokens, pieces)

    def close(self) -> None:
        self.kernels.close()

    def _redraw(self, state: SamplingState, row: Logits, params: npt.NDArray[np.void]) -> int:
        """The grammar refused the first draw: mask the row, then draw again from what is left."""
        assert state.grammar is not None
        masked = np.array(row, dtype=np.float32, copy=True)
        state.grammar.mask(masked)
        params = params.copy()
        params["seed"] ^= np.uint64(REDRAW_KEY)
        return int(self.kernels.sample(len(masked), _row_pointers(masked[None, :], [0]), params)[0])

    def _logprobs(
        self,
        n_vocab: int,
        raw: npt.NDArray[np.uintp],
        states: list[SamplingState],
        tokens: npt.NDArray[np.int32],
        pieces: list[bytes],
    ) -> list[TokenLogprob | None] | None:
        """Log-probabilities of the model's own distribution, for the rows that asked."""
        wanted = [i for i, s in enumerate(states) if s.params.logprobs is not None]
        if not wanted:
            return None
        result: list[TokenLogprob | None] = [None] * len(states)
        for n_top in sorted({states[i].params.logprobs or 0 for i in wanted}):
            group = [i for i in wanted if (states[i].params.logprobs or 0) == n_top]
            lp, top_ids, top_lp = self.kernels.logprobs(
                n_vocab, raw[group], np.ascontiguousarray(tokens[group]), n_top
            )
            for j, i in enumerate(group):
                t = int(tokens[i])
                top = tuple(
                    (int(a), pieces[a], float(b))
                    for a, b in zip(top_ids[j].tolist(), top_lp[j].tolist(), strict=True)
                )
                result[i] = TokenLogprob(t, pieces[t], float(lp[j]), top)
        return result


class _Edit:
    """logit_bias and penalties of a step, applied to the rows in place and undone after.

    Only the few touched logits are read and written, for all rows at once; a row that two
    sequences share (the choices of an n>1 request at their first token) is edited in a copy.
    """

    def __init__(
        self, matrix: Logits, offsets: npt.NDArray[np.intp], copies: dict[int, int]
    ) -> None:
        self.matrix = matrix  # the logits (in place) or a block of copied rows
        self.offsets = offsets  # per processed state: where its row starts in matrix.flat
        self.copies = copies  # state index -> row of `matrix`, when edited in a copy
        self.saved: list[tuple[npt.NDArray[np.intp], Floats]] = []

    @classmethod
    def make(
        cls,
        logits: Logits,
        rows: npt.NDArray[np.intp],
        processed: list[int],
        states: list[SamplingState],
    ) -> _Edit | None:
        if not processed:
            return None
        n_vocab = logits.shape[1]
        mine = rows[processed]
        if len(set(rows.tolist())) == len(rows):
            edit = cls(logits, mine * n_vocab, {})
        else:  # shared rows: edit copies, one per processed state
            edit = cls(logits[mine], np.arange(len(mine)) * n_vocab, {})
            edit.copies = {i: j for j, i in enumerate(processed)}
        edit.apply([states[i].adjustments(n_vocab) for i in processed])
        return edit

    def apply(self, edits: list[Adjustments]) -> None:
        flat = self.matrix.reshape(-1)
        offsets = self.offsets.tolist()

        def at(ids: list[Ids]) -> npt.NDArray[np.intp]:
            return np.concatenate([off + i for off, i in zip(offsets, ids, strict=True)])

        bias_at = at([e.bias_ids for e in edits])
        seen_at = at([e.seen_ids for e in edits])
        penalty_at = at([e.penalty_ids for e in edits])
        in_place = not self.copies  # then keep what each edit overwrites, to undo in reverse
        if in_place:
            self.saved.append((bias_at, flat[bias_at]))
        flat[bias_at] += np.concatenate([e.bias_values for e in edits])
        if seen_at.size:
            factor = np.repeat(
                np.array([e.repetition_penalty for e in edits], np.float32),
                [len(e.seen_ids) for e in edits],
            )
            x = flat[seen_at]
            if in_place:
                self.saved.append((seen_at, x))
            flat[seen_at] = np.where(x > 0, x / factor, x * factor)
        if in_place:
            self.saved.append((penalty_at, flat[penalty_at]))
        flat[penalty_at] -= np.concatenate([e.penalty_deltas for e in edits]).astype(np.float32)

    def pointers(self, raw: npt.NDArray[np.uintp]) -> npt.NDArray[np.uintp]:
        if not self.copies:
            return raw
        ptrs = raw.copy()
        which = list(self.copies)
        ptrs[which] = _row_pointers(self.matrix, list(self.copies.values()))
        return ptrs

    def row(self, i: int, original: Logits) -> Logits:
        """State i's row as sampled (edited)."""
        return self.matrix[self.copies[i]] if i in self.copies else original

    def undo(self) -> None:
        flat = self.matrix.reshape(-1)
        for at, values in reversed(self.saved):
            flat[at] = values
        self.saved = []


def _row_pointers(matrix: Logits, rows: npt.NDArray[np.intp] | list[int]) -> npt.NDArray[np.uintp]:
    """Addresses of the given rows of a C-contiguous float32 matrix."""
    base = np.uintp(matrix.ctypes.data)
    stride = np.uintp(matrix.strides[0])
    return (base + np.asarray(rows, np.uintp) * stride).astype(np.uintp)
