"""The experiments behind the theorem chapters: fine-tune tasks from one Ψ⁽⁰⁾, sweep merges, judge success.

A chapter runs three stages, each a function here:

1. ``pretrained`` builds Ψ⁽⁰⁾ and ``fine_tune_tasks`` fine-tunes Ψ*_T for each task from it, returning the
   task vectors ΔΨ_T = Ψ*_T − Ψ⁽⁰⁾ (``pair_vectors`` does this for the pair T1, T2 at every correlation α).
2. ``sweep_merges`` / ``sweep_pairs`` evaluate Ψ = Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ on fresh test sets (hinge loss and
   error, batched through ``tvutils.taskvec.grid.evaluate_merges``). A ``transform`` (e.g. ``lambda tv: low_rank(tv, 1)``)
   re-runs the same sweep with edited task vectors, without fine-tuning again.
3. ``tvutils.taskvec.theorems`` turns the losses into the theorems' outcomes (``addition_success``,
   ``negation_success``), and ``tvutils.taskvec.boundaries`` measures where the observed boundary lies.

Seeds: everything is derived from one integer per run by ``tvutils.taskvec.seeds`` (Ψ⁽⁰⁾, each fine-tune,
each test set get their own generator), so the same arguments give the same numbers, and a task's seed does
not depend on which other correlations are in the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..chapter.progress import progress
from ..editing.task_vector import TaskVector, merge
from . import seeds
from .data import DataConfig, Task, task_pair
from .grid import evaluate_merges
from .model import LearnerConfig, OneLayerTransformer
from .training import History, TrainConfig, evaluate, fine_tune


# ---- stage 1: Ψ⁽⁰⁾ and task vectors ------------------------------------------------------------------------
def pretrained(learner_cfg: LearnerConfig, seed: int) -> OneLayerTransformer:
    """Ψ⁽⁰⁾ of run ``seed``: the learner at initialisation (W⁽⁰⁾ = w_init·I, Gaussian V⁽⁰⁾, fixed a)."""
    return OneLayerTransformer(learner_cfg, seed=seeds.init(seed))


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


def fresh_set(task: Task, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh samples of ``task`` from generator seed ``seed`` (e.g. ``seeds.test_set(run, role)``): X (n, P, d), y (n,)."""
    return task.sample(n, torch.Generator().manual_seed(seed))


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
    (t1,) = fine_tune_tasks(model0, [t1_task], train_cfg, [seeds.finetune(seed, seeds.T1)])
    t2 = []
    for alpha in progress(alphas, desc=f"fine-tune T2 over α (seed {seed})"):
        _, t2_task = task_pair(float(alpha), data_cfg)
        t2 += fine_tune_tasks(model0, [t2_task], train_cfg, [seeds.finetune(seed, seeds.pair_t2(alpha))])
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
        t1_test = fresh_set(pair.t1.task, n_test, seeds.test_set(pair.seed, seeds.T1))
        for i in progress(range(A), desc=f"sweep λ over α (seed {pair.seed})"):
            t2_test = fresh_set(pair.t2[i].task, n_test, seeds.test_set(pair.seed, seeds.pair_t2(alphas[i])))
            loss[s, :, i], error[s, :, i] = sweep_merges(
                pair.model0, pair.task_vectors(i), coef, [t1_test, t2_test], transform
            )
            ft_loss[s, :, i] = pair.t1.final_loss, pair.t2[i].final_loss
            reached[s, :, i] = pair.t1.reached, pair.t2[i].reached
            cosine[s, i] = pair.t1.task_vector.cosine(pair.t2[i].task_vector)
    run_seeds = np.array([p.seed for p in pairs])
    return PairSweep(run_seeds, alphas, lambdas, loss, error, ft_loss, reached, cosine)


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


@dataclass
class SetupRun:
    """The setup chapter's pipeline for one run: Ψ⁽⁰⁾, Ψ*_T1, Ψ*_T2 (α = 0), the merge, and their measurements.

    Every measurement is on held-out sets (``seeds.setup_test_set``), none of them a stopping set.
    """

    model0: OneLayerTransformer
    t1: FineTuned
    t2: FineTuned
    merged: OneLayerTransformer
    test1: tuple[torch.Tensor, torch.Tensor]
    test2: tuple[torch.Tensor, torch.Tensor]

    def rebuild_error(self) -> float:
        """max |Ψ⁽⁰⁾ + ΔΨ_T1 − Ψ*_T1| over every entry of every tensor."""
        rebuilt, tuned = self.t1.task_vector.apply_to(self.model0).state_dict(), self.t1.model.state_dict()
        return max(float((rebuilt[k] - tuned[k]).abs().max()) for k in tuned)

    def losses(self, model: OneLayerTransformer) -> dict[str, float]:
        """Hinge loss and accuracy of a model on the held-out sets of both tasks."""
        (l1, e1), (l2, e2) = evaluate(model, *self.test1), evaluate(model, *self.test2)
        return {"T1 loss": l1, "T1 accuracy": 1 - e1, "T2 loss": l2, "T2 accuracy": 1 - e2}


def setup_run(
    run: int, data_cfg: DataConfig, learner_cfg: LearnerConfig, train_cfg: TrainConfig, n_test: int, lam: float
) -> SetupRun:
    """Fine-tune two irrelevant tasks (α = 0) from run ``run``'s Ψ⁽⁰⁾ and merge Ψ⁽⁰⁾ + ΔΨ_T1 + λ·ΔΨ_T2."""
    t1, t2 = task_pair(0.0, data_cfg)
    model0 = pretrained(learner_cfg, run)
    ft1, ft2 = fine_tune_tasks(
        model0, [t1, t2], train_cfg, [seeds.finetune(run, seeds.T1), seeds.finetune(run, seeds.T2)]
    )
    merged = merge(model0, [ft1.task_vector, ft2.task_vector], [1.0, lam])
    test1 = fresh_set(t1, n_test, seeds.setup_test_set(run, 1))
    test2 = fresh_set(t2, n_test, seeds.setup_test_set(run, 3))
    return SetupRun(model0, ft1, ft2, merged, test1, test2)
