"""Compiled single passes for ``--keep-entries`` (numba): the k-th largest magnitude's bracket, and the kept sum.

Kept apart so that ``import tvutils`` and the plain merge do not import numba; compiled once per machine and
cached on disk (``cache=True``; ``compile_kernels`` compiles or loads them at once); they release the GIL
(``nogil=True``), so that the merge's writer thread writes the previous tensor meanwhile. Each loop is one pass
over memory where the same work in torch takes five or six (abs, comparisons, counts, a mask, a masked
product), and the variants are memory-bound. The loops are written without branches on the data (a select, a
conditional increment), so that they do not stall on mispredictions
and the kept sum compiles to vector instructions.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy", nogil=True)
def bracket(flat: np.ndarray, lo: float, hi: float, cand_idx: np.ndarray, cand_val: np.ndarray) -> tuple[int, int]:
    """Count |x| > hi; store the index and |x| of each lo ≤ |x| ≤ hi, in order (while room is left); return both
    counts (the second may exceed the room: then only the first ``room`` were stored)."""
    above = 0
    n_cand = 0
    room = cand_idx.size
    if room == 0:
        for i in range(flat.size):
            m = abs(flat[i])
            above += m > hi
            n_cand += (m >= lo) & (m <= hi)
        return above, n_cand
    last = room - 1
    for i in range(flat.size):
        m = abs(flat[i])
        above += m > hi
        j = min(n_cand, last)  # written every time, kept only when counted (no branch on the data)
        cand_idx[j] = i
        cand_val[j] = m
        n_cand += (m >= lo) & (m <= hi)
    if n_cand >= room:  # the last slot was overwritten after the room ran out: recount it as not stored
        n_cand = max(n_cand, room + 1)
    return above, n_cand


@njit(cache=True, error_model="numpy", nogil=True)
def accumulate_kept(flat: np.ndarray, thr: float, ties: np.ndarray, lam: float, acc: np.ndarray, first: bool) -> None:
    """acc (=, if first, else +=) λ·x for the x kept: |x| > thr, and the entries at the indices ``ties``
    (whose |x| = thr); the others add 0 (or set 0, if first)."""
    if first:
        for i in range(flat.size):
            x = flat[i]
            acc[i] = lam * x if abs(x) > thr else 0.0
    else:
        for i in range(flat.size):
            x = flat[i]
            acc[i] += lam * x if abs(x) > thr else 0.0
    for j in range(ties.size):
        i = ties[j]
        if first:
            acc[i] = lam * flat[i]
        else:
            acc[i] += lam * flat[i]


def compile_kernels(dtypes: tuple[type, ...] = (np.float32, np.float64)) -> None:
    """Compile both kernels (or load them from numba's cache) for contiguous arrays of these float dtypes, now:
    the merge does it before its output exists, with signals held back (``publish.deferred_signals``)."""
    for dt in dtypes:
        x = np.zeros(4, dtype=dt)
        bracket(x, 0.0, 1.0, np.empty(2, dtype=np.int64), np.empty(2, dtype=dt))
        accumulate_kept(x, 0.0, np.empty(0, dtype=np.int64), 1.0, np.zeros(4, dtype=dt), True)
