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

from collections.abc import Sequence

import numpy as np
import torch

from .fast import check_fraction, kept_count, kth_largest_selection, largest_rows, rank_k_factors
from .task_vector import TaskVector


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
        mask = torch.from_numpy(largest_rows(_numpy(as_matrix(t).norm(dim=1)), keep))
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


def rank_k_fast(t: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """A rank-k approximation of t viewed as (rows, rest): exactly ``rank_k`` where k + 10 ≥ the smaller dim.

    Otherwise the randomized product of ``fast.rank_k_factors`` (numpy, on the CPU): deterministic for a seed;
    close to, not equal to, the best rank-k approximation: within 1 % of its Frobenius error on a flat (Gaussian)
    spectrum and equal to it to float precision when the spectrum decays (tests/editing/test_variants.py
    measures both).
    """
    left, right = rank_k_factors(_numpy(as_matrix(t)), k, seed)
    return torch.from_numpy(left @ right).reshape(t.shape).to(t.device, t.dtype)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """t on the CPU as a numpy array, in float32 (float64 for float64)."""
    return t.detach().to("cpu", torch.float64 if t.dtype == torch.float64 else torch.float32).contiguous().numpy()


def kth_largest_magnitude(t: torch.Tensor, k: int) -> tuple[float, int]:
    """(the k-th largest |t|, how many entries are larger), exactly: ``fast.kth_largest_selection`` on t."""
    thr, above, _ = kth_largest_selection(_numpy(t.reshape(-1)), k)
    return thr, above


def entry_mask_fast(t: torch.Tensor, keep: float) -> torch.Tensor:
    """``entry_mask(t, keep)``, equal to it, by selection (``kth_largest_magnitude``) instead of a sort."""
    flat = t.reshape(-1)
    n = flat.numel()
    k = kept_count(keep, n)
    if k in (0, n):
        return torch.full(t.shape, k == n, dtype=torch.bool)
    thr, _, ties = kth_largest_selection(_numpy(flat), k)
    mask = flat.abs() > thr
    mask[torch.from_numpy(ties).to(mask.device)] = True  # the first positions among the ties, as a stable sort
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
