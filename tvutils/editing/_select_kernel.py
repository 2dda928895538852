"""Compiled single passes for ``--keep-entries`` (numba): the k-th largest magnitude's bracket, and the kept sum.

Kept apart so that ``import tvutils`` and the plain merge do not import numba; compiled once per machine and
cached on disk (``cache=True``). Each loop is one pass over memory where the same work in torch takes five or six
(abs, comparisons, counts, a mask, a masked product), and the variants are memory-bound.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def bracket(flat: np.ndarray, lo: float, hi: float, cand_idx: np.ndarray, cand_val: np.ndarray) -> tuple[int, int]:
    """Count |x| > hi; store the index and |x| of each lo ≤ |x| ≤ hi (while room is left); return both counts."""
    above = 0
    n_cand = 0
    room = cand_idx.size
    for i in range(flat.size):
        m = abs(flat[i])
        if m > hi:
            above += 1
        elif m >= lo:
            if n_cand < room:
                cand_idx[n_cand] = i
                cand_val[n_cand] = m
            n_cand += 1
    return above, n_cand


@njit(cache=True, error_model="numpy")
def accumulate_kept(flat: np.ndarray, thr: float, ties: int, lam: float, acc: np.ndarray, first: bool) -> int:
    """acc (=, if first, else +=) λ·x for the x kept: |x| > thr, and the first ``ties`` with |x| = thr."""
    for i in range(flat.size):
        x = flat[i]
        m = abs(x)
        keep = m > thr
        if not keep and m == thr and ties > 0:
            keep = True
            ties -= 1
        v = lam * x if keep else 0.0
        if first:
            acc[i] = v
        else:
            acc[i] += v
    return ties
