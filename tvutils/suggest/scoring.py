"""Scoring a choice of λ: the goal's utility, regret against the best grid λ chosen on held-out data, and the
regret and cost table over seeds.

Every score is an accuracy in %-points. The utility of a merge for a goal:

* ``add``: the mean of the tasks' accuracies;
* ``forget``: 100 − the forgotten task's accuracy (lower is more forgotten), minus every point a kept task loses
  beyond ``tolerance`` (1 point) below its reference (its fine-tuned model on the same data): the rule of chapter
  06's unlearning tables, made one number;
* ``target``: the target task's accuracy.

Regret of a choice = utility on half B of the best grid point chosen on half A − the choice's utility on half B
(negative where a choice off the grid does better). The grid's own held-out noise is its regret against the
best point of half B itself (how much choosing on other data costs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..chapter.verdict import mean_interval

TOLERANCE = 1.0  # forget: points a kept task may lose for free


def utility(goal: str, acc: np.ndarray, keep_ref: np.ndarray | None = None, tolerance: float = TOLERANCE) -> np.ndarray:
    """The goal's utility from accuracies ``acc`` (…, tasks) in %: add: every task; forget: the kept tasks then
    the forgotten one last (``keep_ref``: the kept tasks' reference accuracies); target: the target alone."""
    acc = np.asarray(acc, dtype=float)
    if goal == "add":
        return acc.mean(-1)
    if goal == "forget":
        if keep_ref is None:
            raise ValueError("forget needs the kept tasks' reference accuracies")
        shortfall = np.minimum(0.0, acc[..., :-1] - (np.asarray(keep_ref) - tolerance)).sum(-1)
        return 100.0 - acc[..., -1] + shortfall
    if goal == "target":
        return acc[..., 0]
    raise ValueError(f"unknown goal {goal!r}")


@dataclass
class Choice:
    """One method's λ on one case, its utility on half B, and what it cost."""

    method: str
    lambdas: tuple[float, ...] | str  # a string for per-layer choices (e.g. Model Stock)
    score: float  # utility on half B
    merge_evaluations: int  # merged models scored on labelled data
    forward_passes: int  # examples through a network (a training step's forward and backward count once)
    guaranteed: bool | None = None  # for the theory's rule: whether its guarantee holds


def case_rows(
    workload: str,
    goal: str,
    setting: str,
    seed: int,
    choices: list[Choice],
    grid_a: np.ndarray,
    grid_b: np.ndarray,
    grid_passes: int,
) -> list[dict]:
    """Rows of the results table for one case: each choice's regret against the grid chosen on half A, and the
    grid's own rows (its held-out noise; ``grid_passes``: the examples it ran on half A)."""
    best_a = int(np.argmax(grid_a))
    reference = float(grid_b[best_a])
    rows = [
        {"workload": workload, "goal": goal, "setting": setting, "seed": seed, "method": c.method,
         "λ": c.lambdas if isinstance(c.lambdas, str) else ", ".join(f"{x:.2f}" for x in c.lambdas),
         "score": c.score, "regret": reference - c.score, "merge evaluations": c.merge_evaluations,
         "forward passes": c.forward_passes, "guaranteed": c.guaranteed}
        for c in choices
    ]  # fmt: skip
    rows.append(
        {"workload": workload, "goal": goal, "setting": setting, "seed": seed, "method": GRID, "λ": "",
         "score": reference, "regret": float(np.max(grid_b)) - reference, "merge evaluations": len(grid_a),
         "forward passes": grid_passes, "guaranteed": None}
    )  # fmt: skip
    return rows


GRID = "grid search (held-out noise)"


def regret_table(results: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Mean regret per (workload, goal, method) with its 95 % interval over seeds (each seed: the mean over its
    cases), and the mean cost per case."""
    per_seed = results.groupby(["workload", "goal", "method", "seed"], sort=False).agg(
        regret=("regret", "mean"), evals=("merge evaluations", "mean"), passes=("forward passes", "mean")
    )
    rows = []
    for (workload, goal, method), g in per_seed.groupby(level=[0, 1, 2], sort=False):
        m, lo, hi = mean_interval(g["regret"].to_numpy())
        text = f"{m:.{digits}f}" if np.isnan(lo) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
        rows.append({"workload": workload, "goal": goal, "method": method, "regret (points)": text,
                     "merge evaluations": f"{g['evals'].mean():,.0f}", "forward passes": f"{g['passes'].mean():,.0f}"})  # fmt: skip
    return pd.DataFrame(rows)


def per_seed_regret(results: pd.DataFrame, workload: str, goal: str, method: str) -> np.ndarray:
    """A method's regret per seed (the mean over that seed's cases), in seed order."""
    sel = results[(results.workload == workload) & (results.goal == goal) & (results.method == method)]
    return sel.groupby("seed")["regret"].mean().to_numpy()
