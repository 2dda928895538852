"""How the theorems scale: the quantities whose order of growth Theorems 1-3 and Corollaries 1-2 state, measured
so that a chapter can sweep them over sizes (d, M, m, |α|, ε) and fit their exponents.

* ``FineTunes``: every fine-tune of a sweep, trained once per (setting, run, task role) and kept in memory, on
  a chosen device (training and, off the CPU, the λ-grid's torch path: ``tvutils.taskvec.grid.merged_outputs_on``);
* ``sweep_setting``: the configs of a sweep's fine-tunes (a smaller stopping set; for the ε sweeps, stopped at
  test hinge loss ε alone);
* Theorem 1: ``addition_offset`` (the observed boundary λ*(α) minus 1 − α, the theorem's β) and ``loss_slope``
  (the growth of T1's loss with |λ|, the theorem's |λ|β term);
* Theorem 2: ``negative_grid``, ``fitted_beta`` and ``negation_limit`` (|λ_min(α)|, refined near the limit);
* Theorem 3: ``theorem3_corner`` (the region's corner, its least favourable point) and ``ood_thresholds``;
* ``region_losses``: the losses the theorems bound by Θ(ε), at one point inside each region;
* Corollary 2: ``choose_regime`` (the regime where the two groups of rows appear, chosen on other runs).

The work of a chapter-08 run, counted before anything trains: ``tvutils.taskvec.work``.

How each law is judged (bounds with constants fitted on held-out sizes): ``tvutils.chapter.forms``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..chapter.stats import fit_line
from ..editing.task_vector import TaskVector
from . import seeds
from .boundaries import Thresholds, fit_thresholds, lower_limit, lowest_success, walk_down
from .config import Setting, setting
from .data import DataConfig, Task, ood_tasks, task_pair
from .experiments import FineTuned, fresh_set, pretrained
from .grid import evaluate_merges, grid_points, merged_outputs_on
from .low_rank import truncation_error
from .model import OneLayerTransformer, loss_and_error
from .sparsity import TwoGroups, row_norms, two_groups
from .theorems import learned_threshold, negation_success, theorem3_coordinates
from .training import fine_tune

GRID_CHUNK = 64  # grid points per pass of merged_outputs_on (the λ-grids off the CPU)


# ---- training once per (setting, run, task role), on a device ------------------------------------------------
class FineTunes:
    """The fine-tunes of a sweep, each trained once and kept: ``get(setting, run, task, role)``.

    Keyed on everything that makes the model (the three configs, the run, the role, the task's μ) and trained
    on ``device``; models are kept on the CPU. Nothing is written to disk.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._models0: dict[tuple, OneLayerTransformer] = {}
        self._tuned: dict[tuple, FineTuned] = {}

    def __len__(self) -> int:
        return len(self._tuned)

    def model0(self, s: Setting, run: int) -> OneLayerTransformer:
        """Ψ⁽⁰⁾ of a run under this learner config."""
        key = (s.learner, run)
        if key not in self._models0:
            self._models0[key] = pretrained(s.learner, run)
        return self._models0[key]

    def get(self, s: Setting, run: int, task: Task, role: int) -> FineTuned:
        """Ψ*_T of task role ``role`` in a run (SGD seed ``seeds.finetune(run, role)``), trained on first use."""
        key = (s.data, s.learner, s.train, run, role, tuple(task.mu.tolist()))
        if key not in self._tuned:
            model0 = self.model0(s, run)
            seed = seeds.finetune(run, role)
            tuned, hist = fine_tune(model0, task, s.train, seed=seed, desc=f"fine-tune {task.name}", device=self.device)
            tuned = tuned.cpu()
            self._tuned[key] = FineTuned(task, tuned, TaskVector.from_models(model0, tuned), hist)
        return self._tuned[key]

    def pair(self, s: Setting, run: int, alpha: float = 0.0) -> tuple[FineTuned, FineTuned]:
        """Ψ*_T1 (μ = e₀) and Ψ*_T2 at correlation α of a run (roles ``T1`` and ``pair_t2(α)``)."""
        t1, t2 = task_pair(alpha, s.data)
        return self.get(s, run, t1, seeds.T1), self.get(s, run, t2, seeds.pair_t2(alpha))

    def losses(
        self, s: Setting, run: int, tvs: Sequence[TaskVector], lambdas: np.ndarray, sets: Sequence[tuple]
    ) -> np.ndarray:
        """Test hinge loss of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ for every row of ``lambdas`` (G, k) on each set → (len(sets), G)."""
        model0, lam = self.model0(s, run), np.asarray(lambdas, dtype=float)
        if self.device.type == "cpu":
            return np.stack([evaluate_merges(model0, list(tvs), lam, X, y)[0] for X, y in sets])
        outs = [merged_outputs_on(model0, list(tvs), lam, X, self.device, chunk=GRID_CHUNK) for X, _ in sets]
        return np.stack([loss_and_error(out, y)[0].numpy() for out, (_, y) in zip(outs, sets)])


def sweep_setting(
    params: SimpleNamespace | Mapping[str, Any], n_stop: int, eps: float | None = None, eval_every: int | None = None,
    **changes: Any,
) -> Setting:  # fmt: skip
    """``setting(params, **changes)`` with a stopping set of ``n_stop`` samples; with ``eps``, a fine-tune that stops
    at test hinge loss ≤ ε alone (no error target), checked every ``eval_every`` steps, so that each ε of a sweep
    gives its own model."""
    if eps is None:
        s = setting(params, **changes)
        return s._replace(train=replace(s.train, n_test=n_stop))
    s = setting(params, epsilon=eps, **changes)
    train = replace(s.train, target_error=None, n_test=n_stop, eval_every=eval_every or s.train.eval_every)
    return s._replace(train=train)


# ---- Theorem 1: the boundary's offset β and the |λ|β growth ----------------------------------------------------
def addition_offset(
    loss: np.ndarray, lambdas: Sequence[float], alpha: float, eps: float, eps_factor: float, beta: float
) -> float:
    """λ*(α) − (1 − α): the smallest λ at which Ψ⁽⁰⁾ + ΔΨ_T1 + λΔΨ_T2 learns both tasks (T1 loss ≤ kε + |λ|β,
    T2 loss ≤ kε), minus the theorem's 1 − α; Theorem 1 says at most β. ``loss`` (2, L). NaN if no λ succeeds."""
    loss, lambdas = np.asarray(loss, dtype=float), np.asarray(lambdas, dtype=float)
    ok = (loss[0] <= learned_threshold(lambdas, eps, eps_factor, beta)) & (loss[1] <= eps_factor * eps)
    return float(lowest_success(ok, lambdas)) - (1.0 - alpha)


def loss_slope(loss: Sequence[float], lambdas: Sequence[float]) -> float:
    """How fast a loss grows with |λ| over λ ≤ 0: minus the least-squares slope in λ (the theorem's |λ|β term)."""
    lam, loss = np.asarray(lambdas, dtype=float), np.asarray(loss, dtype=float)
    return -fit_line(lam[lam <= 0], loss[lam <= 0])[0]


# ---- Theorem 2: the lower limit −Θ(α⁻²) ---------------------------------------------------------------------
def negative_grid(smallest: float, largest: float, n: int) -> np.ndarray:
    """n values of λ log-spaced from −largest to −smallest, then 0: ascending, for walking down from λ = 0."""
    if not 0 < smallest < largest or n < 2:
        raise ValueError(f"need 0 < smallest < largest and n ≥ 2, got {smallest}, {largest}, {n}")
    return np.concatenate([-np.logspace(np.log10(largest), np.log10(smallest), n), [0.0]])


def fitted_beta(loss_t1: Sequence[float], lambdas: Sequence[float], eps: float, eps_factor: float) -> float:
    """The smallest β with T1 loss ≤ kε + |λ|β at every λ < 0 of a row (α = 0, where β alone limits λ); ≥ 0."""
    lam, loss = np.asarray(lambdas, dtype=float), np.asarray(loss_t1, dtype=float)
    below = lam < 0
    return max(0.0, float(np.max((loss[below] - eps_factor * eps) / np.abs(lam[below]))))


def negation_limit(
    losses: Callable[[np.ndarray], np.ndarray],
    lambdas: np.ndarray,
    rule: Mapping[str, float],
    n_refine: int,
) -> tuple[float, bool]:
    """|λ_min|: walk down from λ = 0 while Theorem 2's outcome holds (T1 loss ≤ kε + |λ|β, T2 loss ≥ forgotten),
    then refine between the last success and the next grid point on ``n_refine`` evenly spaced λ's.

    ``losses(λ)`` returns the (2, L) losses on T1, T2 at those λ's; ``rule`` holds eps, eps_factor, beta,
    forgotten. Returns (|λ_min|, clipped): clipped when the walk reaches the grid's end (the limit lies beyond);
    (NaN, False) when λ = 0 itself fails.
    """

    def success(lam: np.ndarray) -> np.ndarray:
        loss = losses(lam)[:, None, :]  # (2, 1, L)
        return negation_success(loss, lam, rule["eps"], rule["eps_factor"], rule["beta"], rule["forgotten"])[0]

    lambdas = np.sort(np.asarray(lambdas, dtype=float))
    limit, clipped = lower_limit(success(lambdas)[None], lambdas)
    limit, clipped = float(limit[0]), bool(clipped[0])
    if np.isnan(limit) or clipped or n_refine < 1:
        return abs(limit), clipped
    j = int(np.searchsorted(lambdas, limit))
    fine = np.linspace(lambdas[j - 1], limit, n_refine + 2)[1:-1]  # strictly between the failure and the success
    reached = walk_down(np.concatenate([success(fine), [True]]), len(fine))
    return abs(float(np.concatenate([fine, [limit]])[reached])), False


# ---- Theorem 3 ----------------------------------------------------------------------------------------------
def theorem3_corner(gammas: Sequence[float], threshold: float) -> tuple[float, float]:
    """The (λ₁, λ₂) where Σλᵢγᵢ = Σλᵢγᵢ² = threshold: the corner of Theorem 3's region (two γ's, γ₁ ≠ γ₂)."""
    g = np.asarray(gammas, dtype=float)
    A = np.array([g, g**2])
    if g.shape != (2,) or abs(np.linalg.det(A)) < 1e-12:
        raise ValueError(f"two non-zero, different γ's are needed for a corner, got {g}")
    lam = np.linalg.solve(A, [threshold, threshold])
    return float(lam[0]), float(lam[1])


def ood_thresholds(
    losses: np.ndarray, gammas: Sequence[float], lam1: np.ndarray, lam2: np.ndarray, success_loss: float
) -> Thresholds:
    """The observed thresholds (t₁ of Σλᵢγᵢ, t₂ of Σλᵢγᵢ²) of T' loss ≤ success_loss on the (λ₁, λ₂) grid.

    ``losses`` (len(λ₁)·len(λ₂),) in the order of ``grid_points(lam1, lam2)``."""
    s1, s2 = theorem3_coordinates(gammas, lam1, lam2)
    ok = np.asarray(losses).reshape(len(lam1), len(lam2)) <= success_loss
    return fit_thresholds(ok, s1, s2)


def ood_grid(lam1: np.ndarray, lam2: np.ndarray) -> np.ndarray:
    """The (λ₁, λ₂) points of Theorem 3's grid, λ₁ slowest (``grid_points``)."""
    return grid_points(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float))


# ---- the losses the theorems bound by Θ(ε) ------------------------------------------------------------------
REGION_POINTS = ("Theorem 1 (T2, λ = 1 + β)", "Theorem 2 (T1 kept)", "Theorem 3 (T', region corner)")


def region_losses(
    losses: Callable[[np.ndarray, Sequence[tuple]], np.ndarray],
    sets: Sequence[tuple],
    beta: float,
    neg_lambda: float,
    corner: tuple[float, float],
) -> dict[str, float]:
    """At one point inside each theorem's region, for T1, T2 orthogonal (α = 0) and T': Theorem 1's T2 loss at
    λ = 1 + β (its region's edge), Theorem 2's T1 loss at ``neg_lambda``, Theorem 3's T' loss at the corner.

    ``losses(lambdas, sets)`` evaluates Ψ⁽⁰⁾ + λ₁ΔΨ_T1 + λ₂ΔΨ_T2 → (len(sets), G); ``sets`` = [T1, T2, T']."""
    pair = losses(np.array([[1.0, 1.0 + beta], [1.0, neg_lambda]]), sets[:2])  # (2, 2)
    (ood,) = losses(np.array([list(corner)]), sets[2:])
    return dict(zip(REGION_POINTS, (float(pair[1, 0]), float(pair[0, 1]), float(ood[0]))))


# ---- Corollary 2 --------------------------------------------------------------------------------------------
def choose_regime(groups: Mapping[str, TwoGroups]) -> str:
    """The regime whose row norms split most cleanly into two groups (``TwoGroups.present``), by Ashman's D."""
    present = {name: g.separation for name, g in groups.items() if g.present()}
    if not present:
        raise ValueError(f"no regime shows two groups of row norms: {sorted(groups)}")
    return max(present, key=present.get)


# ---- one run of each law (what a chapter's sweep calls per size and seed) ----------------------------------------
def test_sets(data_cfg: DataConfig, run: int, gammas: Sequence[float], n: int) -> list[tuple]:
    """Fresh test sets of a run: T1 (μ = e₀), T2 orthogonal (α = 0), and T' = γ₁μ_T1 + γ₂μ_T2 (κ = 0, normalised)."""
    t1, t2 = task_pair(0.0, data_cfg)
    target = ood_tasks(list(gammas), 0.0, data_cfg).target
    return [
        fresh_set(t1, n, seeds.test_set(run, seeds.T1)),
        fresh_set(t2, n, seeds.test_set(run, seeds.pair_t2(0.0))),
        fresh_set(target, n, seeds.ood_test(run, 0)),
    ]


def _coef(lam: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(lam), lam], axis=1)  # (L, 2): ΔΨ_T1 at 1, ΔΨ_T2 at λ


def theorem1_run(
    cache: FineTunes, s: Setting, run: int, lam_add: np.ndarray, lam_neg: np.ndarray, n_test: int, eps_factor: float
) -> tuple[float, float]:
    """(λ*(0) − 1, T1 loss slope in |λ| over ``lam_neg``) of one run at α = 0, with the literal β = 1/d."""
    tvs = [ft.task_vector for ft in cache.pair(s, run)]
    sets = test_sets(s.data, run, [1.0, 0.0], n_test)[:2]
    add = cache.losses(s, run, tvs, _coef(np.asarray(lam_add, dtype=float)), sets)
    neg = cache.losses(s, run, tvs, _coef(np.asarray(lam_neg, dtype=float)), sets[:1])[0]
    eps = s.train.target_loss
    return addition_offset(add, lam_add, 0.0, eps, eps_factor, 1.0 / s.data.d), loss_slope(neg, lam_neg)


def theorem2_run(
    cache: FineTunes, s: Setting, run: int, alpha: float, lambdas: np.ndarray, rule: Mapping[str, float], n: int
) -> tuple[float, bool]:
    """``negation_limit`` of Ψ⁽⁰⁾ + ΔΨ_T1 + λΔΨ_T2(α) in one run (fresh T1, T2(α) test sets of n samples)."""
    t1, t2 = task_pair(alpha, s.data)
    tvs = [ft.task_vector for ft in cache.pair(s, run, alpha)]
    sets = [
        fresh_set(t1, n, seeds.test_set(run, seeds.T1)),
        fresh_set(t2, n, seeds.test_set(run, seeds.pair_t2(alpha))),
    ]
    return negation_limit(lambda lam: cache.losses(s, run, tvs, _coef(lam), sets), lambdas, rule, int(rule["n_refine"]))


def ood_run(
    cache: FineTunes, s: Setting, run: int, gammas: Sequence[float], lam1: np.ndarray, lam2: np.ndarray, n: int,
    success_loss: float,
) -> Thresholds:  # fmt: skip
    """Theorem 3's observed thresholds in one run: T' loss of Ψ⁽⁰⁾ + λ₁ΔΨ_T1 + λ₂ΔΨ_T2 over the grid."""
    tvs = [ft.task_vector for ft in cache.pair(s, run)]
    (loss,) = cache.losses(s, run, tvs, ood_grid(lam1, lam2), test_sets(s.data, run, gammas, n)[2:])
    return ood_thresholds(loss, ood_tasks(list(gammas), 0.0, s.data).gammas, lam1, lam2, success_loss)


def region_run(
    cache: FineTunes, s: Setting, run: int, gammas: Sequence[float], c: float, neg_lambda: float, n: int
) -> dict[str, float]:
    """``region_losses`` of one run (β = 1/d literal, Theorem 3's corner at Σλᵢγᵢ = Σλᵢγᵢ² = 1 + c)."""
    tvs = [ft.task_vector for ft in cache.pair(s, run)]
    corner = theorem3_corner(ood_tasks(list(gammas), 0.0, s.data).gammas, 1.0 + c)
    losses = lambda lam, sets: cache.losses(s, run, tvs, lam, sets)  # noqa: E731
    return region_losses(losses, test_sets(s.data, run, gammas, n), 1.0 / s.data.d, neg_lambda, corner)


def low_rank_errors(tv: TaskVector) -> tuple[float, float, float]:
    """Corollary 1's residuals: ‖ΔW − ΔW₁‖_F, ‖ΔV − ΔV₁‖_F, ‖ΔV − ΔV₂‖_F (best rank-k truncations)."""
    (w1,) = truncation_error(tv.deltas["W"], [1])
    v1, v2 = truncation_error(tv.deltas["V"], [1, 2])
    return float(w1), float(v1), float(v2)


def row_groups(cache: FineTunes, s: Setting, run: int) -> TwoGroups:
    """The two groups of ΔV's row norms of Ψ*_T1 (μ = e₀) in one run."""
    t1, _ = task_pair(0.0, s.data)
    return two_groups(row_norms(cache.get(s, run, t1, seeds.T1).task_vector))
