"""Pick the next token of every sequence in a step at once, each with its own parameters."""

from __future__ import annotations

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
    """Temperature, top-k, top-p and min-p for rows that sample, vectorised over the rows."""
    n_rows, n_vocab = x.shape
    top_k = np.array([s.params.top_k or n_vocab for s in states])
    top_p = np.array([s.params.top_p for s in states], dtype=np.float32)
    min_p = np.array([s.params.min_p for s in states], dtype=np.float32)
    scaled = x / temps[:, None]
    k = int(top_k.max())
    if k < n_vocab:  # candidates: each row's k best, found without sorting the vocabulary
        cand = np.argpartition(-scaled, k - 1, axis=1)[:, :k]
    elif (top_p < 1.0).any() or (top_k < n_vocab).any():
        cand = np.broadcast_to(np.arange(n_vocab), (n_rows, n_vocab))
    else:
        cand = None
    if cand is not None:
        vals = np.take_along_axis(scaled, cand, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        vals[np.arange(vals.shape[1])[None, :] >= top_k[:, None]] = -np.inf
    else:
        vals = scaled
    probs = np.exp(vals - vals.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if cand is not None:  # sorted: nucleus = smallest prefix whose mass reaches top_p
        before = np.cumsum(probs, axis=1) - probs
        probs[before >= top_p[:, None]] = 0.0
    probs[probs < (min_p * probs.max(axis=1))[:, None]] = 0.0
    ids = np.broadcast_to(np.arange(n_vocab), (n_rows, n_vocab)) if cand is None else cand
    # Gumbel-max with noise keyed by (seed, position, token id): the draw depends on nothing
    # else in the batch, and logits that differ in the last digits (a bigger batch computes
    # them in another order) almost never change the winner.
    keys = np.array([_mix(s.seed * 0x1000193 + s.num_sampled) for s in states], dtype=np.uint64)
    u = _uniform(ids.astype(np.uint64) ^ keys[:, None])
    with np.errstate(divide="ignore"):
        score = np.log(probs) - np.log(-np.log(u))
    idx = np.argmax(score, axis=1)
    return np.asarray(ids[np.arange(n_rows), idx], dtype=np.int64)


_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser on a Python int (one value per row)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _uniform(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """splitmix64 over an array of keys, mapped to floats in (0, 1)."""
    z = keys + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


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
