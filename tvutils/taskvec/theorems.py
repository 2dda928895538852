"""What the theorems predict: the regions of Theorems 1-3 over a λ grid, their edges and bounds,
Corollary 1's bound, and the theorems' conclusions read on measured losses.

The theorems are sufficient conditions with Θ(·) constants: β = Θ(1/d), Theorem 2's lower limit −Θ(α⁻²),
Theorem 3's c ∈ (0, 1) and the Θ(ε) loss level are unknown. Every function takes its constants as
arguments, so a notebook says whether it draws the literal ones (β = 1/d, c given) or fitted ones, and how
they were fitted. Masks over (α, λ) have shape (len(α), len(λ)); masks over (λ₁, λ₂) have λ₁ along rows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_EDGE = 1e-12  # cells exactly on an edge count as inside


def lambda_grid(start: float, stop: float, step: float = 0.2) -> np.ndarray:
    """Inclusive grid start, start+step, …, stop, rounded to kill float drift (e.g. λ ∈ [−2, 3] step 0.2)."""
    n = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(n), 10)


# ---- Theorems 1 and 2: one task vector added with weight λ, over (α, λ) ---------------------------------------
def theorem1_region(alpha: ArrayLike, lam: ArrayLike, beta: float) -> np.ndarray:
    """Theorem 1 (addition): α ≥ 0 and λ ≥ 1 − α + β. Returns a mask of shape (len(α), len(λ))."""
    a = np.asarray(alpha, dtype=float)[:, None]
    b = np.asarray(lam, dtype=float)[None, :]
    return (a >= 0) & (b >= 1 - a + beta - _EDGE)


def theorem2_lower_limit(alpha: ArrayLike, C: float) -> np.ndarray:
    """The lower end −C/α² of Theorem 2's λ interval (−inf at α = 0). C stands for the unknown Θ(·) constant."""
    a = np.asarray(alpha, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(a == 0, -np.inf, -C / np.where(a == 0, 1.0, a) ** 2)


def theorem2_region(alpha: ArrayLike, lam: ArrayLike, C: float) -> np.ndarray:
    """Theorem 2 (negation): α ≤ 0 and −C/α² ≤ λ ≤ 0 (α = 0 leaves λ unbounded below). → (len(α), len(λ))."""
    a = np.asarray(alpha, dtype=float)[:, None]
    b = np.asarray(lam, dtype=float)[None, :]
    lower = theorem2_lower_limit(alpha, C)[:, None]
    return (a <= 0) & (b <= _EDGE) & (b >= lower - _EDGE)


def learned_threshold(lambdas: np.ndarray, eps: float, eps_factor: float, beta: float = 0.0) -> np.ndarray:
    """The 'learned' loss limit Θ(ε) + |λ|β, read as eps_factor·ε + |λ|·β (β = 0 for a task with no |λ|β term)."""
    return eps_factor * eps + np.abs(np.asarray(lambdas, dtype=float)) * beta


def addition_success(loss: np.ndarray, lambdas: np.ndarray, eps: float, eps_factor: float, beta: float) -> np.ndarray:
    """Theorem 1's outcome: T1 loss ≤ kε + |λ|β and T2 loss ≤ kε. ``loss`` (…, 2, A, L) → (…, A, L) bool."""
    loss = np.asarray(loss)
    t1_ok = loss[..., 0, :, :] <= learned_threshold(lambdas, eps, eps_factor, beta)
    t2_ok = loss[..., 1, :, :] <= learned_threshold(lambdas, eps, eps_factor)
    return t1_ok & t2_ok


def negation_success(
    loss: np.ndarray, lambdas: np.ndarray, eps: float, eps_factor: float, beta: float, forgotten: float
) -> np.ndarray:
    """Theorem 2's outcome: T1 loss ≤ kε + |λ|β (kept) and T2 loss ≥ ``forgotten`` (a Θ(1) limit). → (…, A, L)."""
    loss = np.asarray(loss)
    t1_ok = loss[..., 0, :, :] <= learned_threshold(lambdas, eps, eps_factor, beta)
    t2_gone = loss[..., 1, :, :] >= forgotten
    return t1_ok & t2_gone


# ---- Theorem 3: two task vectors with weights (λ₁, λ₂), out of domain ------------------------------------------
def theorem3_coordinates(gammas: ArrayLike, lam1: ArrayLike, lam2: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The theorem's coordinates s₁ = λ₁γ₁ + λ₂γ₂ and s₂ = λ₁γ₁² + λ₂γ₂² on the grid, each (len(λ₁), len(λ₂))."""
    g = np.asarray(gammas, dtype=float)
    if g.shape != (2,):
        raise ValueError(f"two γ's expected, got shape {g.shape}")
    L1, L2 = np.meshgrid(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float), indexing="ij")
    return L1 * g[0] + L2 * g[1], L1 * g[0] ** 2 + L2 * g[1] ** 2


def orthant(s1: np.ndarray, s2: np.ndarray, t1: float, t2: float) -> np.ndarray:
    """The region {s₁ ≥ t₁ and s₂ ≥ t₂} as a boolean mask (Theorem 3's form, without |λᵢ|β ≤ c)."""
    return (np.asarray(s1) >= t1 - _EDGE) & (np.asarray(s2) >= t2 - _EDGE)


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
    Returns a mask of shape (len(λ₁), len(λ₂)).
    """
    t1, t2 = (1 + c, 1 + c) if thresholds is None else thresholds
    s1, s2 = theorem3_coordinates(gammas, lam1, lam2)
    L1, L2 = np.meshgrid(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float), indexing="ij")
    bounded = (np.abs(L1) * beta <= c) & (np.abs(L2) * beta <= c)
    return orthant(s1, s2, t1, t2) & bounded


def orthant_edge(gammas: ArrayLike, t1: float, t2: float, lam2: ArrayLike) -> np.ndarray:
    """For each λ₂, the smallest λ₁ with s₁ ≥ t₁ and s₂ ≥ t₂ (needs γ₁ > 0): max((t₁ − γ₂λ₂)/γ₁, (t₂ − γ₂²λ₂)/γ₁²)."""
    g = np.asarray(gammas, dtype=float)
    if g.shape != (2,) or g[0] <= 0:
        raise ValueError(f"two γ's with γ₁ > 0 expected, got {g}")
    lam2 = np.asarray(lam2, dtype=float)
    return np.maximum((t1 - g[1] * lam2) / g[0], (t2 - g[1] ** 2 * lam2) / g[0] ** 2)


# ---- Corollary 1 ------------------------------------------------------------------------------------------------
def corollary1_w_bound(M: int | np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """The right-hand side of Corollary 1 for ΔW, read literally: M·ε + 1/log M (natural log, M ≥ 2)."""
    M = np.asarray(M, dtype=float)
    if np.any(M < 2):
        raise ValueError("1/log M needs M ≥ 2")
    return M * np.asarray(eps, dtype=float) + 1.0 / np.log(M)
