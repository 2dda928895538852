"""Corollary 1 (low-rank task vectors): spectra of ΔW and ΔV, what their leading directions are, and the cost.

Corollary 1 [paper]: for any task T there are rank-1 ΔW_LR, ΔV_LR with ‖ΔW_T − ΔW_LR‖_F ≤ Mε + 1/log M and
‖ΔV_T − ΔV_LR‖_F ≤ Θ(ε). The best rank-k approximation is the SVD truncation (Eckart–Young), which
``tvutils.editing.variants.low_rank`` applies; this module measures how much a truncation leaves out and what the kept
directions are, so a chapter can compare them with μ_T and with the irrelevant patterns (the bound itself:
``tvutils.taskvec.theorems.corollary1_w_bound``). ``boundary_band`` and ``agreement_within`` compare a
truncated task vector's success map with the full-rank one where a comparison can fail: next to the full-rank
map's boundary, not over the whole grid, most of which every truncation trivially gets right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..editing.task_vector import TaskVector


def singular_values(t: torch.Tensor) -> np.ndarray:
    """Singular values of a matrix (a tensor of ≥ 2 dims viewed as (rows, rest)), largest first."""
    if t.ndim < 2:
        raise ValueError(f"a spectrum needs a matrix, got a tensor of shape {tuple(t.shape)}")
    return torch.linalg.svdvals(t.reshape(t.shape[0], -1).double()).numpy()


def truncation_error(t: torch.Tensor, ks: Sequence[int]) -> np.ndarray:
    """‖Δ − Δ_rank-k‖_F for each k: by Eckart–Young, the root of the sum of the squared singular values past k."""
    s2 = singular_values(t) ** 2
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tail[k] = Σ_{j ≥ k} σ_j²
    return np.sqrt(np.array([tail[min(int(k), len(s2))] for k in ks]))


def leading_directions(t: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k singular triples of a matrix: left vectors (rows, k), singular values (k,), right vectors (k, cols).

    Signs are fixed so that each right vector's largest-magnitude entry is positive (SVD signs are arbitrary).
    """
    mat = t.reshape(t.shape[0], -1).double()
    U, S, Vh = torch.linalg.svd(mat, full_matrices=False)
    k = min(k, S.numel())
    U, S, Vh = U[:, :k], S[:k], Vh[:k]
    sign = torch.sign(Vh.gather(1, Vh.abs().argmax(1, keepdim=True))).squeeze(1)  # (k,)
    return (U * sign).numpy(), S.numpy(), (Vh * sign[:, None]).numpy()


def direction_alignment(
    vectors: np.ndarray, references: Mapping[str, torch.Tensor | np.ndarray]
) -> dict[str, np.ndarray]:
    """|cos| between each row of ``vectors`` (k, d) and each named reference direction (d,) → name: (k,)."""
    vec = np.asarray(vectors, dtype=float)
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    out = {}
    for name, ref in references.items():
        r = np.asarray(ref, dtype=float).ravel()
        if r.shape[0] != vec.shape[1]:
            raise ValueError(f"reference {name!r} has {r.shape[0]} entries, the vectors {vec.shape[1]}")
        out[name] = np.abs(vec @ (r / np.linalg.norm(r)))
    return out


def irrelevant_span_fraction(vectors: np.ndarray, patterns: torch.Tensor | np.ndarray) -> np.ndarray:
    """Fraction of each row's squared norm inside the span of the irrelevant patterns (orthonormal rows). (k,)."""
    vec = np.asarray(vectors, dtype=float)
    pat = np.asarray(patterns, dtype=float)
    proj = vec @ pat.T  # (k, M)
    return (proj**2).sum(1) / (vec**2).sum(1)


def stored_numbers(tv: TaskVector, rank: int | None = None) -> int:
    """Numbers stored for a task vector: every entry (rank=None), or per matrix rank·(rows + cols) factors.

    A rank-k matrix is stored as its two factors U_k·diag(σ) (rows × k) and V_kᵀ (k × cols); a matrix whose
    factors would be larger than itself is stored dense. Vectors are always stored dense.
    """
    total = 0
    for value in tv.deltas.values():
        if rank is None or value.ndim < 2:
            total += value.numel()
            continue
        rows, cols = value.shape[0], math.prod(value.shape[1:])
        total += min(rank * (rows + cols), rows * cols)
    return total


def boundary_band(outcome: np.ndarray) -> np.ndarray:
    """Cells of a 2-D outcome map next to (4-neighbour of) a cell with the other outcome: where its boundary runs.

    Most cells of a success map lie far from any boundary, where every truncation trivially agrees; comparing two
    maps on this band asks whether the boundary itself moved.
    """
    s = np.asarray(outcome, dtype=bool)
    if s.ndim != 2:
        raise ValueError(f"an outcome map must be 2-D, got shape {s.shape}")
    band = np.zeros_like(s)
    rows, cols = s[1:] != s[:-1], s[:, 1:] != s[:, :-1]
    band[1:] |= rows
    band[:-1] |= rows
    band[:, 1:] |= cols
    band[:, :-1] |= cols
    return band


def agreement_within(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Fraction of the cells in ``where`` on which two outcome maps agree (NaN if ``where`` is empty)."""
    a, b, w = (np.asarray(x, dtype=bool) for x in (a, b, where))
    if not a.shape == b.shape == w.shape:
        raise ValueError(f"shapes differ: {a.shape}, {b.shape}, {w.shape}")
    return float((a == b)[w].mean()) if w.any() else float("nan")
