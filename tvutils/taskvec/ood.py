"""Theorem 3 (out-of-domain generalization): estimating γ from fine-tuned models, and locating the edges of
the observed success region in the theorem's coordinates.

Theorem 3 [paper]: with orthogonal μ_Tᵢ and μ_T' = Σᵢ γᵢ μ_Tᵢ + κ μ'_⊥, the merge Ψ = Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨ_Tᵢ has
T' loss ≤ Θ(ε) wherever Σᵢ λᵢγᵢ ≥ 1 + c, Σᵢ λᵢγᵢ² ≥ 1 + c and |λᵢ|β ≤ c. This module holds what a chapter needs
beyond the region itself (``tvutils.taskvec.theorems.theorem3_region``):

* three estimates of γ that read only models (and T' inputs), never the true μ_T':
  ``gamma_from_outputs`` (the margin a source model adds on T', relative to the margin it adds on its own task),
  ``gamma_from_readout`` (cosine of the learners' read-out directions āᵀΔV) and ``gamma_from_cosine`` (cosine
  of whole task vectors, the common recipe, shown to fail when task vectors share a component);
* ``run_ood``: one seed's whole experiment (γ̂ three ways, estimated on a T' probe set that is never scored;
  the T' loss and error over the λ grid on two other halves), and ``table2``: its summary in the layout of the
  paper's Table 2;
* ``merge_gain`` and ``single_gain``: what the best merge gains over the two source models, and over the best
  rescaled single task vector (the λ₂ = 0 and λ₁ = 0 lines), chosen on one half and scored on the other.

The theorem's coordinates and region are in ``tvutils.taskvec.theorems``; the observed edges, the fitted
thresholds and the best grid point in ``tvutils.taskvec.boundaries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from torch import nn

from ..editing.task_vector import TaskVector
from . import seeds
from .boundaries import best_cell
from .data import OODTasks
from .grid import evaluate_merges, grid_points
from .model import OneLayerTransformer
from .theorems import theorem3_coordinates, theorem3_region
from .training import evaluate

# the roles of ``seeds.ood_test(run, k)``: T' scored (k = 0), the sources T₁, T₂ (k = 1, 2), and the T' probe
# set on which γ̂ is estimated (k = 3), disjoint from the scored set
SCORED, PROBE = 0, 3

# ---- estimating γ from models ------------------------------------------------------------------------------


def readout_direction(model0: OneLayerTransformer, task_vector: TaskVector) -> torch.Tensor:
    """The token direction along which ΔΨ raises the output: r = āᵀ ΔV with ā = mean over l of a_(l). → (d,).

    A neuron of V whose a is positive learns +μ_T and one whose a is negative learns −μ_T, so r points along
    μ_T with its sign; a shared shift of every row (the irrelevant patterns' bias) cancels, as ā sums to zero.
    """
    a_bar = model0.a.mean(0)  # (m,)
    return a_bar @ task_vector.deltas["V"]  # (d,)


def gamma_from_readout(
    model0: OneLayerTransformer, source_vectors: Sequence[TaskVector], target_vector: TaskVector
) -> np.ndarray:
    """γ̂ᵢ = cos(rᵢ, r_T'): cosine of the read-out directions of ΔΨ_Tᵢ and ΔΨ_T' (needs Ψ*_T'). → (k,)."""
    r_target = readout_direction(model0, target_vector).double()
    out = []
    for tv in source_vectors:
        r = readout_direction(model0, tv).double()
        out.append(float(r @ r_target / (r.norm() * r_target.norm())))
    return np.array(out)


def gamma_from_cosine(source_vectors: Sequence[TaskVector], target_vector: TaskVector) -> np.ndarray:
    """γ̂ᵢ = cos(ΔΨ_Tᵢ, ΔΨ_T') over every parameter (the usual task-vector similarity). → (k,)."""
    return np.array([tv.cosine(target_vector) for tv in source_vectors])


@torch.no_grad()
def signed_margin_gain(model0: nn.Module, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """E[y · (f(X; Ψ) − f(X; Ψ⁽⁰⁾))]: how much a model adds, on average, to the correct side of the margin."""
    return float((y * (model(X) - model0(X))).mean())


def gamma_from_outputs(
    model0: nn.Module,
    source_models: Sequence[nn.Module],
    source_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    target_set: tuple[torch.Tensor, torch.Tensor],
) -> np.ndarray:
    """γ̂ᵢ = E_T'[y Δfᵢ] / E_Tᵢ[y Δfᵢ] with Δfᵢ = f(·; Ψ*_Tᵢ) − f(·; Ψ⁽⁰⁾). → (k,).

    Output similarity: the margin Ψ*_Tᵢ adds on T' inputs, in units of the margin it adds on its own task.
    If the model's response were linear in the token direction it would be exactly μ_Tᵢᵀ μ_T' = γᵢ; the
    softmax and the ReLU make it an estimate. Needs samples of T' and Tᵢ, not Ψ*_T'.
    """
    if len(source_models) != len(source_sets):
        raise ValueError(f"{len(source_models)} source models but {len(source_sets)} source test sets")
    X_t, y_t = target_set
    out = []
    for model, (X_s, y_s) in zip(source_models, source_sets):
        own = signed_margin_gain(model0, model, X_s, y_s)
        if own <= 0:
            raise ValueError("a source model adds no margin on its own task: it was not fine-tuned")
        out.append(signed_margin_gain(model0, model, X_t, y_t) / own)
    return np.array(out)


# ---- one seed's experiment ---------------------------------------------------------------------------------


@dataclass
class OODRun:
    """One seed of the Theorem 3 experiment: γ̂ and the T' test loss and error over the λ grid."""

    seed: int
    gammas: np.ndarray  # (2,) the true γ (after normalisation); used only to compare, never to estimate
    lam1: np.ndarray  # (L1,)
    lam2: np.ndarray  # (L2,)
    loss: np.ndarray  # (2, L1, L2): T' hinge loss of Ψ⁽⁰⁾ + λ₁ΔΨ_T1 + λ₂ΔΨ_T2 on the two halves of the test set
    error: np.ndarray  # (2, L1, L2)
    reference: dict[str, np.ndarray]  # model name → (2, 2): [half, (loss, error)] of Ψ*_T', Ψ⁽⁰⁾ on T'
    gamma_outputs: np.ndarray  # (2,) γ̂ by output similarity (``gamma_from_outputs``)
    gamma_readout: np.ndarray  # (2,) γ̂ by read-out directions (``gamma_from_readout``)
    gamma_cosine: np.ndarray  # (2,) γ̂ by whole-task-vector cosine (``gamma_from_cosine``)

    @property
    def mean_loss(self) -> np.ndarray:
        """T' loss on the whole test set (the halves have equal size). (L1, L2)."""
        return self.loss.mean(0)

    @property
    def mean_error(self) -> np.ndarray:
        return self.error.mean(0)

    def cell(self, l1: float, l2: float) -> tuple[int, int]:
        """Grid index of (λ₁, λ₂), which must be on the grid."""
        i, j = int(np.argmin(np.abs(self.lam1 - l1))), int(np.argmin(np.abs(self.lam2 - l2)))
        if abs(self.lam1[i] - l1) > 1e-9 or abs(self.lam2[j] - l2) > 1e-9:
            raise ValueError(f"(λ₁, λ₂) = ({l1}, {l2}) is not on the grid")
        return i, j


def run_ood(
    model0: OneLayerTransformer,
    ood: OODTasks,
    models: Sequence[nn.Module],
    lam1: ArrayLike,
    lam2: ArrayLike,
    n_test: int,
    seed: int,
) -> OODRun:
    """Evaluate Ψ⁽⁰⁾ + λ₁ΔΨ_T1 + λ₂ΔΨ_T2 on fresh T' test data over the grid, and estimate γ̂.

    ``models`` are Ψ*_T1, Ψ*_T2 and Ψ*_T', fine-tuned from ``model0``. The T' test set (n_test samples, an even
    number) is split in two halves, so a best λ can be chosen on one half and scored on the other; γ̂ by outputs
    is estimated on a separate T' probe set of n_test samples, never on the scored one.
    """
    if len(models) != 3 or len(ood.sources) != 2:
        raise ValueError("run_ood takes two source tasks and the models Ψ*_T1, Ψ*_T2, Ψ*_T'")
    if n_test < 2 or n_test % 2:
        raise ValueError(f"n_test must be an even number ≥ 2, got {n_test}")
    lam1, lam2 = np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float)
    X_t, y_t = ood.target.sample(n_test, torch.Generator().manual_seed(seeds.ood_test(seed, SCORED)))
    probe = ood.target.sample(n_test, torch.Generator().manual_seed(seeds.ood_test(seed, PROBE)))
    source_sets = [
        t.sample(n_test, torch.Generator().manual_seed(seeds.ood_test(seed, 1 + k))) for k, t in enumerate(ood.sources)
    ]
    tvs = [TaskVector.from_models(model0, m) for m in models]
    halves = [(X_t[: n_test // 2], y_t[: n_test // 2]), (X_t[n_test // 2 :], y_t[n_test // 2 :])]
    G = grid_points(lam1, lam2)  # (L1·L2, 2), λ₁ slowest
    loss, error = np.zeros((2, len(lam1), len(lam2))), np.zeros((2, len(lam1), len(lam2)))
    for h, (X, y) in enumerate(halves):
        lo, er = evaluate_merges(model0, tvs[:2], G, X, y)
        loss[h], error[h] = lo.reshape(len(lam1), len(lam2)), er.reshape(len(lam1), len(lam2))
    reference = {
        name: np.array([evaluate(m, X, y) for X, y in halves]) for name, m in (("Ψ*_T'", models[2]), ("Ψ⁽⁰⁾", model0))
    }
    return OODRun(
        seed=seed,
        gammas=np.array(ood.gammas, dtype=float),
        lam1=lam1,
        lam2=lam2,
        loss=loss,
        error=error,
        reference=reference,
        gamma_outputs=gamma_from_outputs(model0, models[:2], source_sets, probe),
        gamma_readout=gamma_from_readout(model0, tvs[:2], tvs[2]),
        gamma_cosine=gamma_from_cosine(tvs[:2], tvs[2]),
    )


LITERAL_HAT, LITERAL_TRUE, AUTHORS, FITTED = "literal, from γ̂", "literal, from γ", "authors' thresholds", "fitted"


def drawn_regions(
    run: OODRun, c: float, beta: float, fitted: tuple[float, float], authors: float
) -> dict[str, np.ndarray]:
    """The regions drawn on one run's grid, masks (L1, L2): Theorem 3's literal region (1 + c) from γ̂ and from
    γ, and the same form with the thresholds of the authors' figure (both = ``authors``) and fitted ones, from γ̂."""
    g, l1, l2 = run.gamma_outputs, run.lam1, run.lam2
    return {
        LITERAL_HAT: theorem3_region(g, l1, l2, c=c, beta=beta),
        LITERAL_TRUE: theorem3_region(run.gammas, l1, l2, c=c, beta=beta),
        AUTHORS: theorem3_region(g, l1, l2, c=c, beta=beta, thresholds=(authors, authors)),
        FITTED: theorem3_region(g, l1, l2, c=c, beta=beta, thresholds=fitted),
    }


def s2_reach(run: OODRun, t1: float) -> float:
    """The lowest s₂ (from γ̂ by outputs) the grid reaches where s₁ ≥ t₁: an s₂ edge below it cannot be seen."""
    s1, s2 = theorem3_coordinates(run.gamma_outputs, run.lam1, run.lam2)
    return float(s2[s1 >= t1].min())


def merge_gain(run: OODRun) -> float:
    """T' loss margin of the best merge (chosen on half A) over the better source model, both scored on half B."""
    i, j = best_cell(run.loss[0], run.error[0], run.lam1, run.lam2)
    singles = [run.loss[1][run.cell(1, 0)], run.loss[1][run.cell(0, 1)]]
    return float(min(singles) - run.loss[1, i, j])


def best_single(run: OODRun, half: int = 0) -> tuple[int, int]:
    """The best rescaled single task vector, chosen on one half: the best cell of the lines λ₂ = 0 (ΔΨ_T1 alone)
    and λ₁ = 0 (ΔΨ_T2 alone), by loss, then error, then the smallest |λ| (as ``best_cell``)."""
    i0, j0 = int(np.argmin(np.abs(run.lam1))), int(np.argmin(np.abs(run.lam2)))
    if abs(run.lam1[i0]) > 1e-9 or abs(run.lam2[j0]) > 1e-9:
        raise ValueError("the grid must contain λ₁ = 0 and λ₂ = 0")
    cells = [(i, j0) for i in range(len(run.lam1))] + [(i0, j) for j in range(len(run.lam2))]
    key = [(run.loss[half, i, j], run.error[half, i, j], abs(run.lam1[i]) + abs(run.lam2[j])) for i, j in cells]
    return cells[min(range(len(cells)), key=key.__getitem__)]


def single_gain(run: OODRun) -> float:
    """T' loss margin of the best merge (λᵢ ≠ 0) over the best rescaled single task vector, both chosen on half
    A and scored on half B (0 when both reach the same loss, e.g. zero hinge loss)."""
    i, j = best_cell(run.loss[0], run.error[0], run.lam1, run.lam2)
    return float(run.loss[1][best_single(run)] - run.loss[1, i, j])


def table2(run: OODRun, paper_best: tuple[float, float] = (1.2, -0.6)) -> pd.DataFrame:
    """The paper's Table 2 layout for one run: (λ₁, λ₂), T' loss and accuracy of the model fine-tuned on T', the
    two source models, the best rescaled single task vector and the best merge (each picked on half A, scored on
    half B; the best merge also picked on the whole test set, as the paper did) and the paper's best λ."""
    full_best = best_cell(run.mean_loss, run.mean_error, run.lam1, run.lam2)
    half_best = best_cell(run.loss[0], run.error[0], run.lam1, run.lam2)
    ref = run.reference["Ψ*_T'"].mean(0)
    cols = {"fine-tuned on T'": ("N/A", ref[0], 1 - ref[1])}
    for label, (i, j), half in [
        ("Ψ*_T1", run.cell(1, 0), None),
        ("Ψ*_T2", run.cell(0, 1), None),
        ("best single vector, rescaled (half A → half B)", best_single(run), 1),
        ("best λ (test set)", full_best, None),
        ("best λ (half A → half B)", half_best, 1),
        ("the paper's best λ", run.cell(*paper_best), None),
    ]:
        loss = run.mean_loss[i, j] if half is None else run.loss[half, i, j]
        error = run.mean_error[i, j] if half is None else run.error[half, i, j]
        cols[label] = (f"({run.lam1[i]:g}, {run.lam2[j]:g})", loss, 1 - error)
    return pd.DataFrame(cols, index=["(λ₁, λ₂)", "T' loss (ours)", "T' accuracy (ours)"])
