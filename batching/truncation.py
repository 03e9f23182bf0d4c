"""min-p, top-k and top-p as one logit floor per row, and the Gumbel noise that samples.

Every filter keeps the tokens whose scaled logit is at least some value, so the three combine
into one floor per row. Nothing here sorts or exponentiates a whole vocabulary row: rows with
top-k are first cut down to a few candidate blocks that surely hold their k best
(`top_k_candidates`), rows with the same k are handled together, and top-p looks only at the
tokens that survive top-k, or, without top-k, at the tokens within NUCLEUS_SPAN of the best
(the rest carry less than 32,000 * e^-20 of the mass, so they can matter only for top_p above
0.9999).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from batching.params import SamplingParams

Floats = npt.NDArray[np.float32]

NUCLEUS_SPAN = 20.0
NUCLEUS_GUESS = 256  # a confident model's nucleus fits in its best few hundred tokens
GUMBEL_TABLE_SIZE = 1 << 22
CANDIDATE_BLOCK = 16
M64 = (1 << 64) - 1


def logit_floors(z: Floats, params: list[SamplingParams]) -> Floats:
    """Per row, the smallest scaled logit that min-p, top-k and top-p all keep."""
    n_rows, n_vocab = z.shape
    zmax = z.max(axis=1)
    min_p = np.array([p.min_p for p in params], dtype=np.float32)
    floors = np.full(n_rows, -np.inf, dtype=np.float32)
    has_min_p = min_p > 0
    floors[has_min_p] = zmax[has_min_p] + np.log(min_p[has_min_p])
    top_k = np.array([p.top_k if 0 < p.top_k < n_vocab else 0 for p in params])
    for k in np.unique(top_k[top_k > 0]).tolist():
        rows = np.flatnonzero(top_k == k)
        best = _top_values(z[rows], k)  # (rows, k), best first
        floors[rows] = np.maximum(floors[rows], best[:, -1])
        top_p = np.array([params[r].top_p for r in rows], dtype=np.float32)
        if (top_p < 1.0).any():
            nucleus = _nucleus_of_sorted(best, floors[rows], top_p)
            floors[rows] = np.maximum(floors[rows], nucleus)
    for r, p in enumerate(params):
        if p.top_p < 1.0 and top_k[r] == 0:
            floor = max(float(floors[r]), float(zmax[r]) - NUCLEUS_SPAN)
            floors[r] = max(floors[r], _nucleus_floor(z[r], floor, p.top_p))
    return floors


def _top_values(z: Floats, k: int) -> Floats:
    """The k largest values of every row, sorted best first (rows are candidate sets here)."""
    n_cols = z.shape[1]
    best = np.partition(z, n_cols - k, axis=1)[:, n_cols - k :]
    return -np.sort(-best, axis=1)


def _nucleus_of_sorted(vals: Floats, floors: Floats, top_p: Floats) -> Floats:
    """Per row of best-first values (those below the row's floor left out): the nucleus floor."""
    probs = np.exp(vals - vals[:, :1])
    probs[vals < floors[:, None]] = 0.0
    cum = np.cumsum(probs, axis=1)
    last = (cum < (top_p * cum[:, -1])[:, None]).sum(axis=1)
    last = np.minimum(last, vals.shape[1] - 1)
    out: Floats = vals[np.arange(len(vals)), last]
    return np.where(top_p < 1.0, out, -np.inf).astype(np.float32)


def _nucleus_floor(z: Floats, floor: float, top_p: float) -> float:
    """The smallest scaled logit inside the top-p nucleus of the tokens at or above `floor`."""
    cand = z[z >= floor]
    target = top_p * float(np.exp(cand - cand.max()).sum())
    k = min(NUCLEUS_GUESS, len(cand))
    best = cand[cand >= np.partition(cand, len(cand) - k)[len(cand) - k]]
    for vals in (best, cand):
        vals = np.sort(vals)[::-1]
        cum = np.cumsum(np.exp(vals - vals[0]))
        if cum[-1] >= target or len(vals) == len(cand):
            return float(vals[min(int(np.searchsorted(cum, target)), len(vals) - 1)])
    raise AssertionError("unreachable")


@functools.cache
def _gumbel_table() -> Floats:
    """Fixed Gumbel noise; a row's noise is a window chosen by (seed, position)."""
    u = np.random.default_rng(0x5EED).random(GUMBEL_TABLE_SIZE)
    return (-np.log(-np.log(u))).astype(np.float32)


def gumbel_noise(keys: list[tuple[int, int]], n_vocab: int) -> Floats:
    """One row of Gumbel noise per (seed, position), over token ids 0..n_vocab-1."""
    table, starts = _noise_windows(keys, n_vocab)
    return np.stack([table[o : o + n_vocab] for o in starts.tolist()])


def gumbel_noise_at(
    keys: list[tuple[int, int]], ids: npt.NDArray[np.int64], n_vocab: int
) -> Floats:
    """The same noise as `gumbel_noise`, at the given token ids only (one row of ids per key)."""
    table, starts = _noise_windows(keys, n_vocab)
    noise: Floats = table[starts[:, None] + ids]
    return noise


def _noise_windows(
    keys: list[tuple[int, int]], n_vocab: int
) -> tuple[Floats, npt.NDArray[np.int64]]:
    table = _gumbel_table()
    if len(table) <= n_vocab:
        table = np.tile(table, n_vocab // len(table) + 2)
    span = len(table) - n_vocab
    starts = [_mix(seed * 0x1000193 + position) % span for seed, position in keys]
    return table, np.array(starts, dtype=np.int64)


def top_k_candidates(x: Floats, k: int) -> tuple[npt.NDArray[np.int64], Floats]:
    """Token ids and logits of a few blocks per row that surely hold the row's k best.

    The row is cut into blocks of CANDIDATE_BLOCK tokens. A block holding one of the k best
    has a maximum at least the k-th best value, and at most k blocks have such a maximum, so
    the k blocks with the largest maxima hold all of the k best. Everything is vectorised
    over the rows; no pass but the block maxima reads the whole vocabulary.
    """
    n_rows, n_vocab = x.shape
    n_blocks = -(-n_vocab // CANDIDATE_BLOCK)
    if n_blocks <= k:
        ids = np.broadcast_to(np.arange(n_vocab), (n_rows, n_vocab))
        return ids, x
    pad = n_blocks * CANDIDATE_BLOCK - n_vocab
    if pad:
        x = np.concatenate([x, np.full((n_rows, pad), -np.inf, dtype=x.dtype)], axis=1)
    blocks = x.reshape(n_rows, n_blocks, CANDIDATE_BLOCK)
    maxima = blocks[:, :, 0].copy()  # strided maxima: far faster than max(axis=2) on 16-wide rows
    for j in range(1, CANDIDATE_BLOCK):
        np.maximum(maxima, blocks[:, :, j], out=maxima)
    best = np.argpartition(maxima, n_blocks - k, axis=1)[:, n_blocks - k :]
    vals = np.take_along_axis(blocks, best[:, :, None], axis=1).reshape(n_rows, -1)
    ids = (best[:, :, None] * CANDIDATE_BLOCK + np.arange(CANDIDATE_BLOCK)).reshape(n_rows, -1)
    return np.minimum(ids, n_vocab - 1), vals  # padding ids carry -inf: never chosen


def _mix(x: int) -> int:
    """splitmix64's finaliser: spreads consecutive positions over the whole table."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)
