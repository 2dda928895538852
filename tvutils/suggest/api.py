"""The recommendation from output changes on a probe: estimate the relations the goal needs, then apply its rule.

Model-agnostic: the caller runs Ψ⁽⁰⁾ and each Ψ*ᵢ on the probe and passes the changes Δfᵢ = f(·; Ψ*ᵢ) − f(·; Ψ⁽⁰⁾)
over every probe row, with the task each row comes from (``tvutils.suggest.models`` does this for checkpoints;
the chapter for its own models). Goals: ``add`` (learn every task), ``forget`` (forget one, keep the others),
``target`` (generalise to a target task known by a few labelled examples).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .estimate import Estimate, ProbeError, alpha_regression, gamma_gain
from .rules import GOALS, Constants, Suggestion, suggest_add, suggest_forget, suggest_target


def _rows(task: torch.Tensor | np.ndarray, i: int) -> np.ndarray:
    return np.flatnonzero(np.asarray(task) == i)


def pair_alpha(
    changes: Sequence[torch.Tensor], task: torch.Tensor | np.ndarray, i: int, j: int, seed: int = 0
) -> Estimate:
    """α̂ between tasks i and j by regression, on the probe rows of task i and of task j."""
    ri, rj = _rows(task, i), _rows(task, j)
    if len(ri) == 0:
        raise ProbeError(f"the probe has no example of task {i + 1}")
    if len(rj) == 0:
        return alpha_regression(changes[i][ri], changes[j][ri], seed=seed)
    return alpha_regression(changes[i][ri], changes[j][ri], changes[j][rj], changes[i][rj], seed=seed)


def suggest(
    goal: str,
    changes: Sequence[torch.Tensor],
    task: torch.Tensor | np.ndarray,
    constants: Constants,
    forget: int | None = None,
    target_gains: Sequence[torch.Tensor] | None = None,
    own_gains: Sequence[torch.Tensor] | None = None,
    seed: int = 0,
) -> Suggestion:
    """The recommended λ for ``goal`` (module docstring).

    ``changes[i]``: Δfᵢ on every probe row, (N, …); ``task``: (N,) the task of each row (−1: the target's).
    ``forget``: the task to forget (default: the last). For ``target``: ``target_gains[i]`` (N_target,), Ψ*ᵢ's
    gain on each labelled target example, and ``own_gains[i]``, its gain on each row of its own task.
    """
    if goal not in GOALS:
        raise ValueError(f"unknown goal {goal!r}; one of {GOALS}")
    k = len(changes)
    if k < 1:
        raise ValueError("no fine-tuned model")
    if goal == "add":
        alphas = {(i, j): pair_alpha(changes, task, i, j, seed) for i in range(k) for j in range(i + 1, k)}
        return suggest_add(alphas, k, constants)
    if goal == "forget":
        if k < 2:
            raise ValueError("forgetting needs a kept task and a forgotten one (two fine-tuned models or more)")
        f = k - 1 if forget is None else forget
        kept = [t for t in range(k) if t != f]
        return suggest_forget([pair_alpha(changes, task, t, f, seed) for t in kept], f, k, constants)
    if target_gains is None or own_gains is None:
        raise ValueError("the target goal needs the models' gains on labelled target examples")
    gammas = [gamma_gain(target_gains[i], own_gains[i], seed=seed) for i in range(k)]
    sources = pair_alpha(changes, task, 0, 1, seed) if k == 2 else None
    return suggest_target(gammas, constants, sources)
