"""Pick the next token of every sequence in a step at once, each with its own parameters."""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np
import numpy.typing as npt

from batching.outputs import TokenLogprob
from batching.params import SamplingParams

Logits = npt.NDArray[np.float32]


class Grammar(Protocol):
    """A grammar constraint over next tokens (llama.cpp's GBNF sampler behind the runner)."""

    def mask(self, row: Logits) -> None:
        """Set the logits of tokens the grammar forbids now to -inf, in place."""

    def accept(self, token_id: int) -> None:
        """Advance the grammar past a chosen token."""

    def close(self) -> None:
        """Free the native grammar."""


class SamplingState:
    """One sequence's sampler: its parameters, random stream, token counts and grammar."""

    __slots__ = (
        "_bias_ids",
        "_bias_vals",
        "_counts",
        "_history",
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
        self.seed = seed & _M64
        self.num_sampled = 0  # the position of the next draw in this sequence's noise stream
        self.grammar = grammar
        self._counts: dict[int, int] = {}
        self._history = set(prompt_ids) if params.repetition_penalty != 1.0 else set()
        self._bias_ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64)
        self._bias_vals = np.fromiter(params.logit_bias.values(), dtype=np.float32)

    @property
    def needs_processing(self) -> bool:
        return bool(self.params.has_penalties or self._bias_ids.size or self.grammar)

    def process(self, row: Logits) -> None:
        """Logit bias, penalties and the grammar, applied to this sequence's row in place."""
        p = self.params
        if self._bias_ids.size:
            row[self._bias_ids] += self._bias_vals
        if p.repetition_penalty != 1.0 and self._history:
            ids = np.fromiter(self._history, dtype=np.int64)
            x = row[ids]
            row[ids] = np.where(x > 0, x / p.repetition_penalty, x * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and self._counts:
            ids = np.fromiter(self._counts.keys(), dtype=np.int64)
            counts = np.fromiter(self._counts.values(), dtype=np.float32)
            row[ids] -= p.frequency_penalty * counts + p.presence_penalty
        if self.grammar is not None:
            self.grammar.mask(row)

    def accept(self, token_id: int) -> None:
        """Record a chosen token for penalties and the grammar."""
        self.num_sampled += 1
        if self.params.presence_penalty or self.params.frequency_penalty:
            self._counts[token_id] = self._counts.get(token_id, 0) + 1
        if self.params.repetition_penalty != 1.0:
            self._history.add(token_id)
        if self.grammar is not None:
            self.grammar.accept(token_id)

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
            self.grammar = None


def sample(
    logits: Logits,
    rows: list[int],
    states: list[SamplingState],
    pieces: list[bytes],
) -> tuple[list[int], list[TokenLogprob | None] | None]:
    """Sample one token per state from `logits[rows[i]]`; return tokens and logprobs."""
    n = len(rows)
    processed = [i for i, s in enumerate(states) if s.needs_processing]
    contiguous = rows == list(range(logits.shape[0]))
    x = logits if contiguous and not processed else logits[rows]
    if processed and x is logits:
        x = logits.copy()
    for i in processed:
        states[i].process(x[i])
    temps = np.array([s.params.temperature for s in states], dtype=np.float32)
    greedy = temps == 0.0
    tokens = np.empty(n, dtype=np.int64)
    if greedy.all():
        tokens[:] = np.argmax(x, axis=1)
    else:
        g = np.flatnonzero(greedy)
        if g.size:
            tokens[g] = np.argmax(x[g], axis=1)
        s = np.flatnonzero(~greedy)
        tokens[s] = _sample_rows(x[s], [states[i] for i in s], temps[s])
    out = tokens.tolist()
    for state, token in zip(states, out, strict=True):
        state.accept(token)
    logprobs = _logprobs(logits, rows, states, out, pieces)
    return out, logprobs


def _sample_rows(x: Logits, states: list[SamplingState], temps: Logits) -> npt.NDArray[np.int64]:
    """Temperature, top-k, top-p and min-p for rows that sample, in a few passes over the rows.

    Each filter becomes a per-row logit threshold `lo` (a token survives when its scaled logit
    is at least `lo`), then Gumbel-max picks among the survivors: argmax(z + g) samples exactly
    from softmax(z). No pass exponentiates or sorts the vocabulary: top-k is a partition, and
    top-p sorts only the tokens within NUCLEUS_SPAN of the best (the rest carry less than
    32,000 * e^-20 of the mass, so they can only matter for top_p above 0.9999).
    """
    n_rows, n_vocab = x.shape
    z = x * (1.0 / temps)[:, None]
    zmax = z.max(axis=1)
    lo = np.full(n_rows, -np.inf, dtype=np.float32)
    for r, state in enumerate(states):
        p = state.params
        if p.min_p > 0.0:
            lo[r] = zmax[r] + np.log(p.min_p)
        if 0 < p.top_k < n_vocab:
            lo[r] = max(lo[r], _kth_largest(z[r], p.top_k))
        if p.top_p < 1.0:
            lo[r] = max(lo[r], _nucleus_floor(z[r], max(lo[r], zmax[r] - NUCLEUS_SPAN), p.top_p))
    rejected = z < lo[:, None] if np.isfinite(lo).any() else None
    z += _gumbel(states, n_vocab)
    if rejected is not None:
        z[rejected] = -np.inf
    return np.asarray(np.argmax(z, axis=1), dtype=np.int64)


NUCLEUS_SPAN = 20.0
NUCLEUS_GUESS = 256
GUMBEL_TABLE_SIZE = 1 << 22


def _nucleus_floor(z: Logits, floor: float, top_p: float) -> float:
    """The smallest scaled logit inside the top-p nucleus of the tokens at or above `floor`."""
    cand = z[z >= floor]
    target = top_p * float(np.exp(cand - cand.max()).sum())
    k = min(NUCLEUS_GUESS, len(cand))
    best = cand[cand >= _kth_largest(cand, k)]  # a confident model's nucleus fits in here
    for vals in (best, cand):
        vals = np.sort(vals)[::-1]
        cum = np.cumsum(np.exp(vals - vals[0]))
        if cum[-1] >= target or len(vals) == len(cand):
            return float(vals[min(int(np.searchsorted(cum, target)), len(vals) - 1)])
    raise AssertionError("unreachable")


def _kth_largest(z: Logits, k: int) -> float:
    """The k-th largest value; a strided sample first narrows the candidates (exactly: the
    sample's k-th largest is a lower bound of the row's)."""
    if k * 64 < len(z):
        sample = z[::16]
        z = z[z >= np.partition(sample, len(sample) - k)[len(sample) - k]]
    return float(np.partition(z, len(z) - k)[len(z) - k])


@functools.cache
def _gumbel_table() -> npt.NDArray[np.float32]:
    """Fixed Gumbel noise; a row's noise is a window chosen by (seed, position)."""
    u = np.random.default_rng(0x5EED).random(GUMBEL_TABLE_SIZE)
    return (-np.log(-np.log(u))).astype(np.float32)


def _gumbel(states: list[SamplingState], n_vocab: int) -> npt.NDArray[np.float32]:
    """Noise keyed by (seed, position, token id) only: the draw depends on nothing else in the
    batch, and logits that differ in the last digits (a bigger batch sums them in another
    order) almost never change the winner, so a seeded request keeps its text in any batch."""
    table = _gumbel_table()
    span = len(table) - n_vocab
    if span <= 0:
        table = np.tile(table, n_vocab // len(table) + 2)
        span = len(table) - n_vocab
    starts = [_mix(s.seed * 0x1000193 + s.num_sampled) % span for s in states]
    return np.stack([table[o : o + n_vocab] for o in starts])


_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser on a Python int (one value per row)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _logprobs(
    logits: Logits,
    rows: list[int],
    states: list[SamplingState],
    tokens: list[int],
    pieces: list[bytes],
) -> list[TokenLogprob | None] | None:
    """Log-probabilities of the model's own distribution for sequences that asked for them."""
    wanted = [i for i, s in enumerate(states) if s.params.logprobs is not None]
    if not wanted:
        return None
    result: list[TokenLogprob | None] = [None] * len(states)
    for i in wanted:
        row = logits[rows[i]].astype(np.float64)
        m = row.max()
        logz = m + np.log(np.exp(row - m).sum())
        k = states[i].params.logprobs or 0
        top_ids = np.argpartition(-row, k)[:k] if k else np.empty(0, dtype=np.int64)
        top_ids = top_ids[np.argsort(-row[top_ids], kind="stable")]
        top = tuple((int(t), pieces[t], float(row[t] - logz)) for t in top_ids)
        t = tokens[i]
        result[i] = TokenLogprob(t, pieces[t], float(row[t] - logz), top)
    return result
