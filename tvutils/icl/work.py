"""The work of a Part II chapter's run, counted from its resolved parameters before anything is trained.

``in_domain(P)``, ``out_of_domain(P)`` and ``mechanism_pruning(P)`` (chapters 10, 11, 12) list the stages of
their chapter's notebook as ``tvutils.chapter.cost.Stage``s, in prompts: SGD steps × prompts per step (forward +
backward), the evaluations during training, and every evaluation of the trained models (test cells ×
prompts). ``tvutils.chapter.cost.plan_table`` turns them into the printed plan and its time estimates.

FLOPs: ``learner_flops`` (eq. 1, per prompt) and ``gpt2_flops`` (2 × parameters per token, plus attention);
a training pass counts ``TRAINING_FACTOR`` forward passes. Sequential calls: every SGD step and every evaluation
call; the torch operations each dispatches are counted by running one of each on a tiny batch (on the CPU:
there SGD and Adam update parameter by parameter, so for GPT-2's optimizer the count is an overestimate of a
GPU's fused updates). Left out: drawing the test prompts (vectorised, a few ops per cell), reading the
weights (pattern scores, row norms), the bootstrap fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import torch

from ..chapter.cost import TRAINING_FACTOR, Stage, count_ops, evaluations
from . import seeds
from .config import gpt2_setting, setting
from .data import (
    CONSTRUCTIONS,
    DataConfig,
    both_ways_cycle_tasks,
    idr_patterns,
    sample_prompts,
)
from .experiments import error_grid, pretrained
from .model import LearnerConfig
from .training import TrainConfig, train


# ---- FLOPs -----------------------------------------------------------------------------------------------------
def learner_flops(cfg: LearnerConfig, length: int) -> float:
    """FLOPs of eq. (1)'s forward pass on one prompt of ``length`` context examples: W_Kᵀ W_Q p_query (2 · 2D²),
    the scores and the weighted sum (2 · 2lD), W_V (2D²), W_O (2mD), aᵀ (2m)."""
    D, m = cfg.D, cfg.m
    return float(6 * D * D + 4 * length * D + 2 * m * D + 2 * m)


def gpt2_flops(params_per_layer: int, layers: int, width: int, D: int, length: int) -> float:
    """FLOPs of the GPT-2 learner's forward pass on one prompt of ``length`` context examples (T = length + 1
    tokens): the read-in (2D · width per token), 2 × each layer's weights per token, and attention's scores and
    weighted sum (2 · 2T · width per token and layer)."""
    T = length + 1
    return float(T * (2 * D * width + layers * (2 * params_per_layer + 4 * T * width)))


def _gpt2_sizes(cfg: Any) -> tuple[int, int, int]:
    from .gpt2 import GPT2Learner

    model = GPT2Learner(cfg)
    per_layer = sum(p.numel() for p in model.backbone.h[0].parameters())
    return per_layer, cfg.n_layer, cfg.n_embd


# ---- ops per call, counted --------------------------------------------------------------------------------------
def ops_per_step(model: torch.nn.Module, tasks: Sequence, data_cfg: DataConfig, cfg: TrainConfig) -> int:
    """Torch ops one training step of ``tvutils.icl.training.train`` dispatches (drawing the minibatch, forward,
    backward, the update): two trainings of 1 and 2 steps (one evaluation each), counted and subtracted."""
    val = sample_prompts(idr_patterns(data_cfg), list(tasks), 4, 4, 0.8, data_cfg, torch.Generator().manual_seed(0))
    small = replace(cfg, batch_size=min(cfg.batch_size, 4))

    def run(steps: int) -> int:
        c = replace(small, steps=steps, eval_every=steps, stop_error=None, warmup=min(small.warmup, 1))
        return count_ops(lambda: train(model, tasks, data_cfg, c, 0, val))

    return run(2) - run(1)


def ops_per_evaluation(model: torch.nn.Module, data_cfg: DataConfig, tasks: Sequence) -> int:
    """Torch ops of one evaluation call: one cell of ``error_grid`` (drawing its prompts, the forward pass)."""
    pats = idr_patterns(data_cfg)
    return count_ops(lambda: error_grid(model, pats, list(tasks), [0.8], [4], 4, data_cfg, 0))


# ---- stages -----------------------------------------------------------------------------------------------------
def _training(stage: str, what: str, runs: int, cfg: TrainConfig, flops: float, n_val: int, val_flops: float,
              ops: tuple[int, int], where: str) -> Stage:  # fmt: skip
    evals = evaluations(cfg.steps, cfg.eval_every)
    calls = cfg.steps + evals
    return Stage(stage, what, forward=runs * evals * n_val, training=runs * cfg.steps * cfg.batch_size,
                 flops=runs * (TRAINING_FACTOR * cfg.steps * cfg.batch_size * flops + evals * n_val * val_flops),
                 calls=runs * calls, ops_per_call=(cfg.steps * ops[0] + evals * ops[1]) / calls, where=where)  # fmt: skip


def _cells(stage: str, what: str, cells: Sequence[tuple[int, float]], ops: int, where: str = "cpu") -> Stage:
    """Evaluation calls, each (prompts, FLOPs per prompt)."""
    return Stage(stage, what, forward=sum(n for n, _ in cells), flops=sum(n * f for n, f in cells),
                 calls=len(cells), ops_per_call=ops, where=where)  # fmt: skip


def _learner(P: SimpleNamespace) -> tuple[DataConfig, LearnerConfig, TrainConfig, tuple[int, int]]:
    data_cfg, learner_cfg, train_cfg = setting(P)
    tasks = both_ways_cycle_tasks(P.M1)
    model = pretrained(learner_cfg, 0)
    ops = (ops_per_step(model, tasks, data_cfg, train_cfg), ops_per_evaluation(model, data_cfg, tasks))
    return data_cfg, learner_cfg, train_cfg, ops


def in_domain(P: SimpleNamespace | Any) -> list[Stage]:
    """Chapter 10's run: per task set and seed a training (+ evaluations on 1000 validation prompts) and two test
    cells; the prompt-length grid; the iteration experiment (at most ``max_steps`` steps each: it stops at the
    ``converged`` error). Everything runs on the CPU (the chapter has no device parameter)."""
    data_cfg, lc, tc, ops = _learner(P)
    f = lambda length: learner_flops(lc, length)  # noqa: E731
    S = len(P.seeds)
    f_train, f_val = f(tc.length), f(20)
    stages = [
        _training("training sets", f"{len(P.task_sets)} sets × {S} seeds × {tc.steps} steps of {tc.batch_size}",
                  len(P.task_sets) * S, tc, f_train, 1000, f_val, ops, "cpu"),
        _cells("unseen/seen test", f"{len(P.task_sets)} sets × {S} seeds × 2 cells of {P.n_test}",
               [(P.n_test, f(P.test_length))] * (2 * len(P.task_sets) * S), ops[1]),
        _cells("prompt length", f"{S} seeds × {len(P.alphas_test)} α' × {len(P.lengths)} lengths of {P.n_test}",
               [(P.n_test, f(length)) for _ in range(S) for _ in P.alphas_test for length in P.lengths], ops[1]),
    ]  # fmt: skip
    it = replace(tc, steps=P.max_steps)
    stages.append(_training("iterations (at most)", f"{S} seeds × {len(P.alphas_train)} α × ≤ {P.max_steps} steps",
                            S * len(P.alphas_train), it, f_train, 500, f_val, ops, "cpu"))  # fmt: skip
    return stages


def _gpt2(P: SimpleNamespace | Any, data_cfg: DataConfig) -> tuple[Any, TrainConfig, tuple[int, int, int], tuple]:
    from .gpt2 import GPT2Learner

    gcfg, gtrain = gpt2_setting(P)
    tasks = both_ways_cycle_tasks(P.M1, P.gpt2_distances)
    model = GPT2Learner(gcfg, seed=seeds.init(0))
    ops = (ops_per_step(model, tasks, data_cfg, gtrain), ops_per_evaluation(model, data_cfg, tasks))
    return gcfg, gtrain, _gpt2_sizes(gcfg), ops


def _gpt2_training(P: SimpleNamespace | Any, gtrain: TrainConfig, sizes: tuple, D: int, ops: tuple, note: str) -> Stage:
    g = lambda length: gpt2_flops(*sizes, D, length)  # noqa: E731
    where = "cpu" if P.device == "cpu" else "device"
    what = f"{len(P.seeds)} seeds × {gtrain.steps} Adam steps of {gtrain.batch_size}{note}"
    return _training("GPT-2 training", what, len(P.seeds), gtrain, g(gtrain.length), 500, g(20), ops, where)


def out_of_domain(P: SimpleNamespace | Any) -> list[Stage]:
    """Chapter 11's run: the one-layer learner per seed and its out-of-domain cells (every construction × S₁, the
    prompt-length grids at two S₁), then GPT-2 per seed (on ``P.device``) and its cells (evaluated on the CPU)."""
    data_cfg, lc, tc, ops = _learner(P)
    f = lambda length: learner_flops(lc, length)  # noqa: E731
    S, C = len(P.seeds), len(CONSTRUCTIONS)
    stages = [
        _training("learner training", f"{S} seeds × {tc.steps} steps of {tc.batch_size}", S, tc, f(tc.length),
                  1000, f(20), ops, "cpu"),
        _cells("S₁ cells", f"{C} constructions × {S} seeds × {len(P.S1s)} S₁ of {P.n_test}",
               [(P.n_test, f(P.test_length))] * (C * S * len(P.S1s)), ops[1]),
        _cells("prompt length", f"2 S₁ × {S} seeds × {len(P.alphas_test)} α' × {len(P.lengths)} lengths of {P.n_test}",
               [(P.n_test, f(length)) for _ in range(2 * S) for _ in P.alphas_test for length in P.lengths], ops[1]),
    ]  # fmt: skip
    gcfg, gtrain, sizes, gops = _gpt2(P, data_cfg)
    g = lambda length: gpt2_flops(*sizes, data_cfg.D, length)  # noqa: E731
    stages += [
        _gpt2_training(P, gtrain, sizes, data_cfg.D, gops, " (none where cached)"),
        _cells("GPT-2 S₁ cells", f"{S} seeds × {len(P.S1s)} S₁ of {P.gpt2_n_test}",
               [(P.gpt2_n_test, g(P.test_length))] * (S * len(P.S1s)), gops[1]),
        _cells("GPT-2 prompt length", f"{S} seeds × {len(P.alphas_test)} α' × {len(P.gpt2_lengths)} lengths of "
               f"{P.gpt2_n_test}", [(P.gpt2_n_test, g(length)) for _ in range(S) for _ in P.alphas_test
                                    for length in P.gpt2_lengths], gops[1]),
    ]  # fmt: skip
    return stages


def mechanism_pruning(P: SimpleNamespace | Any) -> list[Stage]:
    """Chapter 12's run: the learner per seed with its snapshots read at every evaluation (attention on two sets
    of ``n_test`` prompts, counted as forward passes), the pruning curves (3 ways × fractions, random ones
    ``draws`` times, on two sets, then per α'), then GPT-2 (chapter 11's recipe: loaded from its cache when that
    chapter ran, so at most) and its attention and pruning curves."""
    data_cfg, lc, tc, ops = _learner(P)
    f = lambda length: learner_flops(lc, length)  # noqa: E731
    S, n, ft = len(P.seeds), P.n_test, f(P.test_length)
    per_curve = lambda F, draws: 2 * F + F * draws  # smallest- and largest-first once, random `draws` times  # noqa: E731
    snaps = evaluations(tc.steps, tc.eval_every)
    curve = per_curve(len(P.fractions), P.draws)
    stages = [
        _training("learner training", f"{S} seeds × {tc.steps} steps of {tc.batch_size}", S, tc, f(tc.length),
                  1000, f(20), ops, "cpu"),
        _cells("snapshots", f"{S} seeds × {snaps} snapshots × 2 sets of {n}", [(n, ft)] * (2 * S * snaps), ops[1]),
        _cells("pruning curves", f"{S} seeds × 2 sets × {curve} pruned models on {n}", [(n, ft)] * (2 * S * curve),
               ops[1]),
        _cells("pruning by α'", f"{len(P.alphas_prune)} α' × {S} seeds × {per_curve(len(P.fractions), 1)} on {n}",
               [(n, ft)] * (len(P.alphas_prune) * S * per_curve(len(P.fractions), 1)), ops[1]),
    ]  # fmt: skip
    gcfg, gtrain, sizes, gops = _gpt2(P, data_cfg)
    gn, gt = P.gpt2_n_test, gpt2_flops(*sizes, data_cfg.D, P.test_length)
    gcurve = per_curve(len(P.gpt2_fractions), P.gpt2_draws)
    stages += [
        _gpt2_training(P, gtrain, sizes, data_cfg.D, gops, " (at most: chapter 11's cache)"),
        _cells(
            "GPT-2 attention and pruning",
            f"{S} seeds × (1 + {gcurve}) passes on {gn}",
            [(gn, gt)] * (S * (1 + gcurve)),
            gops[1],
        ),
    ]
    return stages
