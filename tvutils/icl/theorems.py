"""What the paper's theorems predict, and the fits that compare a measurement with a predicted exponent.

Theorem 1 (in domain) [paper]: training tasks that cover every IDR pattern with both labels, |𝒯_tr| ≥ M₁,
training prompts of length ≥ Ω(α⁻¹), testing prompts of length ≥ α'⁻¹, and T = Θ(α^{-2/3}) iterations give an
in-domain generalization error O(ε). Theorem 2 (out of domain) [paper]: the same, plus S₁ ≥ 1 (a constant order)
and l_ts ≥ α'⁻¹. Theorem 3 (pruning) [paper]: a constant fraction of W_O's neurons are large; pruning the small
ones costs O(ε + M₂^{-1/2}), pruning a fraction R of the large ones costs Ω(R).

The Θ(·) constants are unknown: the chapters compare exponents (fitted in log-log) and thresholds, not constants.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..chapter.stats import fit_line

LENGTH_EXPONENT = -1.0  # Theorem 1-2: needed testing prompt length ∝ α'^{-1}
ITERATION_EXPONENT = -2 / 3  # Theorem 1: iterations to converge T = Θ(α^{-2/3})
S1_THRESHOLD = 1.0  # Theorem 2: out-of-domain generalization needs S₁ ≥ 1


def theorem1_min_length(alpha_test: float) -> float:
    """Theorem 1's literal testing prompt length α'⁻¹ (its Θ constant taken as 1)."""
    if not 0 < alpha_test <= 1:
        raise ValueError(f"α' must lie in (0, 1], got {alpha_test}")
    return 1.0 / alpha_test


def theorem2_predicts_success(S1: float) -> bool:
    """Theorem 2's condition on the ODR patterns' coefficient sum: S₁ ≥ 1."""
    return S1 >= S1_THRESHOLD


def pattern_reader_error(alpha_test: float, length: int) -> float:
    """The error of a reader that copies the label of the context examples sharing the query's pattern (the
    mechanism of Proposition 1, perfectly) and guesses when there is none: ½ (1 − α'/2)^l."""
    return 0.5 * (1.0 - alpha_test / 2.0) ** length


def fit_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope p of log y against log x (y ∝ x^p); pairs with NaN or non-positive y dropped."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(y) & (y > 0) & (x > 0)
    return fit_line(np.log(x[keep]), np.log(y[keep]))[0]


def bootstrap_exponent(
    x: Sequence[float], y_per_seed: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, np.ndarray]:
    """(p, lower, upper, per-seed p): the exponent of the seed-averaged curve y(x), with a percentile-bootstrap
    interval over seeds (seeds resampled with replacement, the curve averaged and refitted each time).

    ``y_per_seed`` has shape (S, len(x)); a NaN entry is left out of its seed's average.
    """
    y = np.asarray(y_per_seed, dtype=float)
    if y.ndim != 2 or y.shape[1] != len(x):
        raise ValueError(f"y_per_seed must have shape (seeds, {len(x)}), got {y.shape}")
    per_seed = np.array([fit_exponent(x, row) for row in y])
    point = fit_exponent(x, _column_means(y))
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    boots = np.array([fit_exponent(x, _column_means(y[i])) for i in idx])
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(lo), float(hi), per_seed


def _column_means(y: np.ndarray) -> np.ndarray:
    """Mean of each column over its finite entries; NaN where a column has none (without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(y, axis=0)
