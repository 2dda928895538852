"""Where the observed success lies: scores of a predicted region against the measured one, the edges of the
success region on a grid, and the constants and thresholds fitted to them.

Success masks come from ``tvutils.taskvec.theorems`` (``addition_success``, ``negation_success``, or a loss
compared with Θ(ε)); a constant or a threshold fitted here on one seed is to be scored on others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .theorems import orthant


# ---- scoring a predicted region -------------------------------------------------------------------------------
def agreement(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Fraction of cells inside the predicted region where the observed outcome is success (NaN if empty)."""
    predicted = np.asarray(predicted, dtype=bool)
    if predicted.shape != np.shape(observed):
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, observed {np.shape(observed)}")
    if not predicted.any():
        return float("nan")
    return float(np.asarray(observed, dtype=bool)[predicted].mean())


def balanced_accuracy(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates of a predicted mask against an observed one."""
    p, o = np.asarray(predicted, dtype=bool), np.asarray(observed, dtype=bool)
    if p.shape != o.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {o.shape}")
    rates = [float(p[o].mean()) if o.any() else None, float((~p[~o]).mean()) if (~o).any() else None]
    return float(np.mean([r for r in rates if r is not None]))


# ---- edges of the success region --------------------------------------------------------------------------------
def lowest_success(success: np.ndarray, lambdas: Sequence[float]) -> np.ndarray:
    """Per row (α), the smallest λ whose cell succeeds; NaN where none does. (…, L) → (…)."""
    success = np.asarray(success, dtype=bool)
    lambdas = np.asarray(lambdas, dtype=float)
    order = np.argsort(lambdas)
    s = success[..., order]
    first = np.argmax(s, axis=-1)
    return np.where(s.any(axis=-1), lambdas[order][first], np.nan)


def walk_down(success: Sequence[bool] | np.ndarray, start: int) -> int | None:
    """From index ``start`` of a row of outcomes, step to lower indices while the cells succeed: the last index
    reached, or None when the start itself fails."""
    row = np.asarray(success, dtype=bool)
    if not row[start]:
        return None
    j = start
    while j > 0 and row[j - 1]:
        j -= 1
    return j


def lower_limit(success: np.ndarray, lambdas: Sequence[float], start: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per row, walk down from λ = ``start`` while cells succeed: the last λ reached (NaN if ``start`` fails).

    Returns (limit, clipped): ``clipped`` is True where the run reaches the grid's smallest λ, so the true
    limit lies at or below it. (…, L) → (…), (…).
    """
    success = np.asarray(success, dtype=bool)
    lambdas = np.asarray(lambdas, dtype=float)
    order = np.argsort(lambdas)
    lam_sorted, s = lambdas[order], success[..., order]
    j0 = int(np.argmin(np.abs(lam_sorted - start)))
    if abs(lam_sorted[j0] - start) > 1e-9:
        raise ValueError(f"λ = {start} is not on the grid")
    flat = s.reshape(-1, s.shape[-1])
    limit, clipped = np.full(len(flat), np.nan), np.zeros(len(flat), dtype=bool)
    for r, row in enumerate(flat):
        j = walk_down(row, j0)
        if j is not None:
            limit[r], clipped[r] = lam_sorted[j], j == 0
    return limit.reshape(s.shape[:-1]), clipped.reshape(s.shape[:-1])


def lower_edge(success: np.ndarray, lam1: ArrayLike) -> np.ndarray:
    """For each column (λ₂), the smallest λ₁ from which every larger λ₁ succeeds; NaN if the top cell fails.

    ``success`` has shape (len(λ₁), len(λ₂)) with λ₁ ascending along rows. → (len(λ₂),).
    """
    s = np.asarray(success, dtype=bool)
    lam1 = np.asarray(lam1, dtype=float)
    if s.shape[0] != len(lam1) or np.any(np.diff(lam1) <= 0):
        raise ValueError("success must have one row per λ₁, with λ₁ ascending")
    out = np.full(s.shape[1], np.nan)
    for j in range(s.shape[1]):
        i = walk_down(s[:, j], len(lam1) - 1)
        if i is not None:
            out[j] = lam1[i]
    return out


def largest_constant(alpha: Sequence[float], limit: Sequence[float], clipped: Sequence[bool] | None = None) -> float:
    """The largest C with −C/α² ≥ the observed lower limit at every α < 0: C = min over α of |limit|·α².

    Rows whose limit was clipped by the grid only bound C from below and are skipped; α = 0 and NaN limits
    (no success even at the start) are skipped too. NaN if nothing is left.
    """
    a, lim = np.asarray(alpha, dtype=float).ravel(), np.asarray(limit, dtype=float).ravel()
    clip = np.zeros_like(a, dtype=bool) if clipped is None else np.asarray(clipped, dtype=bool).ravel()
    keep = (a < 0) & np.isfinite(lim) & ~clip
    if not keep.any():
        return float("nan")
    return float(np.min(np.abs(lim[keep]) * a[keep] ** 2))


# ---- Theorem 3: thresholds fitted in the theorem's coordinates, and the best grid point ------------------------
@dataclass(frozen=True)
class Thresholds:
    """Fitted edges of the success region in Theorem 3's coordinates."""

    t1: float  # edge in s₁ = Σλᵢγᵢ (−inf: no edge in s₁ inside the grid)
    t2: float  # edge in s₂ = Σλᵢγᵢ² (−inf: no edge in s₂ inside the grid)
    balanced_accuracy: float  # of the region {s₁ ≥ t₁, s₂ ≥ t₂} against the mask it was fitted on


def _cut_points(values: np.ndarray) -> np.ndarray:
    """Candidate thresholds: −inf (no condition), then midway between consecutive distinct values."""
    u = np.unique(np.round(np.asarray(values, dtype=float).ravel(), 9))
    return np.concatenate([[-np.inf], (u[1:] + u[:-1]) / 2])


def fit_thresholds(success: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> Thresholds:
    """The (t₁, t₂) whose region {s₁ ≥ t₁, s₂ ≥ t₂} has the highest balanced accuracy against ``success``.

    Candidates lie midway between neighbouring cells' coordinates, so a threshold sits on the observed edge;
    −inf means that coordinate needs no threshold on this grid (its edge, if any, lies outside the grid).
    Ties go to the smallest t₁, then the smallest t₂ (the largest region among equally good ones).
    """
    ok = np.asarray(success, dtype=bool).ravel()
    a, b = np.asarray(s1, dtype=float).ravel(), np.asarray(s2, dtype=float).ravel()
    if not ok.any() or ok.all():
        raise ValueError("the success mask must hold both successes and failures to place an edge")
    c1, c2 = _cut_points(a), _cut_points(b)
    above2 = b[None, :] >= c2[:, None]  # (n2, cells)
    best = (-1.0, 0.0, 0.0)
    for t1 in c1:
        pred = (a >= t1)[None, :] & above2  # (n2, cells)
        tpr = (pred & ok).sum(1) / ok.sum()
        tnr = (~pred & ~ok).sum(1) / (~ok).sum()
        score = (tpr + tnr) / 2
        j = int(np.argmax(score))
        if score[j] > best[0] + 1e-12:
            best = (float(score[j]), float(t1), float(c2[j]))
    return Thresholds(t1=best[1], t2=best[2], balanced_accuracy=best[0])


def fitted_region_accuracy(thresholds: Thresholds, s1: np.ndarray, s2: np.ndarray, success: np.ndarray) -> float:
    """Balanced accuracy of the orthant of fitted thresholds against another success mask (e.g. a held-out seed)."""
    return balanced_accuracy(orthant(s1, s2, thresholds.t1, thresholds.t2), success)


def best_cell(
    loss: np.ndarray, error: np.ndarray, lam1: ArrayLike, lam2: ArrayLike, nonzero: bool = True
) -> tuple[int, int]:
    """Index (i, j) of the best grid point: lowest loss, then lowest error, then smallest ‖λ‖ (many cells can
    reach zero hinge loss; ties go to the smallest edit). ``nonzero`` keeps to λᵢ ≠ 0, as Theorem 3 requires."""
    loss, error = np.asarray(loss, dtype=float), np.asarray(error, dtype=float)
    L1, L2 = np.meshgrid(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float), indexing="ij")
    if loss.shape != L1.shape or error.shape != L1.shape:
        raise ValueError(f"loss and error must have shape {L1.shape}")
    barred = ((np.abs(L1) < 1e-12) | (np.abs(L2) < 1e-12)) if nonzero else np.zeros(L1.shape, dtype=bool)
    if barred.all():
        raise ValueError("no grid point has every λᵢ ≠ 0")
    order = np.lexsort((np.hypot(L1, L2).ravel(), error.ravel(), loss.ravel(), barred.ravel()))
    i, j = np.unravel_index(int(order[0]), loss.shape)
    return int(i), int(j)
