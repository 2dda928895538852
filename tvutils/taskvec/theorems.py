"""The predicted regions of Theorems 1-3 (SPEC §5) as boolean masks over a λ grid.

The theorems are sufficient conditions with Θ(·) constants: β = Θ(1/d), Theorem 2's lower limit −Θ(α⁻²) and
Theorem 3's c ∈ (0, 1) are unknown. Every function takes its constants as arguments, so a notebook says
whether it draws the literal ones (β = 1/d, c given) or fitted ones, and how they were fitted.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def lambda_grid(start: float, stop: float, step: float = 0.2) -> np.ndarray:
    """Inclusive grid start, start+step, …, stop, rounded to kill float drift (e.g. λ ∈ [−2, 3] step 0.2)."""
    n = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(n), 10)


def theorem1_region(alpha: ArrayLike, lam: ArrayLike, beta: float) -> np.ndarray:
    """Theorem 1 (addition): α ≥ 0 and λ ≥ 1 − α + β. Returns a mask of shape (len(α), len(λ))."""
    a = np.asarray(alpha, dtype=float)[:, None]
    b = np.asarray(lam, dtype=float)[None, :]
    return (a >= 0) & (b >= 1 - a + beta - 1e-12)


def theorem2_region(alpha: ArrayLike, lam: ArrayLike, C: float) -> np.ndarray:
    """Theorem 2 (negation): α ≤ 0 and −C/α² ≤ λ ≤ 0 (α = 0 leaves λ unbounded below).

    Returns a mask of shape (len(α), len(λ)). C stands for the theorem's unknown Θ(·) constant.
    """
    a = np.asarray(alpha, dtype=float)[:, None]
    b = np.asarray(lam, dtype=float)[None, :]
    with np.errstate(divide="ignore"):
        lower = np.where(a == 0, -np.inf, -C / np.where(a == 0, 1.0, a) ** 2)
    return (a <= 0) & (b <= 1e-12) & (b >= lower - 1e-12)


def theorem2_lower_limit(alpha: ArrayLike, C: float) -> np.ndarray:
    """The lower end −C/α² of Theorem 2's λ interval (−inf at α = 0)."""
    a = np.asarray(alpha, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(a == 0, -np.inf, -C / np.where(a == 0, 1.0, a) ** 2)


def theorem3_region(
    gammas: ArrayLike,
    lam1: ArrayLike,
    lam2: ArrayLike,
    c: float,
    beta: float,
    thresholds: tuple[float, float] | None = None,
) -> np.ndarray:
    """Theorem 3 (out of domain), two task vectors: Σλᵢγᵢ ≥ t₁, Σλᵢγᵢ² ≥ t₂ and |λᵢ|β ≤ c for each i.

    The theorem's thresholds are t₁ = t₂ = 1 + c; pass ``thresholds`` to draw fitted ones instead.
    Returns a mask of shape (len(λ₁), len(λ₂)) (λ₁ along rows).
    """
    g = np.asarray(gammas, dtype=float)
    if g.shape != (2,):
        raise ValueError(f"this grid form takes two γ's, got {g.shape}")
    t1, t2 = (1 + c, 1 + c) if thresholds is None else thresholds
    L1, L2 = np.meshgrid(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float), indexing="ij")
    s1 = L1 * g[0] + L2 * g[1]
    s2 = L1 * g[0] ** 2 + L2 * g[1] ** 2
    bounded = (np.abs(L1) * beta <= c) & (np.abs(L2) * beta <= c)
    return (s1 >= t1 - 1e-12) & (s2 >= t2 - 1e-12) & bounded


def agreement(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Fraction of cells inside the predicted region where the observed outcome is success (NaN if empty)."""
    predicted = np.asarray(predicted, dtype=bool)
    if predicted.shape != np.shape(observed):
        raise ValueError(f"mask shapes differ: predicted {predicted.shape}, observed {np.shape(observed)}")
    if not predicted.any():
        return float("nan")
    return float(np.asarray(observed, dtype=bool)[predicted].mean())
