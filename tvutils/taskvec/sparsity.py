"""Corollary 2 (sparse task vectors): row norms of ΔV, the two groups of neurons, and ways to prune.

Corollary 2 [paper]: with uᵢ the i-th row of ΔV_T, a constant fraction of rows have ‖uᵢ‖ ≥ Ω(m^{-1/2}) and the
rest ‖uᵢ‖ ≤ O(m^{-1/2}ε); pruning the small rows keeps Theorems 1-3. This module holds

* ``row_norms`` and ``two_groups``: the histogram's two groups, found by splitting the log row norms in two
  (the split with the least within-group spread, each group holding at least ``min_fraction`` of the rows) and
  measuring how far apart the groups are (Ashman's D; D > 2 is a clean separation);
* four ways to sparsify selected tensors of a task vector, all keeping the others as they are:
  ``prune_rows`` (the p% smallest rows, or p% random rows), ``trim_entries`` (the p% smallest entries,
  TIES-style trimming {cite}`yadav2023ties`) and ``dare`` (drop p% random entries, rescale the rest by 1/(1 − p),
  DARE {cite}`yu2024dare`);
* ``effective_readout``: the learner's output weight of each neuron when attention is uniform,
  (1/P) Σ_l a_(l),i, the quantity that decides which neurons grow in the regime where the groups appear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..editing.task_vector import TaskVector
from .data import DataConfig, task_pair
from .experiments import fine_tune_tasks, pretrained
from .model import LearnerConfig
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


# ---- sparsifying a task vector ------------------------------------------------------------------------------
def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the fraction to prune must be in [0, 1], got {p}")


def _selected(tv: TaskVector, keys: Sequence[str] | None) -> list[str]:
    keys = list(tv.deltas) if keys is None else list(keys)
    missing = [k for k in keys if k not in tv.deltas]
    if missing:
        raise ValueError(f"key(s) {missing} not in the task vector; it has {tv.keys()}")
    return keys


def _replace(tv: TaskVector, new: dict[str, torch.Tensor]) -> TaskVector:
    return TaskVector({k: new.get(k, v) for k, v in tv.deltas.items()}, tv.frozen)


def prune_rows(
    tv: TaskVector, p: float, keys: Sequence[str] = ("V",), how: str = "smallest", seed: int = 0
) -> TaskVector:
    """Zero ⌊p·rows⌋ rows of each selected matrix: those of smallest L2 norm (``how="smallest"``) or random ones.

    Ties in norm are broken by row index (stable sort), so the result is deterministic.
    """
    _check_p(p)
    if how not in ("smallest", "random"):
        raise ValueError(f"how must be 'smallest' or 'random', got {how!r}")
    gen = torch.Generator().manual_seed(seed)
    new = {}
    for key in _selected(tv, keys):
        t = tv.deltas[key]
        if t.ndim < 2:
            raise ValueError(f"key {key!r} has no rows (shape {tuple(t.shape)})")
        rows = t.shape[0]
        n_drop = math.floor(p * rows + 1e-9)
        if how == "smallest":
            order = torch.argsort(t.reshape(rows, -1).norm(dim=1), stable=True)
        else:
            order = torch.randperm(rows, generator=gen)
        keep = torch.ones(rows, dtype=torch.bool)
        keep[order[:n_drop]] = False
        new[key] = t * keep.reshape(-1, *([1] * (t.ndim - 1))).to(t.dtype)
    return _replace(tv, new)


def trim_entries(tv: TaskVector, p: float, keys: Sequence[str] | None = None) -> TaskVector:
    """TIES-style trimming: zero the ⌊p·numel⌋ entries smallest in magnitude of each selected tensor."""
    _check_p(p)
    new = {}
    for key in _selected(tv, keys):
        t = tv.deltas[key]
        flat = t.reshape(-1)
        n_drop = math.floor(p * flat.numel() + 1e-9)
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat.abs(), stable=True)[:n_drop]] = False
        new[key] = (flat * keep.to(t.dtype)).reshape(t.shape)
    return _replace(tv, new)


def dare(tv: TaskVector, p: float, seed: int, keys: Sequence[str] | None = None) -> TaskVector:
    """DARE: drop each entry of the selected tensors with probability p, rescale the survivors by 1/(1 − p).

    The rescaling keeps every entry's expectation; p = 1 drops everything (no rescaling is possible).
    """
    _check_p(p)
    gen = torch.Generator().manual_seed(seed)
    new = {}
    for key in _selected(tv, keys):
        t = tv.deltas[key]
        keep = torch.rand(t.shape, generator=gen) >= p
        scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
        new[key] = t * keep.to(t.dtype) * scale
    return _replace(tv, new)


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
    """Fine-tune T1 (μ = e₀) from Ψ⁽⁰⁾(seed) with the given configs and summarise ΔV's row norms."""
    model0 = pretrained(learner_cfg, seed)
    task, _ = task_pair(0.0, data_cfg)
    (tuned,) = fine_tune_tasks(model0, [task], train_cfg, [1000 * seed + 1])
    norms = row_norms(tuned.task_vector)
    return RegimeResult(
        norms=norms,
        readout=effective_readout(model0.a),
        groups=two_groups(norms),
        steps=tuned.history.steps,
        reached=tuned.reached,
        final_loss=tuned.final_loss,
    )
