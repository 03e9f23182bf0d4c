"""The compiled sampling kernels (batching/_sampling.c), called through ctypes.

ctypes releases the GIL for the length of each call, so the rows of a step can be split
between a few threads while the event loop keeps serving HTTP.
"""

from __future__ import annotations

import ctypes
import functools
import sysconfig
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
            lib.lg_sample.argtypes = [_I32, _I32, _P, _P, _P, _P, ctypes.c_int64, _P, _P]
            lib.lg_sample.restype = None
            lib.lg_logprobs.argtypes = [_I32, _I32, _P, _P, _I32, _P, _P, _P, _P]
            lib.lg_logprobs.restype = None
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
        self._pool = (
            ThreadPoolExecutor(self.n_threads - 1, thread_name_prefix="sampler")
            if self.n_threads > 1
            else None
        )
        self._scratch: list[npt.NDArray[np.uint8]] = []
        self._n_vocab = 0

    def sample(
        self, n_vocab: int, rows: Pointers, params: Params, edits: Params | None = None
    ) -> Tokens:
        """One token per row pointer (rows of n_vocab float32 logits), each with its params
        and, where given, its edits (the arrays they point to must outlive the call)."""
        out = np.empty(len(rows), np.int32)
        table = gumbel_table(n_vocab)

        def run(k: int, lo: int, hi: int) -> None:
            self._lib.lg_sample(
                hi - lo,
                n_vocab,
                rows.ctypes.data + 8 * lo,
                params.ctypes.data + PARAMS_DTYPE.itemsize * lo,
                None if edits is None else edits.ctypes.data + EDITS_DTYPE.itemsize * lo,
                table.ctypes.data,
                len(table),
                self._scratch[k].ctypes.data,
                out.ctypes.data + 4 * lo,
            )

        self._split(n_vocab, len(rows), run)
        return out

    def logprobs(
        self, n_vocab: int, rows: Pointers, tokens: Tokens, n_top: int
    ) -> tuple[Floats, Tokens, Floats]:
        """The log-softmax of each row at its token, and its n_top best (ids, logprobs)."""
        n = len(rows)
        token_lp = np.empty(n, np.float32)
        top_ids = np.zeros((n, max(n_top, 1)), np.int32)
        top_lp = np.zeros((n, max(n_top, 1)), np.float32)

        def run(k: int, lo: int, hi: int) -> None:
            self._lib.lg_logprobs(
                hi - lo,
                n_vocab,
                rows.ctypes.data + 8 * lo,
                tokens.ctypes.data + 4 * lo,
                n_top,
                token_lp.ctypes.data + 4 * lo,
                top_ids.ctypes.data + top_ids.strides[0] * lo,
                top_lp.ctypes.data + top_lp.strides[0] * lo,
                self._scratch[k].ctypes.data,
            )

        self._split(n_vocab, n, run)
        return token_lp, top_ids[:, :n_top], top_lp[:, :n_top]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _split(self, n_vocab: int, n_rows: int, run: Callable[[int, int, int], None]) -> None:
        """Run `run(k, lo, hi)` over contiguous row ranges: the first here, the rest in threads."""
        n_parts = max(1, min(self.n_threads, n_rows // MIN_ROWS_PER_THREAD))
        if n_vocab != self._n_vocab or len(self._scratch) < n_parts:
            size = int(self._lib.lg_scratch_bytes(n_vocab))
            self._scratch = [np.empty(size, np.uint8) for _ in range(self.n_threads)]
            self._n_vocab = n_vocab
        bounds = [n_rows * k // n_parts for k in range(n_parts + 1)]
        pool = self._pool
        futures = [
            pool.submit(run, k, bounds[k], bounds[k + 1])
            for k in range(1, n_parts)
            if pool is not None
        ]
        run(0, bounds[0], bounds[1])
        for future in futures:
            future.result()
