"""The theory-model workload of the chapter "Choosing λ": every method's λ for add, forget and target, scored.

For one run (seed): Ψ⁽⁰⁾, Ψ*_T1 and Ψ*_T2 at each α (``tvutils.taskvec.experiments.pair_vectors``); for each α the
goals ``add`` (Ψ⁽⁰⁾ + λ₁ΔΨ_T1 + λ₂ΔΨ_T2 learns both) and ``forget`` (keep T1, forget T2); for each out-of-domain
setting (γ, κ) the goal ``target`` from the orthogonal pair (α = 0). Every set is drawn from its own seed
(``probe_seed``): an unlabelled probe per task (α̂, AdaMerging), a labelled probe of the target (γ̂), a labelled
validation set for the black-box search (as large as the probe), and two labelled halves, A (the grid chooses)
and B (everything is scored). Methods are scored on half B (``tvutils.suggest.scoring``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..editing.task_vector import TaskVector
from ..taskvec import seeds
from ..taskvec.data import OODTasks, Task
from ..taskvec.experiments import PairVectors
from ..taskvec.grid import merged_outputs
from . import baselines as bl
from .api import suggest
from .estimate import Estimate, output_cosine
from .rules import Constants, suggest_add, suggest_forget
from .scoring import Choice, case_rows, utility

PROBE, HALF_A, HALF_B, VALIDATION = 0, 1, 2, 3  # the sets of a task role in a run
_PROBE_SEEDS = 30_000_000  # above every seed of tvutils.taskvec.seeds


def probe_seed(run: int, role: int, k: int) -> int:
    """The generator seed of set k (PROBE, HALF_A, HALF_B, VALIDATION) of task role ``role`` in run ``run``."""
    return _PROBE_SEEDS + 4 * seeds.finetune(run, role) + k


@dataclass(frozen=True)
class Budget:
    """The chapter's sizes: examples per set, AdaMerging's steps, the search's budgets, the grid."""

    n_probe: int
    n_half: int
    ada_steps: int
    search_budgets: tuple[int, ...]
    grid: np.ndarray  # (G, 2) every (λ₁, λ₂) of the grid search


def _sets(task: Task, run: int, role: int, n_probe: int, n_half: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    sizes = {PROBE: n_probe, HALF_A: n_half, HALF_B: n_half, VALIDATION: n_probe}
    return {k: task.sample(n, torch.Generator().manual_seed(probe_seed(run, role, k))) for k, n in sizes.items()}


def _accuracy(model0, tvs: Sequence[TaskVector], lambdas: np.ndarray, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Accuracy (%) of Ψ⁽⁰⁾ + Σ λᵢΔΨᵢ for every row of ``lambdas`` → (G,)."""
    out = merged_outputs(model0, list(tvs), np.atleast_2d(lambdas), X)
    return 100.0 * (torch.sign(out) == y).double().mean(1).numpy()


def _changes(model0, tvs: Sequence[TaskVector], X: torch.Tensor) -> list[torch.Tensor]:
    """Δfᵢ = f(X; Ψ⁽⁰⁾ + ΔΨᵢ) − f(X; Ψ⁽⁰⁾) for each task vector → k tensors (n,)."""
    coef = np.vstack([np.zeros(len(tvs)), np.eye(len(tvs))])
    out = merged_outputs(model0, list(tvs), coef, X)
    return [out[1 + i] - out[0] for i in range(len(tvs))]


def _search(goal: str, score, x0: Sequence[float], budgets: Sequence[int], n_val: int) -> list[Choice]:
    """CMA-ES on the validation score at each budget (minimising minus the utility)."""
    out = []
    for budget in budgets:
        lam, used = bl.cma_search(lambda x: -float(score(np.asarray(x)[None])[0]), x0, budget)
        out.append((f"CMA-ES ({budget} merge evaluations)", lam, used, used * n_val))
    return out


def pair_cases(pair: PairVectors, i: int, budget: Budget, constants: Constants) -> list[dict]:
    """Rows for the goals add and forget at the pair's i-th α (module docstring)."""
    run, alpha = pair.seed, float(pair.alphas[i])
    model0, tvs = pair.model0, pair.task_vectors(i)
    sets = [_sets(pair.t1.task, run, seeds.T1, budget.n_probe, budget.n_half),
            _sets(pair.t2[i].task, run, seeds.pair_t2(alpha), budget.n_probe, budget.n_half)]  # fmt: skip
    probe_X = torch.cat([s[PROBE][0] for s in sets])
    task = np.repeat([0, 1], budget.n_probe)
    changes = _changes(model0, tvs, probe_X)
    n_forward = 3 * len(probe_X)  # Ψ⁽⁰⁾, Ψ*_T1, Ψ*_T2 on the probe
    cosine = tvs[0].cosine(tvs[1])
    cos_est = Estimate(cosine, cosine, cosine, 0, "parameter cosine")

    def acc(half: int, lambdas: np.ndarray, vectors: Sequence[TaskVector] = tvs) -> np.ndarray:
        return np.stack([_accuracy(model0, vectors, lambdas, *s[half]) for s in sets], -1)  # (G, 2)

    grid_acc = {half: acc(half, budget.grid) for half in (HALF_A, HALF_B)}  # one sweep serves both goals
    rows = []
    for goal in ("add", "forget"):
        forget = 1 if goal == "forget" else None
        ref = acc(HALF_B, np.array([[1.0, 0.0]]))[0, :1] if forget is not None else None
        ref_a = acc(HALF_A, np.array([[1.0, 0.0]]))[0, :1] if forget is not None else None
        ref_v = acc(VALIDATION, np.array([[1.0, 0.0]]))[0, :1] if forget is not None else None
        ours = suggest(goal, changes, task, constants)
        by_cos = (
            suggest_add({(0, 1): cos_est}, 2, constants)
            if goal == "add"
            else suggest_forget([cos_est], 1, 2, constants)
        )
        picks = [("theory rule, α̂ by regression", ours.lambdas, 0, n_forward, ours.guaranteed),
                 ("λ = 1", bl.fixed(1.0, 2, forget), 0, 0, None),
                 ("fixed 0.3", bl.fixed(bl.FIXED_DEFAULT, 2, forget), 0, 0, None),
                 ("norm ratio", bl.norm_ratio(tvs, forget), 0, 0, None),
                 ("theory rule, parameter cosine", by_cos.lambdas, 0, 0, None)]  # fmt: skip
        if goal == "add":
            forward = bl.merged_forward(model0, tvs, lambda call: call(probe_X))
            lam = bl.adamerging(forward, 2, budget.ada_steps)
            picks.append((f"AdaMerging ({budget.ada_steps} steps)", lam, 0, budget.ada_steps * len(probe_X), None))
        x0 = bl.fixed(1.0, 2, forget)
        picks += [(*p, None) for p in _search(goal, lambda lam, g=goal, r=ref_v: utility(g, acc(VALIDATION, lam), r), x0,
                                             budget.search_budgets, 2 * budget.n_probe)]  # fmt: skip
        choices = [Choice(name, tuple(lam), float(utility(goal, acc(HALF_B, np.array([lam])), ref)[0]), ev, fw, g)
                   for name, lam, ev, fw, g in picks]  # fmt: skip
        stock = bl.model_stock_vectors(tvs, forget)
        choices.append(
            Choice("Model Stock", "per layer", float(utility(goal, acc(HALF_B, np.ones((1, 2)), stock), ref)[0]), 0, 0)
        )
        grid_a, grid_b = utility(goal, grid_acc[HALF_A], ref_a), utility(goal, grid_acc[HALF_B], ref)
        passes = len(budget.grid) * 2 * budget.n_half
        rows += case_rows("theory model", goal, f"α = {alpha:+.1f}", run, choices, grid_a, grid_b, passes)
        first = rows[-len(choices) - 1]
        first["α̂"], first["output cosine"], first["parameter cosine"] = (
            ours.estimates["α̂[1,2]"].value,
            output_cosine(changes[0], changes[1]).value,
            cosine,
        )
    return rows


def target_cases(
    pair: PairVectors, name: str, ood: OODTasks, role: int, budget: Budget, constants: Constants
) -> list[dict]:
    """Rows for the goal target: T' of ``ood`` from the pair's orthogonal tasks (α = 0)."""
    i = int(np.flatnonzero(np.isclose(pair.alphas, 0.0))[0])
    run, model0, tvs = pair.seed, pair.model0, pair.task_vectors(i)
    sources = [_sets(pair.t1.task, run, seeds.T1, budget.n_probe, budget.n_half),
               _sets(pair.t2[i].task, run, seeds.pair_t2(0.0), budget.n_probe, budget.n_half)]  # fmt: skip
    target = _sets(ood.target, run, role, budget.n_probe, budget.n_half)
    probe_X = torch.cat([s[PROBE][0] for s in sources] + [target[PROBE][0]])
    task = np.repeat([0, 1, -1], budget.n_probe)
    changes = _changes(model0, tvs, probe_X)
    base_out = merged_outputs(model0, tvs, np.zeros((1, 2)), probe_X)[0]
    y_t, own = target[PROBE][1], [np.flatnonzero(task == k) for k in (0, 1)]
    target_rows = np.flatnonzero(task == -1)
    target_gains = [y_t * changes[k][target_rows] for k in range(2)]
    own_gains = [torch.sign(base_out[own[k]] + changes[k][own[k]]) * changes[k][own[k]] for k in range(2)]
    ours = suggest("target", changes, task, constants, target_gains=target_gains, own_gains=own_gains)

    def acc(half: int, lambdas: np.ndarray, vectors: Sequence[TaskVector] = tvs) -> np.ndarray:
        return _accuracy(model0, vectors, lambdas, *target[half])[:, None]

    forward = bl.merged_forward(model0, tvs, lambda call: call(target[PROBE][0]))
    ada = bl.adamerging(forward, 2, budget.ada_steps)
    picks = [("theory rule, γ̂ by signed gain", ours.lambdas, 0, len(probe_X) * 3, ours.guaranteed),
             ("λ = 1", bl.fixed(1.0, 2), 0, 0, None),
             ("fixed 0.3", bl.fixed(bl.FIXED_DEFAULT, 2), 0, 0, None),
             ("norm ratio", bl.norm_ratio(tvs), 0, 0, None),
             (f"AdaMerging ({budget.ada_steps} steps)", ada, 0, budget.ada_steps * budget.n_probe, None)]  # fmt: skip
    picks += [(*p, None) for p in _search("target", lambda lam: utility("target", acc(VALIDATION, lam)), (1.0, 1.0),
                                         budget.search_budgets, budget.n_probe)]  # fmt: skip
    choices = [Choice(n, tuple(lam), float(utility("target", acc(HALF_B, np.array([lam])))[0]), ev, fw, g)
               for n, lam, ev, fw, g in picks]  # fmt: skip
    stock = bl.model_stock_vectors(tvs)
    choices.append(Choice("Model Stock", "per layer", float(acc(HALF_B, np.ones((1, 2)), stock)[0, 0]), 0, 0))
    grid_a, grid_b = acc(HALF_A, budget.grid)[:, 0], acc(HALF_B, budget.grid)[:, 0]
    rows = case_rows("theory model", "target", name, run, choices, grid_a, grid_b, len(budget.grid) * budget.n_half)
    rows[0]["γ̂"] = tuple(round(ours.estimates[f"γ̂[{k}]"].value, 3) for k in (1, 2))
    return rows


def calibrate_forget_margin(
    pairs: Sequence[PairVectors], budget: Budget, beta: float, candidates: Sequence[float]
) -> tuple[float, np.ndarray]:
    """The forget rule's margin m (``rules.Constants.forget_margin``) that maximises the mean forget utility on
    calibration runs: for each candidate, λ = −(m + α̂) on every pair and α of ``pairs``, scored on half A.
    Returns (the best m: the median of the candidates within ``TIE`` points of the best, the middle of the plateau;
    the mean utility of each candidate). Calibration runs must not be scored runs."""
    utilities = np.zeros(len(candidates))
    count = 0
    for pair in pairs:
        for i, alpha in enumerate(pair.alphas):
            model0, tvs = pair.model0, pair.task_vectors(i)
            sets = [_sets(pair.t1.task, pair.seed, seeds.T1, budget.n_probe, budget.n_half),
                    _sets(pair.t2[i].task, pair.seed, seeds.pair_t2(float(alpha)), budget.n_probe, budget.n_half)]  # fmt: skip
            probe_X = torch.cat([s[PROBE][0] for s in sets])
            est = suggest("add", _changes(model0, tvs, probe_X), np.repeat([0, 1], budget.n_probe), Constants(beta))
            a_hat = est.estimates["α̂[1,2]"]
            lams = np.array([[1.0, suggest_forget([a_hat], 1, 2, Constants(beta, forget_margin=m)).lambdas[1]]
                             for m in candidates] + [[1.0, 0.0]])  # fmt: skip
            acc = np.stack([_accuracy(model0, tvs, lams, *s[HALF_A]) for s in sets], -1)
            utilities += utility("forget", acc[:-1], acc[-1, :1])
            count += 1
    utilities /= max(count, 1)
    best = np.asarray(candidates, dtype=float)[utilities >= utilities.max() - TIE]
    return float(np.median(best)), utilities


TIE = 0.5  # calibration: utilities within this many points of the best count as equally good
