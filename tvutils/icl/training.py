"""Training the learner: minibatch SGD on the hinge loss over a set of training tasks (eq. 2 of the talk).

Each step draws a fresh minibatch of prompts (online SGD): a training task uniformly for each prompt, then the
prompt itself with the training fraction α of task-relevant examples. Every ``eval_every`` steps the model is
evaluated on fixed validation prompts (of unseen tasks, by default), so the history says when it converged.
Deterministic: the same seeds give the same weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..chapter.progress import progress
from .data import DataConfig, Pair, Prompts, idr_patterns, sample_prompts
from .model import hinge_loss, loss_and_error


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1.0  # SGD step size
    batch_size: int = 64  # prompts per step
    steps: int = 600  # SGD steps
    alpha: float = 0.8  # fraction of task-relevant context examples in training prompts
    length: int = 20  # context examples per training prompt (l_tr)
    eval_every: int = 10  # steps between evaluations on the validation prompts
    stop_error: float | None = None  # stop once the validation error is ≤ this (None: run every step)
    optimizer: str = "sgd"  # "sgd" (the paper's, for the one-layer learner) or "adam" (for GPT-2)
    warmup: int = 0  # steps of linear learning-rate warm-up
    clip: float | None = None  # gradient-norm clipping (None: none)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch_size, eval_every must be ≥ 1 and lr > 0; got {self}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")


@dataclass
class History:
    """What training did: one row per evaluation on the validation prompts."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # mean minibatch loss since the last evaluation
    val_loss: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)  # weights at each evaluation, if kept

    def steps_to(self, error: float) -> float:
        """The first evaluated step at which the validation error is ≤ ``error`` (NaN if never)."""
        return next((float(s) for s, e in zip(self.step, self.val_error) if e <= error), float("nan"))


@torch.no_grad()
def evaluate(model: nn.Module, prompts: Prompts) -> tuple[float, float]:
    """Mean hinge loss and error rate of a model on a batch of prompts."""
    return loss_and_error(model(prompts.P), prompts.z)


def train(
    model: nn.Module,
    tasks: Sequence[Pair],
    data_cfg: DataConfig,
    cfg: TrainConfig,
    seed: int,
    validation: Prompts,
    keep_snapshots: bool = False,
    batch_fn: Callable[[int, torch.Generator], Prompts] | None = None,
    device: str = "cpu",
) -> tuple[nn.Module, History]:
    """Train a copy of ``model`` (left untouched) on prompts of ``tasks``; returns (the trained copy, history).

    ``batch_fn(n, generator)`` replaces the default minibatch (prompts of the training tasks on the IDR
    patterns with the training α and length). Prompts are drawn on the CPU and moved to ``device``, where the
    model (and ``validation``) must already be.
    """
    trained = copy.deepcopy(model)
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr) if cfg.optimizer == "sgd" else torch.optim.Adam(params, lr=cfg.lr)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) if cfg.warmup else 1.0)
    gen = torch.Generator().manual_seed(seed)
    patterns = idr_patterns(data_cfg)
    draw = batch_fn or (lambda n, g: sample_prompts(patterns, tasks, n, cfg.length, cfg.alpha, data_cfg, g))
    hist = History()
    running, count = 0.0, 0
    for step in progress(range(1, cfg.steps + 1), desc="train"):
        batch = draw(cfg.batch_size, gen).to(device)
        loss = hinge_loss(trained(batch.P), batch.z).mean()
        opt.zero_grad()
        loss.backward()
        if cfg.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        warm.step()
        running, count = running + loss.item(), count + 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_loss, val_err = evaluate(trained, validation)
            hist.step.append(step)
            hist.train_loss.append(running / count)
            hist.val_loss.append(val_loss)
            hist.val_error.append(val_err)
            if keep_snapshots:
                hist.snapshots.append({k: v.detach().cpu().clone() for k, v in trained.state_dict().items()})
            running, count = 0.0, 0
            if cfg.stop_error is not None and val_err <= cfg.stop_error:
                break
    return trained, hist
