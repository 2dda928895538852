"""Variants of a task vector: low rank (Corollary 1) and sparse (Corollary 2, TIES-style trimming, DARE).

One convention for every variant: **``keep`` is the fraction kept**, a number in [0, 1]; of n rows (or
entries) the variant keeps ⌈keep·n⌉ (to within 1e-9, so that keep = 1 − p keeps exactly n − ⌊p·n⌋ for any
fraction p pruned). Ties are broken by position (stable sorts), so every variant is deterministic.

Two levels:

* on one tensor: ``rank_k``, ``row_mask``, ``entry_mask``, and the two that ``python -m tvutils merge``
  applies to each difference Aᵢ − BASE of a whole checkpoint, where speed matters: ``entry_mask_fast`` (the
  same mask as ``entry_mask``, by selection instead of a sort) and ``rank_k_fast`` (``rank_k`` where the
  matrix is small, a seeded randomized subspace iteration otherwise);
* on a ``TaskVector``, to the tensors named by ``keys`` (default: every tensor the variant applies to; the
  others are kept as they are): ``low_rank``, ``keep_rows`` (largest or random rows), ``keep_entries``
  (largest entries: TIES-style trimming {cite}`yadav2023ties`) and ``dare`` (random entries, rescaled by
  1/keep: DARE {cite}`yu2024dare`, whose drop rate is p = 1 − keep).

Rows are the first dimension of a tensor of ≥ 2 dims (output units); vectors (biases, norms) have no rank
and no rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .task_vector import TaskVector

_TOL = 1e-9


def kept_count(keep: float, n: int) -> int:
    """How many of n items a fraction ``keep`` keeps: ⌈keep·n⌉, to within 1e-9."""
    check_fraction(keep)
    return min(n, math.ceil(keep * n - _TOL))


def check_fraction(keep: float) -> None:
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"the fraction to keep must be in [0, 1], got {keep}")


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A tensor of ≥ 2 dims viewed as (first dim, rest): rows are output units."""
    return t.reshape(t.shape[0], -1)


# ---- one tensor ----------------------------------------------------------------------------------------------
def rank_k(t: torch.Tensor, k: int) -> torch.Tensor:
    """Best rank-k approximation (Eckart–Young, by SVD in float64) of a tensor viewed as (rows, rest)."""
    if k < 1:
        raise ValueError(f"rank k must be ≥ 1, got {k}")
    U, S, Vh = torch.linalg.svd(as_matrix(t).double(), full_matrices=False)
    k = min(k, S.numel())
    return ((U[:, :k] * S[:k]) @ Vh[:k]).reshape(t.shape).to(t.dtype)


def row_mask(t: torch.Tensor, keep: float, how: str = "largest", seed: int = 0) -> torch.Tensor:
    """Boolean mask over the rows of t (first dim): the ⌈keep·rows⌉ rows kept.

    ``how="largest"``: the rows of largest L2 norm; ``how="random"``: the last ⌈keep·rows⌉ of a random
    permutation drawn from ``seed`` (so the first ones, the rows pruned, are the same for any keep).
    """
    if t.ndim < 2:
        raise ValueError(f"a tensor of shape {tuple(t.shape)} has no rows")
    rows = t.shape[0]
    n_keep = kept_count(keep, rows)
    mask = torch.zeros(rows, dtype=torch.bool)
    if how == "largest":
        mask[torch.argsort(as_matrix(t).norm(dim=1), descending=True, stable=True)[:n_keep]] = True
    elif how == "random":
        mask[torch.randperm(rows, generator=torch.Generator().manual_seed(seed))[rows - n_keep :]] = True
    else:
        raise ValueError(f"how must be 'largest' or 'random', got {how!r}")
    return mask


def entry_mask(t: torch.Tensor, keep: float) -> torch.Tensor:
    """Boolean mask of t's shape: True for the ⌈keep·numel⌉ entries largest in magnitude."""
    flat = t.reshape(-1).abs()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.argsort(flat, descending=True, stable=True)[: kept_count(keep, flat.numel())]] = True
    return mask.reshape(t.shape)


RANK_OVERSAMPLE = 10
RANK_POWER_ITERATIONS = 1


def sketch_matrix(rows: int, cols: int, k: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor | None:
    """The seeded Gaussian test matrix G (short side × (k + 10)) with which ``rank_k_factors`` sketches a
    (rows, cols) matrix M as Y = M·G (rows ≥ cols) or Mᵀ·G (rows < cols); None where it takes the exact SVD.
    A caller that has M in pieces (row blocks) may form Y itself and pass it as ``sketch``."""
    q = k + RANK_OVERSAMPLE
    if q >= min(rows, cols):
        return None
    return torch.randn(min(rows, cols), q, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rank_k_factors(
    t: torch.Tensor, k: int, seed: int = 0, sketch: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (left: rows × k, right: k × rest) of ``rank_k_fast(t, k)``, whose product is that approximation.

    Where k + 10 ≥ the smaller dimension: the exact truncated SVD (as ``rank_k``, in float64). Otherwise
    randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4): a seeded Gaussian test matrix of
    k + 10 columns (``sketch_matrix``), one power iteration re-orthonormalised by QR, in float32 (float64 for
    float64 tensors), then the exact SVD of the small projected matrix: O(rows·cols·k) instead of a full SVD's
    O(rows·cols·min). ``sketch``: the product Y of the matrix and its test matrix, formed by the caller.
    """
    if k < 1:
        raise ValueError(f"rank k must be ≥ 1, got {k}")
    m = as_matrix(t)
    rows, cols = m.shape
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    g = sketch_matrix(rows, cols, k, dtype, seed) if sketch is None else None
    if sketch is None and g is None:
        u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
        k = min(k, s.numel())
        return u[:, :k] * s[:k], vh[:k]
    m = m.to(dtype)
    flip = rows < cols
    if flip:
        m = m.T
    y = m @ g if sketch is None else sketch
    for _ in range(RANK_POWER_ITERATIONS):
        y = torch.linalg.qr(y).Q
        y = m @ torch.linalg.qr(m.T @ y).Q
    basis = torch.linalg.qr(y).Q  # (long side, q)
    u, s, vh = torch.linalg.svd((basis.T @ m).double(), full_matrices=False)
    left, right = basis @ (u[:, :k] * s[:k]).to(dtype), vh[:k].to(dtype)
    return (right.T, left.T) if flip else (left, right)


def rank_k_fast(t: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """A rank-k approximation of t viewed as (rows, rest): exactly ``rank_k`` where k + 10 ≥ the smaller dim.

    Otherwise the randomized product of ``rank_k_factors``: deterministic for a seed; close to, not equal to,
    the best rank-k approximation: within 1 % of its Frobenius error on a flat (Gaussian) spectrum and equal to
    it to float precision when the spectrum decays (tests/editing/test_variants.py measures both).
    """
    left, right = rank_k_factors(t, k, seed)
    return (left @ right).reshape(t.shape).to(t.dtype)


SAMPLE = 16384  # magnitudes sampled to bracket the k-th largest


def sample_positions(n: int) -> slice:
    """The flat positions whose magnitudes bracket the k-th largest of n entries (a stride of n // SAMPLE, from
    its middle): ``kth_largest_selection`` reads them, or takes them from a caller that gathered them already."""
    stride = n // SAMPLE
    return slice(stride // 2, n, stride)


def kth_largest_selection(
    t: torch.Tensor, k: int, sample: torch.Tensor | None = None
) -> tuple[float, int, torch.Tensor]:
    """(thr, above, ties) for 1 ≤ k ≤ numel, exactly: the k-th largest |t|, how many entries are larger, and the
    ascending flat indices of the first k − above entries with |t| = thr. {|t| > thr} and ``ties`` are the k
    entries a stable sort by magnitude keeps (``entry_mask``); fast on large tensors.

    A strided sample of 16,384 magnitudes (``sample_positions``; ``sample``: those entries of t, gathered by
    the caller) brackets the k-th (6 standard deviations of the sample's rank either side); one compiled pass
    (``_select_kernel.bracket``) counts the entries above the bracket and keeps those inside it, among which
    the k-th is selected. Where the bracket misses (rare; ties, adversarial layouts) the whole tensor is
    selected from instead: the result is exact either way.
    """
    flat = t.reshape(-1)
    n = flat.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if n > 4 * SAMPLE and flat.dtype in (torch.float32, torch.float64) and flat.is_contiguous():
        from ._select_kernel import bracket

        mags = (flat[sample_positions(n)] if sample is None else sample).abs().numpy()
        size = mags.size
        j = k / n * size
        margin = 6 * math.sqrt(max(j * (1 - k / n), 1.0)) + 16
        # the sample's (j − margin)-th and (j + margin)-th largest (partial sorts: ascending position size − 1 − i)
        top, bottom = size - 1 - int(j - margin), size - 1 - int(j + margin)
        order = np.partition(mags, [i for i in (bottom, top) if 0 <= i < size]) if size else mags
        hi = float(order[top]) if j - margin >= 0 else math.inf
        lo = float(order[bottom]) if j + margin < size else -1.0
        room = int((2 * margin + 2) / size * n * 1.5) + 4096
        idx = torch.empty(room, dtype=torch.int64)
        val = torch.empty(room, dtype=flat.dtype)
        above, n_cand = bracket(flat.numpy(), lo, hi, idx.numpy(), val.numpy())
        if n_cand <= room and above < k <= above + n_cand:
            cand = val[:n_cand]
            thr = cand.kthvalue(n_cand - (k - above) + 1).values
            above += int((cand > thr).sum())
            return float(thr), above, idx[:n_cand][cand == thr][: k - above].clone()
    mag = flat.abs()
    thr = mag.kthvalue(n - k + 1).values
    above = int((mag > thr).sum())
    return float(thr), above, (mag == thr).nonzero().reshape(-1)[: k - above].clone()


def kth_largest_magnitude(t: torch.Tensor, k: int) -> tuple[float, int]:
    """(the k-th largest |t|, how many entries are larger): ``kth_largest_selection`` without the ties."""
    thr, above, _ = kth_largest_selection(t, k)
    return thr, above


def entry_mask_fast(t: torch.Tensor, keep: float) -> torch.Tensor:
    """``entry_mask(t, keep)``, equal to it, by selection (``kth_largest_magnitude``) instead of a sort."""
    flat = t.reshape(-1)
    n = flat.numel()
    k = kept_count(keep, n)
    if k in (0, n):
        return torch.full(t.shape, k == n, dtype=torch.bool)
    thr, _, ties = kth_largest_selection(flat, k)
    mask = flat.abs() > thr
    mask[ties] = True  # the first positions among the ties, as a stable sort takes them
    return mask.reshape(t.shape)


def _rows_only(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return t * mask.reshape(-1, *([1] * (t.ndim - 1))).to(t.dtype)


# ---- a task vector -------------------------------------------------------------------------------------------
def _selected(tv: TaskVector, keys: Sequence[str] | None, matrices_only: bool) -> list[str]:
    """The keys a variant edits: those given (each must exist, and be a matrix where rows are needed), or all."""
    if keys is None:
        return [k for k, v in tv.deltas.items() if v.ndim >= 2 or not matrices_only]
    keys = list(keys)
    missing = [k for k in keys if k not in tv.deltas]
    if missing:
        raise ValueError(f"key(s) {missing} not in the task vector; it has {tv.keys()}")
    if matrices_only:
        vectors = [k for k in keys if tv.deltas[k].ndim < 2]
        if vectors:
            raise ValueError(f"key(s) {vectors} have no rows (shapes {[tuple(tv.deltas[k].shape) for k in vectors]})")
    return keys


def _replace(tv: TaskVector, new: dict[str, torch.Tensor]) -> TaskVector:
    return TaskVector({k: new.get(k, v) for k, v in tv.deltas.items()}, tv.frozen)


def low_rank(tv: TaskVector, k: int, keys: Sequence[str] | None = None) -> TaskVector:
    """Each selected matrix truncated to its best rank-k approximation (default: every matrix)."""
    return _replace(tv, {key: rank_k(tv.deltas[key], k) for key in _selected(tv, keys, matrices_only=True)})


def keep_rows(
    tv: TaskVector, keep: float, keys: Sequence[str] | None = None, how: str = "largest", seed: int = 0
) -> TaskVector:
    """Keep ⌈keep·rows⌉ rows of each selected matrix (the largest, or random ones), zero the others."""
    return _replace(
        tv,
        {k: _rows_only(tv.deltas[k], row_mask(tv.deltas[k], keep, how, seed)) for k in _selected(tv, keys, True)},
    )


def keep_entries(tv: TaskVector, keep: float, keys: Sequence[str] | None = None) -> TaskVector:
    """TIES-style trimming: keep the ⌈keep·numel⌉ entries largest in magnitude of each selected tensor."""
    return _replace(
        tv,
        {k: tv.deltas[k] * entry_mask(tv.deltas[k], keep).to(tv.deltas[k].dtype) for k in _selected(tv, keys, False)},
    )


def dare(tv: TaskVector, keep: float, seed: int, keys: Sequence[str] | None = None) -> TaskVector:
    """DARE: keep each entry of the selected tensors with probability ``keep`` and rescale it by 1/keep.

    An entry is dropped where a uniform draw is below 1 − keep (DARE's drop rate). The rescaling keeps every
    entry's expectation; keep = 0 drops everything (no rescaling is possible).
    """
    check_fraction(keep)
    gen = torch.Generator().manual_seed(seed)
    scale = 0.0 if keep <= 0.0 else 1.0 / keep
    new = {}
    for key in _selected(tv, keys, matrices_only=False):
        t = tv.deltas[key]
        kept = torch.rand(t.shape, generator=gen) >= 1.0 - keep
        new[key] = t * kept.to(t.dtype) * scale
    return _replace(tv, new)
