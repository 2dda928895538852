"""Every seed of the vision case study, derived from its role by name.

A chapter run is an integer (one of its ``seeds``). Ψ⁽⁰⁾'s encoder is one per recipe (its own seed lives in the
recipe); everything a run varies gets its own generator seed here, so one task's draws do not depend on which
other tasks a profile includes:

    head(run)                 the new two-way (parity) head of the fine-tuning Ψ⁽⁰⁾
    finetune(run, task)       the minibatch order of Ψ*_T
    train_draws(run, task)    the colours (and label flips) of T's training digits
    halves(run)               which half of the test digits selects λ (the other half scores it)
"""

from __future__ import annotations

RUN_BLOCK = 1000  # the seeds of run r lie in [RUN_BLOCK·r, RUN_BLOCK·(r + 1))
TASK_ROLES = {"T1": 1, "irrelevant": 2, "aligned": 3, "contradictory": 4, "ood": 5}
_HEAD, _FINETUNE, _TRAIN, _HALVES = 0, 100, 200, 300


def role(task: str) -> int:
    """The number of a task's role (T1, irrelevant, aligned, contradictory, ood)."""
    if task not in TASK_ROLES:
        raise ValueError(f"unknown task {task!r}; the roles are {list(TASK_ROLES)}")
    return TASK_ROLES[task]


def head(run: int) -> int:
    return RUN_BLOCK * run + _HEAD


def finetune(run: int, task: str) -> int:
    return RUN_BLOCK * run + _FINETUNE + role(task)


def train_draws(run: int, task: str) -> int:
    return RUN_BLOCK * run + _TRAIN + role(task)


def halves(run: int) -> int:
    return RUN_BLOCK * run + _HALVES
