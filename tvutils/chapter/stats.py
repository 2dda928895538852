"""Statistics the chapters share: percentile-bootstrap intervals (of a mean, a relative change, a difference of
two relative changes over passages), least-squares fits of a line and of a power law. Intervals over seeds are
Student t (``tvutils.chapter.forms``).

Bootstrap resamples are drawn from a seeded generator, so an interval is the same on every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_mean(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lower, upper): percentile bootstrap interval of the mean over passages."""
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    boots = x[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def _relative_change_boots(before: np.ndarray, after: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(before), size=(n_boot, len(before)))  # the same passages before and after
    b, a = before[idx].mean(axis=1), after[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b - 1


def relative_change(
    before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean(after)/mean(before) − 1, lower, upper), a paired bootstrap over passages."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"before and after differ in shape: {b.shape} vs {a.shape}")
    boots = _relative_change_boots(b, a, n_boot, np.random.default_rng(seed))
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() / b.mean() - 1), float(lo), float(hi)


def difference_of_relative_changes(
    before_1: Sequence[float],
    after_1: Sequence[float],
    before_2: Sequence[float],
    after_2: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(change₁ − change₂, lower, upper) of two books' relative changes, each book's passages resampled apart."""
    rng = np.random.default_rng(seed)
    b1, a1, b2, a2 = (np.asarray(v, dtype=float) for v in (before_1, after_1, before_2, after_2))
    boots = _relative_change_boots(b1, a1, n_boot, rng) - _relative_change_boots(b2, a2, n_boot, rng)
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    point = (a1.mean() / b1.mean() - 1) - (a2.mean() / b2.mean() - 1)
    return float(point), float(lo), float(hi)


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x, ignoring NaN pairs (NaN, NaN if fewer than 2 remain)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    return float(slope), float(intercept)


def fit_power(alpha: Sequence[float], limit: Sequence[float]) -> tuple[float, float]:
    """Fit |limit| = C·|α|^(−p) by least squares in log-log; returns (C, p). Theorem 2 predicts p = 2.

    Pairs with α = 0, limit = 0 or NaN are ignored.
    """
    a, lim = np.abs(np.asarray(alpha, dtype=float).ravel()), np.abs(np.asarray(limit, dtype=float).ravel())
    keep = np.isfinite(lim) & (a > 0) & (lim > 0)
    slope, intercept = fit_line(np.log(a[keep]), np.log(lim[keep]))
    return float(np.exp(intercept)), float(-slope)


def power_exponent(sizes: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """The exponent p of values ∝ sizes^p: the least-squares slope in log-log over every finite, positive pair.

    ``sizes`` and ``values`` have the same shape (or ``sizes`` broadcasts to it, e.g. sizes (K,), values (S, K)).
    NaN if fewer than two distinct sizes remain. Rounded to 1e-9, so that exactly constant values give exactly 0.
    """
    y = np.asarray(values, dtype=float)
    x = np.broadcast_to(np.asarray(sizes, dtype=float), y.shape)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    slope, _ = fit_line(np.log(x[keep]), np.log(y[keep]))
    return float(np.round(slope, 9)) + 0.0  # + 0.0: no "-0.0"
