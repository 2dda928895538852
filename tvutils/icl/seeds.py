"""Every seed of the Part II chapters, derived from its role by name (the twin of ``tvutils.taskvec.seeds``).

A chapter's run is an integer (one of its ``seeds``). From it each random thing gets its own generator seed,
so the same run gives the same numbers, and what one experiment draws does not depend on which others a
chapter includes:

    init(run)                 Ψ⁽⁰⁾ (W_O⁽⁰⁾ and the signs of a)
    training(run)             the minibatches of SGD (prompts and the training task of each)
    task_set(run, k)          the k-th random set of training tasks of a run
    validation(run)           the prompts training is watched on (steps to converge)
    test(run, k)              the k-th test set of prompts of a run (in domain)
    ood_test(run, k)          the k-th out-of-domain test set of a run
    mask(run, k)              the k-th random pruning mask of a run
"""

from __future__ import annotations

_BLOCK = 10_000  # each role owns a block of 10 000 seeds per run: role offset + 10 000·run + k
_ROLES = {
    "init": 0,
    "training": 1_000_000_000,
    "task_set": 1_100_000_000,
    "validation": 1_200_000_000,
    "test": 1_300_000_000,
    "ood_test": 1_400_000_000,
    "mask": 1_500_000_000,
}


def _seed(role: str, run: int, k: int = 0) -> int:
    if run < 0 or not 0 <= k < _BLOCK:
        raise ValueError(f"{role}: run must be ≥ 0 and k in 0 … {_BLOCK - 1}; got run={run}, k={k}")
    return _ROLES[role] + _BLOCK * run + k


def init(run: int) -> int:
    """Ψ⁽⁰⁾ of a run."""
    return _seed("init", run)


def training(run: int) -> int:
    """The SGD minibatches of a run."""
    return _seed("training", run)


def task_set(run: int, k: int) -> int:
    """The k-th random set of training tasks of a run."""
    return _seed("task_set", run, k)


def validation(run: int) -> int:
    """The prompts a run's training is evaluated on while it trains."""
    return _seed("validation", run)


def test(run: int, k: int) -> int:
    """The k-th in-domain test set of a run."""
    return _seed("test", run, k)


def ood_test(run: int, k: int) -> int:
    """The k-th out-of-domain test set of a run."""
    return _seed("ood_test", run, k)


def mask(run: int, k: int) -> int:
    """The k-th random pruning mask of a run."""
    return _seed("mask", run, k)
