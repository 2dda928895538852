"""The experiments behind the theorem chapters: fine-tune tasks from one Ψ⁽⁰⁾, sweep merges, judge success.

A chapter runs three stages, each a function here:

1. ``pretrained`` builds Ψ⁽⁰⁾ and ``fine_tune_tasks`` fine-tunes Ψ*_T for each task from it, returning the
   task vectors ΔΨ_T = Ψ*_T − Ψ⁽⁰⁾ (``pair_vectors`` does this for the pair T1, T2 at every correlation α).
2. ``sweep_merges`` / ``sweep_pairs`` evaluate Ψ = Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ on fresh test sets (hinge loss and
   error, batched through ``tvutils.taskvec.grid.evaluate_merges``). A ``transform`` (e.g. ``lambda tv: tv.low_rank(1)``)
   re-runs the same sweep with edited task vectors, without fine-tuning again.
3. ``addition_success`` / ``negation_success`` turn losses into the theorems' outcomes, and
   ``lowest_success``, ``lower_limit``, ``fit_line`` and ``fit_power`` measure where the observed boundary lies.

Seeds: everything is derived from one integer per run (Ψ⁽⁰⁾, each fine-tune, each test set get their own
generator), so the same arguments give the same numbers, and a task's seed does not depend on which other
correlations are in the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..chapter.progress import progress
from ..editing.task_vector import TaskVector
from .data import DataConfig, Task, task_pair
from .grid import evaluate_merges
from .model import LearnerConfig, OneLayerTransformer
from .training import History, TrainConfig, fine_tune

TEST_SEED_OFFSET = 7_000_000  # fresh test sets never share a generator seed with training or stopping sets


# ---- stage 1: Ψ⁽⁰⁾ and task vectors ------------------------------------------------------------------------
def learner_config(data_cfg: DataConfig, **kwargs) -> LearnerConfig:
    """A LearnerConfig whose d and P match the data (other fields from ``kwargs`` or the defaults)."""
    return LearnerConfig(d=data_cfg.d, P=data_cfg.P, **kwargs)


def pretrained(learner_cfg: LearnerConfig, seed: int) -> OneLayerTransformer:
    """Ψ⁽⁰⁾: the learner at initialisation (W⁽⁰⁾ = w_init·I, Gaussian V⁽⁰⁾, fixed a), from ``seed``."""
    return OneLayerTransformer(learner_cfg, seed=seed)


@dataclass
class FineTuned:
    """One fine-tuned task: Ψ*_T, its task vector and how training went."""

    task: Task
    model: OneLayerTransformer
    task_vector: TaskVector
    history: History

    @property
    def reached(self) -> bool:
        return self.history.reached

    @property
    def final_loss(self) -> float:
        """Test hinge loss at the last evaluation (on the stopping set, not the fresh test set)."""
        return self.history.test_loss[-1]


def fine_tune_tasks(
    model0: OneLayerTransformer, tasks: Sequence[Task], train_cfg: TrainConfig, seeds: Sequence[int]
) -> list[FineTuned]:
    """Fine-tune Ψ*_T for each task from the same Ψ⁽⁰⁾ (one SGD seed each); returns models and task vectors."""
    if len(seeds) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(seeds)} seeds")
    out = []
    for task, seed in zip(tasks, seeds):
        tuned, hist = fine_tune(model0, task, train_cfg, seed=seed, desc=f"fine-tune {task.name}")
        out.append(FineTuned(task, tuned, TaskVector.from_models(model0, tuned), hist))
    return out


def test_set(task: Task, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh test set of n samples of ``task``: X (n, P, d), y (n,)."""
    return task.sample(n, torch.Generator().manual_seed(TEST_SEED_OFFSET + seed))


def alpha_code(alpha: float) -> int:
    """An integer naming α to 0.01 (0 … 200), used to derive T2's seeds independently of the α grid."""
    return int(round(100 * (float(alpha) + 1.0)))


@dataclass
class PairVectors:
    """Ψ⁽⁰⁾, T1's fine-tuned model and, for each α, T2's: everything ``sweep_pairs`` needs for one seed."""

    seed: int
    alphas: np.ndarray  # (A,)
    model0: OneLayerTransformer
    t1: FineTuned
    t2: list[FineTuned]  # one per α

    def task_vectors(self, i: int) -> list[TaskVector]:
        """[ΔΨ_T1, ΔΨ_T2(αᵢ)]."""
        return [self.t1.task_vector, self.t2[i].task_vector]

    def subset(self, keep: Sequence[bool] | np.ndarray) -> PairVectors:
        """The same pair restricted to the α's where ``keep`` is True (no fine-tuning again)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.alphas.shape:
            raise ValueError(f"keep has shape {keep.shape}, the α grid {self.alphas.shape}")
        return PairVectors(self.seed, self.alphas[keep], self.model0, self.t1, [t for t, k in zip(self.t2, keep) if k])


def pair_vectors(
    alphas: Sequence[float], data_cfg: DataConfig, learner_cfg: LearnerConfig, train_cfg: TrainConfig, seed: int
) -> PairVectors:
    """Ψ⁽⁰⁾ from ``seed``; Ψ*_T1 once (μ_T1 = e₀ for every α) and Ψ*_T2 for each α, all from that Ψ⁽⁰⁾."""
    alphas = np.asarray(alphas, dtype=float)
    model0 = pretrained(learner_cfg, seed)
    t1_task, _ = task_pair(0.0, data_cfg)
    (t1,) = fine_tune_tasks(model0, [t1_task], train_cfg, [1000 * seed + 1])
    t2 = []
    for alpha in progress(alphas, desc=f"fine-tune T2 over α (seed {seed})"):
        _, t2_task = task_pair(float(alpha), data_cfg)
        t2 += fine_tune_tasks(model0, [t2_task], train_cfg, [1000 * seed + 300 + alpha_code(alpha)])
    return PairVectors(seed, alphas, model0, t1, t2)


# ---- stage 2: sweeps ---------------------------------------------------------------------------------------
def sweep_merges(
    model0: OneLayerTransformer,
    task_vectors: Sequence[TaskVector],
    lambdas: np.ndarray,
    eval_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    transform: Callable[[TaskVector], TaskVector] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hinge loss and error of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ for every row of ``lambdas`` (G, k) on each evaluation set.

    Returns two arrays of shape (len(eval_sets), G). ``transform`` edits each task vector first.
    """
    tvs = [transform(tv) for tv in task_vectors] if transform is not None else list(task_vectors)
    lam = np.asarray(lambdas, dtype=float)
    losses, errors = [], []
    for X, y in eval_sets:
        loss, err = evaluate_merges(model0, tvs, lam, X, y)
        losses.append(loss)
        errors.append(err)
    return np.stack(losses), np.stack(errors)


@dataclass
class PairSweep:
    """Test hinge loss and error of Ψ = Ψ⁽⁰⁾ + ΔΨ_T1 + λΔΨ_T2 on T1 and T2, over seeds × α × λ."""

    seeds: np.ndarray  # (S,)
    alphas: np.ndarray  # (A,)
    lambdas: np.ndarray  # (L,)
    loss: np.ndarray  # (S, 2, A, L): [seed, task (0 = T1, 1 = T2), α, λ]
    error: np.ndarray  # (S, 2, A, L)
    finetune_loss: np.ndarray = field(default=None)  # (S, 2, A): stopping-set loss Ψ*_T1, Ψ*_T2(α) reached
    reached: np.ndarray = field(default=None)  # (S, 2, A): whether fine-tuning met its target
    cosine: np.ndarray = field(default=None)  # (S, A): cosine of ΔΨ_T1 and ΔΨ_T2 in parameter space

    @property
    def accuracy(self) -> np.ndarray:
        return 1.0 - self.error


def sweep_pairs(
    pairs: Sequence[PairVectors],
    lambdas: Sequence[float],
    n_test: int,
    transform: Callable[[TaskVector], TaskVector] | None = None,
) -> PairSweep:
    """Evaluate Ψ⁽⁰⁾ + ΔΨ_T1 + λΔΨ_T2 for every seed's pair, α and λ on fresh test sets of T1 and T2."""
    lambdas = np.asarray(lambdas, dtype=float)
    alphas = pairs[0].alphas
    if any(not np.array_equal(p.alphas, alphas) for p in pairs):
        raise ValueError("every seed's pair must use the same α grid")
    coef = np.stack([np.ones_like(lambdas), lambdas], axis=1)  # (L, 2): ΔΨ_T1 at 1, ΔΨ_T2 at λ
    S, A, L = len(pairs), len(alphas), len(lambdas)
    loss, error = np.zeros((S, 2, A, L)), np.zeros((S, 2, A, L))
    ft_loss, reached, cosine = np.zeros((S, 2, A)), np.zeros((S, 2, A), dtype=bool), np.zeros((S, A))
    for s, pair in enumerate(pairs):
        t1_test = test_set(pair.t1.task, n_test, 1000 * pair.seed + 1)
        for i in progress(range(A), desc=f"sweep λ over α (seed {pair.seed})"):
            t2_test = test_set(pair.t2[i].task, n_test, 1000 * pair.seed + 300 + alpha_code(alphas[i]))
            loss[s, :, i], error[s, :, i] = sweep_merges(
                pair.model0, pair.task_vectors(i), coef, [t1_test, t2_test], transform
            )
            ft_loss[s, :, i] = pair.t1.final_loss, pair.t2[i].final_loss
            reached[s, :, i] = pair.t1.reached, pair.t2[i].reached
            cosine[s, i] = pair.t1.task_vector.cosine(pair.t2[i].task_vector)
    seeds = np.array([p.seed for p in pairs])
    return PairSweep(seeds, alphas, lambdas, loss, error, ft_loss, reached, cosine)


def run_pair_sweep(
    alphas: Sequence[float],
    lambdas: Sequence[float],
    data_cfg: DataConfig,
    learner_cfg: LearnerConfig,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    n_test: int,
) -> tuple[PairSweep, list[PairVectors]]:
    """``pair_vectors`` for every seed, then ``sweep_pairs``: the whole Theorem 1/2 experiment in one call."""
    pairs = [pair_vectors(alphas, data_cfg, learner_cfg, train_cfg, seed) for seed in seeds]
    return sweep_pairs(pairs, lambdas, n_test), pairs


# ---- stage 3: outcomes and boundaries ----------------------------------------------------------------------
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


def lowest_success(success: np.ndarray, lambdas: Sequence[float]) -> np.ndarray:
    """Per row (α), the smallest λ whose cell succeeds; NaN where none does. (…, L) → (…)."""
    success = np.asarray(success, dtype=bool)
    lambdas = np.asarray(lambdas, dtype=float)
    order = np.argsort(lambdas)
    s = success[..., order]
    first = np.argmax(s, axis=-1)
    return np.where(s.any(axis=-1), lambdas[order][first], np.nan)


def lower_limit(success: np.ndarray, lambdas: Sequence[float], start: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per row, walk down from λ = ``start`` while cells succeed: the last λ reached (NaN if ``start`` fails).

    Returns (limit, clipped): ``clipped`` is True where the run reaches the grid's smallest λ, so the true
    limit lies at or below it. (…, L) → (…), (…).
    """
    success = np.asarray(success, dtype=bool)
    lambdas = np.asarray(lambdas, dtype=float)
    order = np.argsort(lambdas)
    lam_sorted, s = lambdas[order], success[..., order]
    j0 = int(np.argmin(np.abs(lam_sorted - start)))
    if abs(lam_sorted[j0] - start) > 1e-9:
        raise ValueError(f"λ = {start} is not on the grid")
    flat = s.reshape(-1, s.shape[-1])
    limit, clipped = np.full(len(flat), np.nan), np.zeros(len(flat), dtype=bool)
    for r, row in enumerate(flat):
        if not row[j0]:
            continue
        j = j0
        while j > 0 and row[j - 1]:
            j -= 1
        limit[r], clipped[r] = lam_sorted[j], j == 0
    return limit.reshape(s.shape[:-1]), clipped.reshape(s.shape[:-1])


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


def largest_constant(alpha: Sequence[float], limit: Sequence[float], clipped: Sequence[bool] | None = None) -> float:
    """The largest C with −C/α² ≥ the observed lower limit at every α < 0: C = min over α of |limit|·α².

    Rows whose limit was clipped by the grid only bound C from below and are skipped; α = 0 and NaN limits
    (no success even at the start) are skipped too. NaN if nothing is left.
    """
    a, lim = np.asarray(alpha, dtype=float).ravel(), np.asarray(limit, dtype=float).ravel()
    clip = np.zeros_like(a, dtype=bool) if clipped is None else np.asarray(clipped, dtype=bool).ravel()
    keep = (a < 0) & np.isfinite(lim) & ~clip
    if not keep.any():
        return float("nan")
    return float(np.min(np.abs(lim[keep]) * a[keep] ** 2))
