"""The compiled sampling kernels (batching/_sampling.c), called through ctypes.

ctypes releases the GIL for the length of each call. One call splits a step's rows between
the threads of a small pool in C (batching/_pool.c), while the event loop keeps serving HTTP.
"""

from __future__ import annotations

import ctypes
import functools
import sysconfig
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

# One row's parameters, laid out as the C struct lg_params.
PARAMS_DTYPE = np.dtype(
    [
        ("inv_temp", np.float32),
        ("top_p", np.float32),
        ("min_p", np.float32),
        ("top_k", np.int32),
        ("seed", np.uint64),
        ("position", np.uint64),
    ],
    align=True,
)
# One row's sparse edits (logit_bias and penalties), laid out as the C struct lg_edits.
EDITS_DTYPE = np.dtype(
    [
        ("bias_ids", np.uintp),
        ("bias_values", np.uintp),
        ("seen_ids", np.uintp),
        ("penalty_ids", np.uintp),
        ("counts", np.uintp),
        ("n_bias", np.int32),
        ("n_seen", np.int32),
        ("n_penalty", np.int32),
        ("repetition", np.float32),
        ("frequency", np.float32),
        ("presence", np.float32),
    ],
    align=True,
)
MIN_ROWS_PER_THREAD = 8  # below this a thread costs more than it saves
GUMBEL_TABLE_SIZE = 1 << 22  # 16 MB of noise; a draw reads a window of n_vocab of it

Pointers = npt.NDArray[np.uintp]
Params = npt.NDArray[np.void]
Tokens = npt.NDArray[np.int32]
Floats = npt.NDArray[np.float32]

_P = ctypes.c_void_p
_I32 = ctypes.c_int32


@functools.cache
def _library() -> ctypes.CDLL:
    """Load the compiled kernels once per process."""
    here = Path(__file__).parent
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    for path in [here / f"_sampling{suffix}", *sorted(here.glob("_sampling*.so"))]:
        if path.is_file():
            lib = ctypes.CDLL(str(path))
            lib.lg_scratch_bytes.argtypes = [_I32]
            lib.lg_scratch_bytes.restype = ctypes.c_int64
            lib.lg_pool_new.argtypes = [ctypes.c_int]
            lib.lg_pool_new.restype = _P
            lib.lg_pool_free.argtypes = [_P]
            lib.lg_pool_free.restype = None
            lib.lg_sample_parallel.argtypes = [_P, _I32, _I32, _I32, _P, _P, _P, _P]
            lib.lg_sample_parallel.argtypes += [ctypes.c_int64, _P, _P]
            lib.lg_sample_parallel.restype = None
            lib.lg_logprobs_parallel.argtypes = [_P, _I32, _I32, _I32, _P, _P, _I32, _P, _P, _P]
            lib.lg_logprobs_parallel.argtypes += [_P]
            lib.lg_logprobs_parallel.restype = None
            return lib
    raise ImportError(
        "the sampling kernels (batching/_sampling.c) are not compiled: "
        "run `python3 -m pip install -e .` or `python3 setup.py build_ext --inplace`"
    )


@functools.cache
def gumbel_table(n_vocab: int) -> Floats:
    """Fixed Gumbel noise: a draw's noise is a window of it chosen by (seed, position)."""
    size = max(GUMBEL_TABLE_SIZE, 4 * n_vocab)
    u = np.random.default_rng(0x5EED).random(size)
    table: Floats = (-np.log(-np.log(u))).astype(np.float32)
    return table


class Kernels:
    """Sampling and log-probabilities for many rows at once, split across a few threads."""

    def __init__(self, n_threads: int = 1) -> None:
        self._lib = _library()
        self.n_threads = max(1, n_threads)
        self._pool: int | None = self._lib.lg_pool_new(self.n_threads) or None
        self._scratch = np.empty(0, np.uint8)  # one buffer per thread, end to end
        self._n_vocab = 0
        self._lock = threading.Lock()  # one call at a time: the pool and scratch are shared

    def __del__(self) -> None:
        if hasattr(self, "_lock"):  # not when __init__ failed part way
            self.close()

    def sample(
        self, n_vocab: int, rows: Pointers, params: Params, edits: Params | None = None
    ) -> Tokens:
        """One token per row pointer (rows of n_vocab float32 logits), each with its params
        and, where given, its edits (the arrays they point to must outlive the call)."""
        out = np.empty(len(rows), np.int32)
        table = gumbel_table(n_vocab)
        with self._lock:
            self._lib.lg_sample_parallel(
                self._pool,
                self._parts(n_vocab, len(rows)),
                len(rows),
                n_vocab,
                rows.ctypes.data,
                params.ctypes.data,
                None if edits is None else edits.ctypes.data,
                table.ctypes.data,
                len(table),
                self._scratch.ctypes.data,
                out.ctypes.data,
            )
        return out

    def logprobs(
        self, n_vocab: int, rows: Pointers, tokens: Tokens, n_top: int
    ) -> tuple[Floats, Tokens, Floats]:
        """The log-softmax of each row at its token, and its n_top best (ids, logprobs)."""
        n = len(rows)
        token_lp = np.empty(n, np.float32)
        top_ids = np.zeros((n, max(n_top, 1)), np.int32)
        top_lp = np.zeros((n, max(n_top, 1)), np.float32)
        with self._lock:
            self._lib.lg_logprobs_parallel(
                self._pool,
                self._parts(n_vocab, n),
                n,
                n_vocab,
                rows.ctypes.data,
                tokens.ctypes.data,
                n_top,
                token_lp.ctypes.data,
                top_ids.ctypes.data,
                top_lp.ctypes.data,
                self._scratch.ctypes.data,
            )
        return token_lp, top_ids[:, :n_top], top_lp[:, :n_top]

    def close(self) -> None:
        """Stop the pool's threads; later calls run on the caller's thread alone."""
        with self._lock:
            if self._pool is not None:
                self._lib.lg_pool_free(self._pool)
                self._pool = None

    def _parts(self, n_vocab: int, n_rows: int) -> int:
        """How many threads take part in a call of n_rows; sizes the scratch memory for them."""
        if n_vocab != self._n_vocab:
            size = int(self._lib.lg_scratch_bytes(n_vocab))
            self._scratch = np.empty(size * self.n_threads, np.uint8)
            self._n_vocab = n_vocab
        return max(1, min(self.n_threads, n_rows // MIN_ROWS_PER_THREAD))
