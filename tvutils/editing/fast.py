"""The variants' fast kernels on numpy arrays, without torch: what ``python -m tvutils merge`` applies to each
difference Aᵢ − BASE of a checkpoint (``--rank``, ``--keep-rows``, ``--keep-entries``).

``tvutils.editing.variants`` holds the variants of a task vector (torch tensors) and calls these for its fast
forms (``rank_k_fast``, ``entry_mask_fast``, the largest rows of ``row_mask``), so that both give one result.
Kept free of torch because ``import torch`` costs a second or two, as long as a whole merge of a 1 GB model.

* ``kept_count``: of n items, a fraction ``keep`` keeps ⌈keep·n⌉ (to within 1e-9).
* ``rank_k_factors``: factors of a rank-k approximation, by the exact SVD for small matrices and seeded
  randomized subspace iteration otherwise (``sketch_matrix`` is its test matrix).
* ``kth_largest_selection``: the k-th largest magnitude and the ties a stable sort would keep, exactly, in one
  compiled pass (``_select_kernel``) around a sampled bracket (``sample_positions``).
* ``largest_rows``: the rows of largest norm, ties broken by position.
"""

from __future__ import annotations

import math

import numpy as np

_TOL = 1e-9


def check_fraction(keep: float) -> None:
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"the fraction to keep must be in [0, 1], got {keep}")


def kept_count(keep: float, n: int) -> int:
    """How many of n items a fraction ``keep`` keeps: ⌈keep·n⌉, to within 1e-9."""
    check_fraction(keep)
    return min(n, math.ceil(keep * n - _TOL))


def largest_rows(norms: np.ndarray, keep: float) -> np.ndarray:
    """Boolean mask over rows: True for the ⌈keep·rows⌉ of largest norm (ties: the first rows, as a stable sort)."""
    mask = np.zeros(norms.size, dtype=bool)
    mask[np.argsort(-norms, kind="stable")[: kept_count(keep, norms.size)]] = True
    return mask


# ---- rank k ----------------------------------------------------------------------------------------------------
RANK_OVERSAMPLE = 10
RANK_POWER_ITERATIONS = 1


def _work(dtype: np.dtype) -> type:
    return np.float64 if dtype == np.float64 else np.float32


def sketch_matrix(rows: int, cols: int, k: int, dtype: type = np.float32, seed: int = 0) -> np.ndarray | None:
    """The seeded Gaussian test matrix G (short side × (k + 10)) with which ``rank_k_factors`` sketches a
    (rows, cols) matrix M as Y = M·G (rows ≥ cols) or Mᵀ·G (rows < cols); None where it takes the exact SVD.
    A caller that has M in pieces (row blocks) may form Y itself and pass it as ``sketch``."""
    q = k + RANK_OVERSAMPLE
    if q >= min(rows, cols):
        return None
    return np.random.default_rng(seed).standard_normal((min(rows, cols), q), dtype=np.float32).astype(dtype)


def rank_k_factors(
    m: np.ndarray, k: int, seed: int = 0, sketch: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Factors (left: rows × k, right: k × cols) of a rank-k approximation of the matrix m.

    Where k + 10 ≥ the smaller dimension: the exact truncated SVD (in float64), the best approximation. Otherwise
    randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4): a seeded Gaussian test matrix of
    k + 10 columns (``sketch_matrix``), one power iteration re-orthonormalised by QR, in float32 (float64 for
    float64 matrices), then the exact SVD of the small projected matrix: O(rows·cols·k) instead of a full SVD's
    O(rows·cols·min). ``sketch``: the product Y of the matrix and its test matrix, formed by the caller.
    """
    if k < 1:
        raise ValueError(f"rank k must be ≥ 1, got {k}")
    if m.ndim != 2:
        raise ValueError(f"a matrix is needed, got shape {m.shape}")
    rows, cols = m.shape
    dtype = _work(m.dtype)
    g = sketch_matrix(rows, cols, k, dtype, seed) if sketch is None else None
    if sketch is None and g is None:
        u, s, vh = np.linalg.svd(m.astype(np.float64), full_matrices=False)
        k = min(k, s.size)
        return u[:, :k] * s[:k], vh[:k]
    m = m.astype(dtype, copy=False)
    flip = rows < cols
    if flip:
        m = m.T
    y = m @ g if sketch is None else sketch
    for _ in range(RANK_POWER_ITERATIONS):
        y = np.linalg.qr(y)[0]
        y = m @ np.linalg.qr(m.T @ y)[0]
    basis = np.linalg.qr(y)[0]  # (long side, q)
    u, s, vh = np.linalg.svd((basis.T @ m).astype(np.float64), full_matrices=False)
    left, right = basis @ (u[:, :k] * s[:k]).astype(dtype), vh[:k].astype(dtype)
    return (right.T, left.T) if flip else (left, right)


# ---- the k-th largest magnitude --------------------------------------------------------------------------------
SAMPLE = 16384  # magnitudes sampled to bracket the k-th largest


def sample_positions(n: int) -> slice:
    """The flat positions whose magnitudes bracket the k-th largest of n entries (a stride of n // SAMPLE, from
    its middle): ``kth_largest_selection`` reads them, or takes them from a caller that gathered them already."""
    stride = n // SAMPLE
    return slice(stride // 2, n, stride)


def kth_largest_selection(flat: np.ndarray, k: int, sample: np.ndarray | None = None) -> tuple[float, int, np.ndarray]:
    """(thr, above, ties) for 1 ≤ k ≤ size, exactly: the k-th largest |x|, how many entries are larger, and the
    ascending flat indices of the first k − above entries with |x| = thr. {|x| > thr} and ``ties`` are the k
    entries a stable sort by magnitude keeps; fast on large arrays.

    A strided sample of 16,384 magnitudes (``sample_positions``; ``sample``: those entries, gathered by the
    caller) brackets the k-th (6 standard deviations of the sample's rank either side); one compiled pass
    (``_select_kernel.bracket``) counts the entries above the bracket and keeps those inside it, among which
    the k-th is selected. Where the bracket misses (rare; ties, adversarial layouts) the whole array is
    selected from instead: the result is exact either way.
    """
    flat = flat.reshape(-1)
    n = flat.size
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if n > 4 * SAMPLE and flat.dtype in (np.float32, np.float64) and flat.flags.c_contiguous:
        from ._select_kernel import bracket

        mags = np.abs(flat[sample_positions(n)] if sample is None else sample)
        size = mags.size
        j = k / n * size
        margin = 6 * math.sqrt(max(j * (1 - k / n), 1.0)) + 16
        # the sample's (j − margin)-th and (j + margin)-th largest (partial sorts: ascending position size − 1 − i)
        top, bottom = size - 1 - int(j - margin), size - 1 - int(j + margin)
        order = np.partition(mags, [i for i in (bottom, top) if 0 <= i < size]) if size else mags
        hi = float(order[top]) if j - margin >= 0 else math.inf
        lo = float(order[bottom]) if j + margin < size else -1.0
        room = int((2 * margin + 2) / size * n * 1.5) + 4096
        idx = np.empty(room, dtype=np.int64)
        val = np.empty(room, dtype=flat.dtype)
        above, n_cand = bracket(flat, lo, hi, idx, val)
        if n_cand <= room and above < k <= above + n_cand:
            cand = val[:n_cand]
            at = n_cand - (k - above)  # the k-th largest of all is this smallest of the candidates (from 0)
            thr = np.partition(cand, at)[at]
            above += int(np.count_nonzero(cand > thr))
            return float(thr), above, idx[:n_cand][cand == thr][: k - above].copy()
    mag = np.abs(flat)
    thr = np.partition(mag, n - k)[n - k]
    above = int(np.count_nonzero(mag > thr))
    return float(thr), above, np.flatnonzero(mag == thr)[: k - above]
