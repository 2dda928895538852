"""Corollary 2 (sparse task vectors): row norms of ΔV, the two groups of neurons, and ways to prune.

Corollary 2 [paper]: with uᵢ the i-th row of ΔV_T, a constant fraction of rows have ‖uᵢ‖ ≥ Ω(m^{-1/2}) and the
rest ‖uᵢ‖ ≤ O(m^{-1/2}ε); pruning the small rows keeps Theorems 1-3. This module holds

* ``row_norms`` and ``two_groups``: the histogram's two groups, found by splitting the log row norms in two
  (the split with the least within-group spread, each group holding at least ``min_fraction`` of the rows) and
  measuring how far apart the groups are (Ashman's D; D > 2 is a clean separation);
* ``effective_readout``: the learner's output weight of each neuron when attention is uniform,
  (1/P) Σ_l a_(l),i, the quantity that decides which neurons grow in the regime where the groups appear;
* ``regime_run`` (``regime_result`` for a fine-tune already made): one fine-tune summarised by its row norms,
  for the search of the regime where the groups appear, and ``pick_regime``: the rule that picks the regime on
  one seed (its verdict is then scored on others);
* ``PRUNING`` (four ways to prune ΔV), ``merge_losses``, ``loss_at`` and ``prune_check``: the losses of the three theorems' merges with pruned task
  vectors, and what pruning costs; ``safe_fraction``: how far a method prunes before some merge's loss rises. The ways to prune (largest or random rows, largest entries, DARE) are
  ``tvutils.editing.variants``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..editing.task_vector import TaskVector
from ..editing.variants import dare, keep_entries, keep_rows
from . import seeds
from .data import DataConfig, task_pair
from .experiments import FineTuned, fine_tune_tasks, pretrained, sweep_merges
from .model import LearnerConfig, OneLayerTransformer
from .training import TrainConfig


def row_norms(tv: TaskVector, key: str = "V") -> np.ndarray:
    """‖uᵢ‖ for every row uᵢ of the task vector's matrix ``key`` (rows = first dim). (rows,)."""
    if key not in tv.deltas:
        raise ValueError(f"the task vector has no key {key!r}; it has {tv.keys()}")
    t = tv.deltas[key]
    if t.ndim < 2:
        raise ValueError(f"key {key!r} is not a matrix (shape {tuple(t.shape)})")
    return t.reshape(t.shape[0], -1).double().norm(dim=1).numpy()


@dataclass(frozen=True)
class TwoGroups:
    """A split of row norms into a small and a large group (in log scale)."""

    threshold: float  # rows with norm ≥ threshold form the large group
    large_fraction: float  # fraction of rows in the large group
    small_median: float
    large_median: float
    separation: float  # Ashman's D of the two groups' log norms: > 2 means cleanly separated

    @property
    def ratio(self) -> float:
        """Median small row over median large row (Corollary 2 predicts about ε)."""
        return self.small_median / self.large_median

    def present(self, min_separation: float = 2.0, max_ratio: float = 0.25) -> bool:
        """Two groups in the corollary's sense: cleanly separated, and the small rows much smaller."""
        return self.separation > min_separation and self.ratio <= max_ratio


def two_groups(norms: Sequence[float] | np.ndarray, min_fraction: float = 0.1) -> TwoGroups:
    """Split norms in two where the within-group variance of log10(norm) is least (2-means in one dimension).

    Each group holds at least ``min_fraction`` of the rows, so one or two outliers cannot form a "group".
    """
    x = np.sort(np.log10(np.maximum(np.asarray(norms, dtype=float), 1e-300)))
    n = len(x)
    lo, hi = max(1, math.ceil(min_fraction * n)), min(n - 1, math.floor((1 - min_fraction) * n))
    if lo > hi:
        raise ValueError(f"{n} rows cannot be split into two groups of at least {min_fraction:.0%} each")
    csum, csq = np.cumsum(x), np.cumsum(x**2)
    ks = np.arange(lo, hi + 1)  # small group = x[:k]
    left = csq[ks - 1] - csum[ks - 1] ** 2 / ks
    right = (csq[-1] - csq[ks - 1]) - (csum[-1] - csum[ks - 1]) ** 2 / (n - ks)
    k = int(ks[np.argmin(left + right)])
    small, large = x[:k], x[k:]
    spread = math.sqrt(small.var() + large.var())
    sep = math.sqrt(2) * (large.mean() - small.mean()) / spread if spread > 0 else math.inf
    return TwoGroups(
        threshold=float(10 ** ((small[-1] + large[0]) / 2)),
        large_fraction=float((n - k) / n),
        small_median=float(10 ** np.median(small)),
        large_median=float(10 ** np.median(large)),
        separation=float(sep),
    )


def effective_readout(a: torch.Tensor) -> np.ndarray:
    """(1/P) Σ_l a_(l),i for each neuron i: its output weight when every query sees the same mixture. a: (P, m)."""
    if a.ndim != 2:
        raise ValueError(f"a must have shape (P, m), got {tuple(a.shape)}")
    return a.double().mean(0).numpy()


# ---- the regime search --------------------------------------------------------------------------------------
@dataclass
class RegimeResult:
    """One fine-tune of T1 from Ψ⁽⁰⁾ under a set of knobs, summarised by its ΔV row norms."""

    norms: np.ndarray  # (m,) ‖uᵢ‖
    readout: np.ndarray  # (m,) (1/P) Σ_l a_(l),i
    groups: TwoGroups
    steps: int
    reached: bool
    final_loss: float

    def summary(self) -> dict[str, float | int | bool]:
        """One row of the regime table."""
        m = len(self.norms)
        corr = np.corrcoef(np.abs(self.readout), self.norms)[0, 1] if np.ptp(np.abs(self.readout)) > 0 else np.nan
        return {
            "steps": self.steps,
            "reached ε": self.reached,
            "median ‖uᵢ‖·√m": float(np.median(self.norms) * math.sqrt(m)),
            "q10 / q90": float(np.quantile(self.norms, 0.1) / np.quantile(self.norms, 0.9)),
            "large fraction": self.groups.large_fraction,
            "separation D": self.groups.separation,
            "small / large": self.groups.ratio,
            "corr(‖uᵢ‖, |āᵢ|)": float(corr),
            "two groups": self.groups.present(),
        }


def regime_run(data_cfg: DataConfig, learner_cfg: LearnerConfig, train_cfg: TrainConfig, seed: int) -> RegimeResult:
    """Fine-tune T1 (μ = e₀) from Ψ⁽⁰⁾(seed) with the given configs and summarise ΔV's row norms.

    The fine-tune is the same as ``pair_vectors``' Ψ*_T1 for that seed, so ``regime_result(pair.model0, pair.t1)``
    gives the same result without fine-tuning again."""
    model0 = pretrained(learner_cfg, seed)
    task, _ = task_pair(0.0, data_cfg)
    (tuned,) = fine_tune_tasks(model0, [task], train_cfg, [seeds.finetune(seed, seeds.T1)])
    return regime_result(model0, tuned)


def regime_result(model0: OneLayerTransformer, tuned: FineTuned) -> RegimeResult:
    """A fine-tune from ``model0`` summarised by its ΔV row norms and the neurons' uniform-attention read-out."""
    norms = row_norms(tuned.task_vector)
    return RegimeResult(
        norms=norms,
        readout=effective_readout(model0.a),
        groups=two_groups(norms),
        steps=tuned.history.steps,
        reached=tuned.reached,
        final_loss=tuned.final_loss,
    )


def pick_regime(results: Mapping[str, RegimeResult], min_separation: float = 2.0, max_ratio: float = 0.25) -> str:
    """The rule that picks the regime in which to test the corollary: of the regimes whose row norms split in two
    groups (``TwoGroups.present``), the one with the largest separation D. Raises if no regime has two groups."""
    present = {name: r.groups.separation for name, r in results.items() if r.groups.present(min_separation, max_ratio)}
    if not present:
        raise ValueError(f"no regime of {list(results)} shows two groups of row norms")
    return max(present, key=present.__getitem__)


# ---- the theorems' merges with pruned task vectors ---------------------------------------------------------------
SMALLEST_ROWS, RANDOM_ROWS = "smallest rows", "random rows"
PRUNING = {  # prune a fraction p of ΔV (keep 1 − p); s seeds the random ones
    SMALLEST_ROWS: lambda tv, p, s: keep_rows(tv, 1 - p, keys=["V"]),
    RANDOM_ROWS: lambda tv, p, s: keep_rows(tv, 1 - p, keys=["V"], how="random", seed=s),
    "smallest entries (TIES-style)": lambda tv, p, s: keep_entries(tv, 1 - p, keys=["V"]),
    "random entries, rescaled (DARE)": lambda tv, p, s: dare(tv, 1 - p, seed=s, keys=["V"]),
}
RANDOM_PRUNING = {RANDOM_ROWS, "random entries, rescaled (DARE)"}  # averaged over several draws
MERGES = (
    "Theorem 1 (addition)",
    "Theorem 2 (negation, T1 kept)",
    "Theorem 2 (negation, T2 forgotten)",
    "Theorem 3 (out of domain)",
)


def merge_losses(
    model0: OneLayerTransformer,
    task_vectors: Sequence[TaskVector],
    test_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    add_lambda: float,
    neg_lambda: float,
    ood_lambdas: Sequence[float],
) -> dict[str, float]:
    """Loss of the three merges of [ΔΨ_T1, ΔΨ_T2] on the test sets [T1, T2, T']: addition Ψ⁽⁰⁾ + ΔΨ_T1 +
    add_lambda·ΔΨ_T2 (mean over T1, T2), negation with neg_lambda (T1 kept, T2 forgotten), and out of domain
    Ψ⁽⁰⁾ + λ₁ΔΨ_T1 + λ₂ΔΨ_T2 (T'). Keys: ``MERGES``."""
    add, _ = sweep_merges(model0, task_vectors, np.array([[1.0, add_lambda]]), test_sets[:2])
    neg, _ = sweep_merges(model0, task_vectors, np.array([[1.0, neg_lambda]]), test_sets[:2])
    out, _ = sweep_merges(model0, task_vectors, np.array([list(ood_lambdas)]), test_sets[2:])
    return dict(zip(MERGES, (float(add.mean()), float(neg[0, 0]), float(neg[1, 0]), float(out[0, 0]))))


def loss_at(pruning: pd.DataFrame, regime: str, method: str, merge: str, p: float) -> float:
    """One loss of a pruning table (columns regime, method, p, merge, loss)."""
    sub = pruning[(pruning["regime"] == regime) & (pruning["method"] == method) & (pruning["merge"] == merge)]
    return float(sub.loc[np.isclose(sub["p"], p), "loss"].iloc[0])


def safe_fraction(pruning: pd.DataFrame, regime: str, method: str, merges: Sequence[str], tol: float) -> float:
    """The largest pruned fraction p up to which (at every p' ≤ p of the table) no merge's loss rises above its
    unpruned loss by more than ``tol``; 0 if the smallest fraction already does."""
    fractions = sorted(pruning.loc[(pruning["regime"] == regime) & (pruning["method"] == method), "p"].unique())
    safe = 0.0
    for p in fractions:
        if max(loss_at(pruning, regime, method, g, p) - loss_at(pruning, regime, method, g, 0.0) for g in merges) > tol:
            break
        safe = float(p)
    return safe


def prune_check(
    pruning: pd.DataFrame, regime: str, fractions: Sequence[float], small_fraction: float, merges: Sequence[str]
) -> tuple[float, float, float]:
    """At the largest pruned fraction p ≤ the small-row fraction: (p, the largest rise of a merge's loss when the
    smallest rows are pruned, the mean over merges of (random-row loss − smallest-row loss)); NaNs if no p fits."""
    grid = [p for p in fractions if 0 < p <= small_fraction + 1e-9]
    if not grid:
        return float("nan"), float("nan"), float("nan")
    p = max(grid)
    rise = max(
        loss_at(pruning, regime, SMALLEST_ROWS, g, p) - loss_at(pruning, regime, SMALLEST_ROWS, g, 0.0) for g in merges
    )
    gap = np.mean(
        [loss_at(pruning, regime, RANDOM_ROWS, g, p) - loss_at(pruning, regime, SMALLEST_ROWS, g, p) for g in merges]
    )
    return p, rise, float(gap)
