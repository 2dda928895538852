"""Fine-tuning the learner: minibatch SGD on the hinge loss, as in the paper, from a given Ψ⁽⁰⁾ until a target.

Each step draws a fresh minibatch from the task (online SGD); the test set is drawn once, from its own seed
(``seeds.stopping_set``).
Training stops as soon as every target given (test error ≤ ε and/or test hinge loss ≤ ε) is met at an
evaluation, or when the step budget runs out. Deterministic: the same seed gives the same weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..chapter.progress import progress
from . import seeds
from .data import Task
from .model import hinge_loss, loss_and_error


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1.0  # SGD step size for V
    lr_W: float | None = None  # SGD step size for W (None: same as lr)
    batch_size: int = 64
    max_steps: int = 3000  # step budget
    eval_every: int = 25
    n_test: int = 2000  # test samples drawn once for the stopping rule
    target_error: float | None = 0.01  # stop when test error ≤ this (None: not a target)
    target_loss: float | None = 0.05  # stop when test hinge loss ≤ this (None: not a target)

    def __post_init__(self) -> None:
        if self.target_error is None and self.target_loss is None:
            raise ValueError("give at least one target: target_error or target_loss")


@dataclass
class History:
    """What fine-tuning did: one row per evaluation."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # mean minibatch loss since the last evaluation
    test_loss: list[float] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    reached: bool = False  # every target met before the budget ran out

    @property
    def steps(self) -> int:
        return self.step[-1] if self.step else 0


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean hinge loss and error rate (fraction of sign(f) ≠ y) of a model on (X, y)."""
    loss, error = loss_and_error(model(X), y)
    return float(loss), float(error)


def fine_tune(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig = TrainConfig(),
    seed: int = 0,
    desc: str = "",
    *,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, History]:
    """Fine-tune a copy of ``model`` (Ψ⁽⁰⁾, left untouched) on ``task``; returns (Ψ*_T, history).

    ``device`` (e.g. "cuda"): train the copy there (returned on that device); the samples are still drawn on
    the CPU from the same generators, so the data do not depend on the device. None: where ``model`` is.
    """
    tuned = copy.deepcopy(model) if device is None else copy.deepcopy(model).to(device)
    where = next(tuned.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    X_test, y_test = task.sample(cfg.n_test, torch.Generator().manual_seed(seeds.stopping_set(seed)))
    X_test, y_test = X_test.to(where), y_test.to(where)
    groups = [
        {"params": [p], "lr": cfg.lr_W if (n == "W" and cfg.lr_W is not None) else cfg.lr}
        for n, p in tuned.named_parameters()
    ]
    opt = torch.optim.SGD(groups, lr=cfg.lr)
    hist = History()

    def met(loss: float, err: float) -> bool:
        ok_err = cfg.target_error is None or err <= cfg.target_error
        ok_loss = cfg.target_loss is None or loss <= cfg.target_loss
        return ok_err and ok_loss

    running, count = 0.0, 0
    for step in progress(range(1, cfg.max_steps + 1), desc=desc or f"fine-tune {task.name}"):
        X, y = task.sample(cfg.batch_size, gen)
        X, y = X.to(where), y.to(where)
        loss = hinge_loss(tuned(X), y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        running, count = running + loss.item(), count + 1
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            test_loss, test_err = evaluate(tuned, X_test, y_test)
            hist.step.append(step)
            hist.train_loss.append(running / count)
            hist.test_loss.append(test_loss)
            hist.test_error.append(test_err)
            running, count = 0.0, 0
            if met(test_loss, test_err):
                hist.reached = True
                break
    return tuned, hist
