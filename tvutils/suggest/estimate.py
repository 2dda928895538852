"""Task relations measured in output space, with an interval over the probe: α̂ between two fine-tuned models,
γ̂ of an out-of-domain target on each source.

**α̂ by regression.** Let Δfᵢ = f(X; Ψ*ᵢ) − f(X; Ψ⁽⁰⁾) be model i's output change, on the inputs X of task i's
probe (``own``) and of the other task's (``cross``). In the theory's picture a fine-tuned model's change on an
input is its gain times the projection of the input's discriminative tokens on μ_Tᵢ; on Tᵢ's inputs the other
model's change is then α·(gainⱼ / gainᵢ) times model i's. The slope of Δfⱼ on Δfᵢ over Tᵢ's inputs,

    bⱼᵢ = Σ ⟨Δfᵢ, Δfⱼ⟩ / Σ ‖Δfᵢ‖²   (sums over the probe's examples; ⟨·,·⟩ over each example's outputs),

is α times the gain ratio, and the geometric mean of the two directions cancels the ratio:

    α̂ = sign(bⱼᵢ) · √(bⱼᵢ · bᵢⱼ)   (0 when the two slopes disagree in sign: |α| is below the noise).

This was the most accurate of the estimators the book compared on the theory model (chapter "Choosing λ"):
the output-space cosine of the paper's recipe, over the inputs of both tasks, reads 2α/(1 + α²) there (each
task's inputs contribute α·gain², the norms 1 + α²), and the parameter-space cosine is biased upward by the
component every task vector shares. With only task i's inputs, α̂ = bⱼᵢ (the gain ratio is then not cancelled).

**γ̂ by signed gain.** γ̂ᵢ = E_T'[gᵢ(X, y)] / E_Tᵢ[gᵢ(X, ŷ)]: the gain Ψ*ᵢ brings to the correct answer on the
target's labelled examples, in units of the gain it brings on its own task's inputs (``ŷ`` its own prediction
there, or the true next token of a text). ``gᵢ`` is computed by the caller: y·Δfᵢ for a scalar margin, the
change of the centred logit of the label for a classifier or a language model.

**Intervals.** A percentile bootstrap over the probe's examples (each group resampled on its own, seeded), so
the same probe gives the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MIN_EXAMPLES = 8  # below this, a bootstrap over examples says nothing: refused
N_BOOT = 1000
LEVEL = 0.95


class ProbeError(ValueError):
    """A probe that cannot give a stable estimate (too small, wrong shape, a model that did not change)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval over the probe, and how it was measured."""

    value: float
    low: float
    high: float
    n: int  # examples it was estimated on
    method: str

    @property
    def relation(self) -> str:
        """The relation the interval names: aligned (above 0), contradictory (below 0), irrelevant (contains 0)."""
        if self.low > 0:
            return "aligned"
        if self.high < 0:
            return "contradictory"
        return "irrelevant"

    @property
    def halfwidth(self) -> float:
        return (self.high - self.low) / 2

    def text(self, symbol: str = "α̂") -> str:
        return f"{symbol} = {self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _per_example(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Outputs as float64, one row per example: (n,) or (n, ...) → (n, m)."""
    a = x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)
    return a.reshape(len(a), -1)


def _weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resampling counts (n_boot, n): how often each example is drawn in each resample."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)


def _check(n: int, what: str) -> None:
    if n < MIN_EXAMPLES:
        raise ProbeError(f"{what}: {n} example(s); at least {MIN_EXAMPLES} are needed for an interval")


def _slope_terms(own: np.ndarray | torch.Tensor, cross: np.ndarray | torch.Tensor, what: str):
    """Per-example ⟨Δfᵢ, Δfⱼ⟩ and ‖Δfᵢ‖² on task i's inputs."""
    x, y = _per_example(own), _per_example(cross)
    if x.shape != y.shape:
        raise ProbeError(f"{what}: output changes of shapes {x.shape} and {y.shape} differ")
    _check(len(x), what)
    sxx = (x * x).sum(1)
    if sxx.sum() == 0:
        raise ProbeError(f"{what}: the model's outputs did not change on its own task's inputs")
    return (x * y).sum(1), sxx


def _geometric(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    return np.where(b1 * b2 > 0, np.sign(b1) * np.sqrt(np.abs(b1 * b2)), 0.0)


def alpha_regression(
    own_i: np.ndarray | torch.Tensor,
    cross_i: np.ndarray | torch.Tensor,
    own_j: np.ndarray | torch.Tensor | None = None,
    cross_j: np.ndarray | torch.Tensor | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Estimate:
    """α̂ between tasks i and j by regression (module docstring), with a bootstrap interval.

    ``own_i``/``cross_i``: Δfᵢ and Δfⱼ on task i's probe inputs, (n_i, ...) each; ``own_j``/``cross_j``: Δfⱼ and
    Δfᵢ on task j's (optional: without them α̂ is the one slope bⱼᵢ).
    """
    sxy_i, sxx_i = _slope_terms(own_i, cross_i, "probe of task i")
    w_i = _weights(len(sxx_i), n_boot, seed)
    b_ji, boots_ji = sxy_i.sum() / sxx_i.sum(), (w_i @ sxy_i) / (w_i @ sxx_i)
    if own_j is None:
        value, boots, n, method = b_ji, boots_ji, len(sxx_i), "regression (one direction)"
    else:
        sxy_j, sxx_j = _slope_terms(own_j, cross_j, "probe of task j")
        w_j = _weights(len(sxx_j), n_boot, seed + 1)
        b_ij, boots_ij = sxy_j.sum() / sxx_j.sum(), (w_j @ sxy_j) / (w_j @ sxx_j)
        value, boots = float(_geometric(np.array(b_ji), np.array(b_ij))), _geometric(boots_ji, boots_ij)
        n, method = len(sxx_i) + len(sxx_j), "regression (both directions)"
    lo, hi = np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(float(value), float(lo), float(hi), n, method)


def output_cosine(
    change_i: np.ndarray | torch.Tensor, change_j: np.ndarray | torch.Tensor, n_boot: int = N_BOOT, seed: int = 0
) -> Estimate:
    """The paper's recipe for comparison: cos(Δfᵢ, Δfⱼ) over every example and output, with a bootstrap interval."""
    x, y = _per_example(change_i), _per_example(change_j)
    if x.shape != y.shape:
        raise ProbeError(f"output changes of shapes {x.shape} and {y.shape} differ")
    _check(len(x), "probe")
    sxy, sxx, syy = (x * y).sum(1), (x * x).sum(1), (y * y).sum(1)
    if sxx.sum() == 0 or syy.sum() == 0:
        raise ProbeError("a model whose outputs did not change has no direction: the cosine is undefined")
    w = _weights(len(x), n_boot, seed)
    boots = (w @ sxy) / np.sqrt((w @ sxx) * (w @ syy))
    lo, hi = np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(float(sxy.sum() / np.sqrt(sxx.sum() * syy.sum())), float(lo), float(hi), len(x), "output cosine")


def gamma_gain(
    target_gain: np.ndarray | torch.Tensor, own_gain: np.ndarray | torch.Tensor, n_boot: int = N_BOOT, seed: int = 0
) -> Estimate:
    """γ̂ᵢ = mean gain of Ψ*ᵢ on the target's labelled examples / mean gain on its own task's inputs (docstring)."""
    t, o = _per_example(target_gain).sum(1), _per_example(own_gain).sum(1)
    _check(len(t), "labelled target examples")
    _check(len(o), "probe of a source task")
    if o.mean() <= 0:
        raise ProbeError("a source model brings no gain on its own task's inputs: it was not fine-tuned on them")
    boots = (_weights(len(t), n_boot, seed) @ t / len(t)) / (_weights(len(o), n_boot, seed + 1) @ o / len(o))
    lo, hi = np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(float(t.mean() / o.mean()), float(lo), float(hi), len(t) + len(o), "signed gain")


def examples_needed(estimate: Estimate, halfwidth: float) -> int:
    """About how many probe examples give an interval of ``halfwidth`` (half-widths shrink as 1/√n)."""
    if halfwidth <= 0:
        raise ValueError(f"halfwidth must be > 0, got {halfwidth}")
    return int(np.ceil(estimate.n * (estimate.halfwidth / halfwidth) ** 2))
