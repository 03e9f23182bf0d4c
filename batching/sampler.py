"""Pick the next token of every sequence in a step at once, each with its own parameters.

All the work (argmax, temperature, min-p, top-k, top-p, the draw, logit_bias and penalties,
log-probabilities) runs in the compiled kernels of batching/_sampling.c, straight on llama.cpp's
logits rows: a row is copied only when logit_bias or a penalty edits it, inside the kernel.
Draws are keyed by (seed, position), so a seeded sequence keeps its text alone or in any batch.

A grammar row is sampled without its grammar first and the grammar is asked only whether it
allows that token; only when it does not is the row masked (the slow part) and drawn again. The
result is exact: an allowed token t comes out with probability p_t + (1 - A) * p_t / A = p_t / A,
where A is the allowed mass.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from batching.kernels import EDITS_DTYPE, PARAMS_DTYPE, Kernels
from batching.outputs import TokenLogprob
from batching.sampling_state import Logits, SamplingState

REDRAW_KEY = 0x9E3779B97F4A7C15  # xored into the seed for the draw after a grammar mask
_NO_EDITS = (0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0)


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
        ptrs = _row_pointers(logits, rows)
        params = np.array([s.kernel_row() for s in states], dtype=PARAMS_DTYPE)
        edits = None
        if any(s.needs_edits for s in states):
            edits = np.array(
                [s.edits(n_vocab) if s.needs_edits else _NO_EDITS for s in states], EDITS_DTYPE
            )
        tokens = self.kernels.sample(n_vocab, ptrs, params, edits)
        for i, state in enumerate(states):
            if state.grammar is not None and not state.grammar.allows(int(tokens[i])):
                tokens[i] = self._redraw(state, logits[rows[i]], params[i : i + 1])
        out = tokens.tolist()
        for state, token in zip(states, out, strict=True):
            state.accept(token, n_vocab)
        return out, self._logprobs(n_vocab, ptrs, states, tokens, pieces)

    def close(self) -> None:
        self.kernels.close()

    def _redraw(self, state: SamplingState, row: Logits, params: npt.NDArray[np.void]) -> int:
        """The grammar refused the first draw: mask the row, then draw again from what is left."""
        assert state.grammar is not None
        masked = np.array(row, dtype=np.float32, copy=True)
        state.edit(masked)
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


def _row_pointers(matrix: Logits, rows: list[int]) -> npt.NDArray[np.uintp]:
    """Addresses of the given rows of a C-contiguous float32 matrix."""
    offsets = np.asarray(rows, np.uintp) * np.uintp(matrix.strides[0])
    return (np.uintp(matrix.ctypes.data) + offsets).astype(np.uintp)
