"""Theorem 3 (pruning): the norms of W_O's neurons, their two groups, and three ways to prune them.

Theorem 3 [paper]: a constant fraction of the neurons of W_O (its rows) have large weights and the rest small
ones; pruning the small ones leaves the generalization error at O(ε + M₂^{-1/2}), pruning a fraction R of the
large ones raises it by Ω(R). Pruning a neuron removes its row of the trained W_O (slide 13).

``PRUNING`` names the three ways the chapter compares: the smallest rows first (magnitude pruning), random
rows, the largest rows first. The two groups are found with ``tvutils.taskvec.sparsity.two_groups`` (the same
split of the log norms as Part I's Corollary 2).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..taskvec.sparsity import TwoGroups, two_groups
from . import seeds
from .data import Prompts
from .model import ICLTransformer, loss_and_error

SMALLEST, RANDOM, LARGEST = "smallest rows first (magnitude)", "random rows", "largest rows first"
PRUNING = (SMALLEST, RANDOM, LARGEST)

__all__ = ["PRUNING", "SMALLEST", "RANDOM", "LARGEST", "TwoGroups", "two_groups", "neuron_norms", "keep_mask",
           "pruned", "pruning_curves"]  # fmt: skip


@torch.no_grad()
def neuron_norms(model: ICLTransformer) -> np.ndarray:
    """‖row k of W_O‖ for every neuron k: (m,)."""
    return model.W_O.double().norm(dim=1).numpy()


def keep_mask(norms: np.ndarray, fraction: float, how: str, seed: int = 0) -> np.ndarray:
    """Which neurons survive pruning a ``fraction`` of them (rounded to whole neurons) ``how``: bool, norms' shape.

    Works on any array of norms (one row per layer for GPT-2's MLPs: each layer pruned by the same fraction).
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"the pruned fraction must lie in [0, 1], got {fraction}")
    norms = np.atleast_2d(np.asarray(norms, dtype=float))
    n_drop = int(round(fraction * norms.shape[1]))
    keep = np.ones(norms.shape, dtype=bool)
    rng = np.random.default_rng(seed)
    for row, k in zip(norms, keep):
        if how == SMALLEST:
            order = np.argsort(row, kind="stable")
        elif how == LARGEST:
            order = np.argsort(-row, kind="stable")
        elif how == RANDOM:
            order = rng.permutation(len(row))
        else:
            raise ValueError(f"unknown pruning {how!r}; known: {list(PRUNING)}")
        k[order[:n_drop]] = False
    return keep.reshape(np.shape(norms)) if keep.shape[0] > 1 else keep[0]


@torch.no_grad()
def pruned(model: ICLTransformer, keep: np.ndarray) -> ICLTransformer:
    """A copy of the learner with the rows of W_O where ``keep`` is False set to zero (those neurons removed)."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (model.W_O.shape[0],):
        raise ValueError(f"keep has shape {keep.shape}, W_O has {model.W_O.shape[0]} rows")
    out = copy.deepcopy(model)
    out.W_O[torch.from_numpy(~keep)] = 0.0
    return out


@torch.no_grad()
def pruning_curves(
    model: nn.Module,
    prompts: Prompts,
    fractions: Sequence[float],
    norms: np.ndarray,
    prune: Callable[[nn.Module, np.ndarray], nn.Module],
    run: int,
    draws: int = 3,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hinge loss and error on ``prompts`` after pruning each fraction of the neurons, each way in ``PRUNING``:
    {way: (loss (F,), error (F,))}. ``prune(model, keep)`` returns a pruned copy (``pruned`` for the one-layer
    learner, ``tvutils.icl.gpt2.pruned_gpt2`` for GPT-2); random pruning is averaged over ``draws`` masks."""
    out = {}
    for how in PRUNING:
        loss, error = np.zeros(len(fractions)), np.zeros(len(fractions))
        for i, f in enumerate(fractions):
            ks = range(draws) if how == RANDOM else [0]
            res = [loss_and_error(prune(model, keep_mask(norms, f, how, seeds.mask(run, k)))(prompts.P), prompts.z)
                   for k in ks]  # fmt: skip
            loss[i], error[i] = np.mean(res, axis=0)
        out[how] = (loss, error)
    return out
