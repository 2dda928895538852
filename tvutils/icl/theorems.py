"""What the paper's theorems predict.

Theorem 1 (in domain) [paper]: training tasks that cover every IDR pattern with both labels, |𝒯_tr| ≥ M₁,
training prompts of length ≥ Ω(α⁻¹), testing prompts of length ≥ α'⁻¹, and T = Θ(α^{-2/3}) iterations give an
in-domain generalization error O(ε). Theorem 2 (out of domain) [paper]: the same, plus S₁ ≥ 1 (a constant order)
and l_ts ≥ α'⁻¹. Theorem 3 (pruning) [paper]: a constant fraction of W_O's neurons are large; pruning the small
ones costs O(ε + M₂^{-1/2}), pruning a fraction R of the large ones costs Ω(R).

The Θ(·) constants are unknown: the chapters judge each statement by its logical form (``tvutils.chapter.forms``).
"""

from __future__ import annotations

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
