"""Pick the next token of every sequence in a step at once, each with its own parameters."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from batching.outputs import TokenLogprob
from batching.params import SamplingParams
from batching.truncation import M64, gumbel_noise, gumbel_noise_at, logit_floors, top_k_candidates

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
        self.seed = seed & M64
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
    """Temperature, then min-p, top-k and top-p as one logit floor per row, then Gumbel-max.

    argmax(z + g) over the tokens at or above the floor samples exactly from their softmax; the
    noise g depends only on (seed, position, token id), so a seeded request keeps its text in
    any batch, and last-digit differences in the logits almost never change the winner. Rows
    with top-k work on a few hundred candidate tokens instead of the whole vocabulary.
    """
    n_rows, n_vocab = x.shape
    tokens = np.empty(n_rows, dtype=np.int64)
    top_k = np.array([s.params.top_k if 0 < s.params.top_k < n_vocab else 0 for s in states])
    for k in np.unique(top_k).tolist():
        rows = np.flatnonzero(top_k == k)
        group = [states[r] for r in rows]
        keys = [(s.seed, s.num_sampled) for s in group]
        inv_t = (1.0 / temps[rows])[:, None]
        if k:
            ids, vals = top_k_candidates(x[rows], k)
            z = vals * inv_t
            noise = gumbel_noise_at(keys, ids, n_vocab)
        else:
            ids, z = None, x[rows] * inv_t
            noise = gumbel_noise(keys, n_vocab)
        floors = logit_floors(z, [s.params for s in group])
        rejected = z < floors[:, None] if np.isfinite(floors).any() else None
        z += noise
        if rejected is not None:
            np.copyto(z, -np.inf, where=rejected)
        best = np.argmax(z, axis=1)
        tokens[rows] = best if ids is None else ids[np.arange(len(rows)), best]
    return tokens


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
