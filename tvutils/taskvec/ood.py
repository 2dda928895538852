"""Theorem 3 (out-of-domain generalization): estimating γ from fine-tuned models, and locating the edges of
the observed success region in the theorem's coordinates.

Theorem 3 [paper]: with orthogonal μ_Tᵢ and μ_T' = Σᵢ γᵢ μ_Tᵢ + κ μ'_⊥, the merge Ψ = Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨ_Tᵢ has
T' loss ≤ Θ(ε) wherever Σᵢ λᵢγᵢ ≥ 1 + c, Σᵢ λᵢγᵢ² ≥ 1 + c and |λᵢ|β ≤ c. This module holds what a chapter needs
beyond the region itself (``tvutils.taskvec.theorems.theorem3_region``):

* three estimates of γ that read only models (and T' inputs), never the true μ_T':
  ``gamma_from_outputs`` (the margin a source model adds on T', relative to the margin it adds on its own task),
  ``gamma_from_readout`` (cosine of the learners' read-out directions āᵀΔV) and ``gamma_from_cosine`` (cosine
  of whole task vectors, the common recipe, shown to fail when task vectors share a component);
* the theorem's coordinates s₁ = Σλᵢγᵢ, s₂ = Σλᵢγᵢ² over a λ grid, and ``fit_thresholds``: the two thresholds
  (t₁, t₂) whose region {s₁ ≥ t₁, s₂ ≥ t₂} best matches an observed success mask (fitted on one seed, to be
  scored on others);
* ``lower_edge``: for each λ₂, the λ₁ from which the merge succeeds; ``best_cell``: the best grid point;
* ``run_ood``: one seed's whole experiment (γ̂ three ways, the T' loss and error over the λ grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from ..editing.task_vector import TaskVector
from .data import OODTasks
from .grid import evaluate_merges, grid_points
from .model import OneLayerTransformer
from .training import evaluate

TEST_SEED_OFFSET = 8_000_000  # T' / Tᵢ test sets never share a generator seed with training or stopping sets

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


# ---- the theorem's coordinates and the observed edges ------------------------------------------------------


def theorem3_coordinates(gammas: ArrayLike, lam1: ArrayLike, lam2: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """s₁ = λ₁γ₁ + λ₂γ₂ and s₂ = λ₁γ₁² + λ₂γ₂² on the grid, each of shape (len(λ₁), len(λ₂))."""
    g = np.asarray(gammas, dtype=float)
    if g.shape != (2,):
        raise ValueError(f"two γ's expected, got shape {g.shape}")
    L1, L2 = np.meshgrid(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float), indexing="ij")
    return L1 * g[0] + L2 * g[1], L1 * g[0] ** 2 + L2 * g[1] ** 2


def orthant(s1: np.ndarray, s2: np.ndarray, t1: float, t2: float) -> np.ndarray:
    """The region {s₁ ≥ t₁ and s₂ ≥ t₂} as a boolean mask (Theorem 3's form, without |λᵢ|β ≤ c)."""
    return (np.asarray(s1) >= t1 - 1e-12) & (np.asarray(s2) >= t2 - 1e-12)


def balanced_accuracy(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates of a predicted mask against an observed one."""
    p, o = np.asarray(predicted, dtype=bool), np.asarray(observed, dtype=bool)
    if p.shape != o.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {o.shape}")
    rates = [float(p[o].mean()) if o.any() else None, float((~p[~o]).mean()) if (~o).any() else None]
    rates = [r for r in rates if r is not None]
    return float(np.mean(rates))


@dataclass(frozen=True)
class Thresholds:
    """Fitted edges of the success region in Theorem 3's coordinates."""

    t1: float  # edge in s₁ = Σλᵢγᵢ (−inf: no edge in s₁ inside the grid)
    t2: float  # edge in s₂ = Σλᵢγᵢ² (−inf: no edge in s₂ inside the grid)
    balanced_accuracy: float  # of the region {s₁ ≥ t₁, s₂ ≥ t₂} against the mask it was fitted on


def _cut_points(values: np.ndarray) -> np.ndarray:
    """Candidate thresholds: −inf (no condition), then midway between consecutive distinct values."""
    u = np.unique(np.round(np.asarray(values, dtype=float).ravel(), 9))
    return np.concatenate([[-np.inf], (u[1:] + u[:-1]) / 2])


def fit_thresholds(success: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> Thresholds:
    """The (t₁, t₂) whose region {s₁ ≥ t₁, s₂ ≥ t₂} has the highest balanced accuracy against ``success``.

    Candidates lie midway between neighbouring cells' coordinates, so a threshold sits on the observed edge;
    −inf means that coordinate needs no threshold on this grid (its edge, if any, lies outside the grid).
    Ties go to the smallest t₁, then the smallest t₂ (the largest region among equally good ones).
    """
    ok = np.asarray(success, dtype=bool).ravel()
    a, b = np.asarray(s1, dtype=float).ravel(), np.asarray(s2, dtype=float).ravel()
    if not ok.any() or ok.all():
        raise ValueError("the success mask must hold both successes and failures to place an edge")
    c1, c2 = _cut_points(a), _cut_points(b)
    above2 = b[None, :] >= c2[:, None]  # (n2, cells)
    best = (-1.0, 0.0, 0.0)
    for t1 in c1:
        pred = (a >= t1)[None, :] & above2  # (n2, cells)
        tpr = (pred & ok).sum(1) / ok.sum()
        tnr = (~pred & ~ok).sum(1) / (~ok).sum()
        score = (tpr + tnr) / 2
        j = int(np.argmax(score))
        if score[j] > best[0] + 1e-12:
            best = (float(score[j]), float(t1), float(c2[j]))
    return Thresholds(t1=best[1], t2=best[2], balanced_accuracy=best[0])


def lower_edge(success: np.ndarray, lam1: ArrayLike) -> np.ndarray:
    """For each column (λ₂), the smallest λ₁ from which every larger λ₁ succeeds; NaN if the top cell fails.

    ``success`` has shape (len(λ₁), len(λ₂)) with λ₁ ascending along rows. → (len(λ₂),).
    """
    s = np.asarray(success, dtype=bool)
    lam1 = np.asarray(lam1, dtype=float)
    if s.shape[0] != len(lam1) or np.any(np.diff(lam1) <= 0):
        raise ValueError("success must have one row per λ₁, with λ₁ ascending")
    out = np.full(s.shape[1], np.nan)
    for j in range(s.shape[1]):
        i = len(lam1) - 1
        if not s[i, j]:
            continue
        while i > 0 and s[i - 1, j]:
            i -= 1
        out[j] = lam1[i]
    return out


def best_cell(
    loss: np.ndarray, error: np.ndarray, lam1: ArrayLike, lam2: ArrayLike, nonzero: bool = True
) -> tuple[int, int]:
    """Index (i, j) of the best grid point: lowest loss, then lowest error, then smallest ‖λ‖ (many cells can
    reach zero hinge loss; ties go to the smallest edit). ``nonzero`` keeps to λᵢ ≠ 0, as Theorem 3 requires."""
    loss, error = np.asarray(loss, dtype=float), np.asarray(error, dtype=float)
    L1, L2 = np.meshgrid(np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float), indexing="ij")
    if loss.shape != L1.shape or error.shape != L1.shape:
        raise ValueError(f"loss and error must have shape {L1.shape}")
    barred = ((np.abs(L1) < 1e-12) | (np.abs(L2) < 1e-12)) if nonzero else np.zeros(L1.shape, dtype=bool)
    if barred.all():
        raise ValueError("no grid point has every λᵢ ≠ 0")
    order = np.lexsort((np.hypot(L1, L2).ravel(), error.ravel(), loss.ravel(), barred.ravel()))
    i, j = np.unravel_index(int(order[0]), loss.shape)
    return int(i), int(j)


def orthant_edge(gammas: ArrayLike, t1: float, t2: float, lam2: ArrayLike) -> np.ndarray:
    """For each λ₂, the smallest λ₁ with s₁ ≥ t₁ and s₂ ≥ t₂ (needs γ₁ > 0): max((t₁ − γ₂λ₂)/γ₁, (t₂ − γ₂²λ₂)/γ₁²)."""
    g = np.asarray(gammas, dtype=float)
    if g.shape != (2,) or g[0] <= 0:
        raise ValueError(f"two γ's with γ₁ > 0 expected, got {g}")
    lam2 = np.asarray(lam2, dtype=float)
    return np.maximum((t1 - g[1] * lam2) / g[0], (t2 - g[1] ** 2 * lam2) / g[0] ** 2)


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
    number) is split in two halves, so a best λ can be chosen on one half and scored on the other.
    """
    if len(models) != 3 or len(ood.sources) != 2:
        raise ValueError("run_ood takes two source tasks and the models Ψ*_T1, Ψ*_T2, Ψ*_T'")
    if n_test < 2 or n_test % 2:
        raise ValueError(f"n_test must be an even number ≥ 2, got {n_test}")
    lam1, lam2 = np.asarray(lam1, dtype=float), np.asarray(lam2, dtype=float)
    base = TEST_SEED_OFFSET + 100 * seed
    X_t, y_t = ood.target.sample(n_test, torch.Generator().manual_seed(base))
    source_sets = [t.sample(n_test, torch.Generator().manual_seed(base + 1 + k)) for k, t in enumerate(ood.sources)]
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
        gamma_outputs=gamma_from_outputs(model0, models[:2], source_sets, (X_t, y_t)),
        gamma_readout=gamma_from_readout(model0, tvs[:2], tvs[2]),
        gamma_cosine=gamma_from_cosine(tvs[:2], tvs[2]),
    )
