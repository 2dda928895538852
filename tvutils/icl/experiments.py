"""The experiments behind the Part II chapters: train the learner on a set of tasks, test it on prompts.

1. ``trained_learner`` builds Ψ⁽⁰⁾ for a run and trains it on a set of training tasks, watching the error on
   prompts of unseen tasks (``tvutils.icl.training``).
2. ``error_grid`` measures hinge loss and error on fresh prompts over a grid of test fractions α' and prompt
   lengths l_ts (in domain on the IDR patterns, out of domain on ODR ones); ``needed_length`` reads off the
   shortest prompt that reaches a target error.
3. ``attention_on_pattern`` and ``weight_parts`` read the mechanism (Propositions 1-2) off the weights.

Seeds come from ``tvutils.icl.seeds`` by role.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from . import seeds
from .data import DataConfig, Pair, Prompts, idr_patterns, label_embedding, sample_prompts, unseen_tasks
from .model import ICLTransformer, LearnerConfig, loss_and_error
from .training import History, TrainConfig, train


def pretrained(learner_cfg: LearnerConfig, run: int) -> ICLTransformer:
    """Ψ⁽⁰⁾ of a run: W_Q = W_K = qk_init·I, W_V = v_init·I, Gaussian W_O, fixed a."""
    return ICLTransformer(learner_cfg, seed=seeds.init(run))


def validation_prompts(
    tasks: Sequence[Pair], data_cfg: DataConfig, run: int, n: int = 1000, alpha: float = 0.8, length: int = 20
) -> Prompts:
    """The prompts a run is watched on while it trains: ``tasks`` (usually the unseen ones) on the IDR patterns."""
    gen = torch.Generator().manual_seed(seeds.validation(run))
    return sample_prompts(idr_patterns(data_cfg), tasks, n, length, alpha, data_cfg, gen)


def trained_learner(
    tasks: Sequence[Pair],
    data_cfg: DataConfig,
    learner_cfg: LearnerConfig,
    train_cfg: TrainConfig,
    run: int,
    n_val: int = 1000,
    keep_snapshots: bool = False,
) -> tuple[ICLTransformer, History]:
    """Ψ⁽⁰⁾ of ``run`` trained on ``tasks``, watched on prompts of the unseen tasks (all tasks if none is unseen)."""
    watch = unseen_tasks(tasks, data_cfg.M1) or list(tasks)
    val = validation_prompts(watch, data_cfg, run, n_val)
    return train(pretrained(learner_cfg, run), tasks, data_cfg, train_cfg, seeds.training(run), val, keep_snapshots)


@torch.no_grad()
def error_grid(
    model: nn.Module,
    patterns: torch.Tensor,
    tasks: Sequence[Pair],
    alphas: Sequence[float],
    lengths: Sequence[int],
    n: int,
    data_cfg: DataConfig,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Hinge loss and error on n fresh prompts for every (α', l_ts): two arrays (len(alphas), len(lengths)).

    Each cell draws its prompts from its own generator, seeded by ``seed`` and the cell's position.
    """
    loss, error = np.zeros((len(alphas), len(lengths))), np.zeros((len(alphas), len(lengths)))
    for i, a in enumerate(alphas):
        for j, length in enumerate(lengths):
            gen = torch.Generator().manual_seed(seed + 1000 * i + j)
            prompts = sample_prompts(patterns, tasks, n, int(length), float(a), data_cfg, gen)
            loss[i, j], error[i, j] = loss_and_error(model(prompts.P), prompts.z)
    return loss, error


def needed_length(errors: Sequence[float], lengths: Sequence[int], target: float) -> float:
    """The shortest prompt length from which on the error stays ≤ ``target`` (NaN if the last one misses it)."""
    e, ls = np.asarray(errors, dtype=float), np.asarray(lengths, dtype=float)
    if len(e) != len(ls) or not len(e):
        raise ValueError(f"{len(e)} errors for {len(ls)} lengths")
    above = np.nonzero(e > target)[0]
    if not len(above):
        return float(ls[0])
    return float(ls[above[-1] + 1]) if above[-1] + 1 < len(ls) else float("nan")


@torch.no_grad()
def attention_on_pattern(model: ICLTransformer, prompts: Prompts) -> float:
    """Mean total attention on the context examples whose relevant pattern is the query's (Proposition 1)."""
    attn = model.attention(prompts.P)  # (n, l)
    same = prompts.pattern[:, :-1] == prompts.pattern[:, -1:]  # (n, l)
    return float((attn * same).sum(1).mean())


@torch.no_grad()
def pattern_scores(model: ICLTransformer, patterns: torch.Tensor) -> np.ndarray:
    """The attention score μᵀ W_Kᵀ W_Q μ' of every pair of patterns (rows: the query's, columns: the context
    example's), feature parts only: patterns (k, d) → (k, k)."""
    d = patterns.shape[1]
    qk = (model.W_K.T @ model.W_Q)[:d, :d]  # (d, d): a context feature part against a query feature part
    return (patterns @ qk.T @ patterns.T).double().numpy()  # [query, context] = x_ctxᵀ (W_Kᵀ W_Q) x_query


@torch.no_grad()
def weight_parts(model: ICLTransformer, data_cfg: DataConfig) -> dict[str, np.ndarray]:
    """Proposition 2's reading of the rows r_k of W_O W_V (m rows of length d + d_y), for every neuron k.

    ``feature_cos``: cosine of the feature part r_k[:d] with μ̄ (the mean IDR pattern); ``label_cos``: cosine of
    the label part r_k[d:] with q; ``feature_norm`` and ``label_norm``: the parts' norms; ``sign``: a_k's sign.
    """
    rows = (model.W_O @ model.W_V).double()  # (m, D)
    feat, lab = rows[:, : data_cfg.d], rows[:, data_cfg.d :]  # (m, d), (m, d_y)
    mu_bar = idr_patterns(data_cfg).double().mean(0)  # (d,)
    q = label_embedding(data_cfg).double()  # (d_y,)

    def cos(x: torch.Tensor, v: torch.Tensor) -> np.ndarray:
        return ((x @ v) / (x.norm(dim=1) * v.norm()).clamp_min(1e-30)).numpy()

    return {
        "feature_cos": cos(feat, mu_bar),
        "label_cos": cos(lab, q),
        "feature_norm": feat.norm(dim=1).numpy(),
        "label_norm": lab.norm(dim=1).numpy(),
        "sign": torch.sign(model.a).numpy(),
    }
