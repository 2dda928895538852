"""The work of chapter 06's run, counted from its parameters before anything is trained (the twin of
``tvutils.icl.work``): FLOPs of the learner (eq. 3) and of the λ-grid's merge engine per sample, the torch
operations of one SGD step, one stopping-rule evaluation and one grid pass, and ``work_plan``, the stages of the
run as ``tvutils.chapter.cost.Stage`` rows.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..editing.task_vector import TaskVector
from . import seeds
from .config import Setting
from .data import DataConfig, task_pair
from .experiments import fresh_set, pretrained
from .grid import GPU_BLOCK_BYTES, merged_outputs_on
from .scaling import GRID_CHUNK, sweep_setting
from .theorems import lambda_grid
from .training import fine_tune


def learner_flops(data_cfg: DataConfig, m: int) -> float:
    """FLOPs of eq. (3)'s forward pass on one sample: X W (2Pd²), the scores (2P²d), V x_s (2Pdm), the
    attention-weighted sum (2P²m), aᵀ over positions (2Pm)."""
    P, d = data_cfg.P, data_cfg.d
    return float(2 * P * d * d + 2 * P * P * d + 2 * P * d * m + 2 * P * P * m + 2 * P * m)


def merge_flops(data_cfg: DataConfig, m: int, k: int = 2) -> float:
    """FLOPs per (grid point, sample) of the by-position merge engine with k task vectors: the weighted scores
    and values (2(1+k)P² + 2(1+k)Pm), the attention-weighted sum (2P²m), aᵀ (2Pm)."""
    P = data_cfg.P
    return float(2 * (1 + k) * P * P + 2 * (1 + k) * P * m + 2 * P * P * m + 2 * P * m)


def fine_tune_ops(s: Setting) -> tuple[int, int]:
    """Torch ops of one SGD step of ``fine_tune`` (drawing the minibatch, forward, backward, update) and of one
    stopping-rule evaluation, counted on a tiny copy of the setting (two fine-tunes of 1 and 2 steps,
    subtracted; the evaluation alone)."""
    from ..chapter.cost import count_ops
    from .training import evaluate

    model0 = pretrained(s.learner, 0)
    t1, _ = task_pair(0.0, s.data)

    def run(steps: int) -> int:
        cfg = replace(s.train, max_steps=steps, eval_every=steps, n_test=8, batch_size=min(s.train.batch_size, 8))
        return count_ops(lambda: fine_tune(model0, t1, cfg, seed=0))

    X, y = fresh_set(t1, 8, 0)
    return run(2) - run(1), count_ops(lambda: evaluate(model0, X, y))


def grid_pass_ops(s: Setting) -> int:
    """Torch ops of one pass of the λ-grid's by-position engine (``merged_outputs_on``: ``GRID_CHUNK`` grid points,
    one block of samples), counted on the CPU on 8 samples."""
    from ..chapter.cost import count_ops

    model0 = pretrained(s.learner, 0)
    tvs = [TaskVector({"W": model0.W.detach() * 0, "V": model0.V.detach() * 0})] * 2
    X, _ = fresh_set(task_pair(0.0, s.data)[0], 8, 0)
    return count_ops(lambda: merged_outputs_on(model0, tvs, np.zeros((GRID_CHUNK, 2)), X, "cpu", chunk=GRID_CHUNK))


def work_plan(P: SimpleNamespace | Any) -> list:
    """The stages of chapter 06's run with parameters ``P`` (``tvutils.chapter.cost.Stage``, in samples): the
    distinct fine-tunes each section asks for (first use only: ``FineTunes`` trains each once), each counted at
    its step budget ``max_steps`` with a stopping-rule evaluation every ``eval_every`` steps on ``n_stop``
    samples (an upper bound: a fine-tune stops once its target is met), and the λ-grid evaluations of each law
    (Theorem 2's refinement counted for every (seed, α), also an upper bound).

    Mirrors notebooks/06_scaling.ipynb section by section. Corollary 2's regime is chosen at run time; its
    fine-tunes are counted in the regime that adds the most. Left out: drawing test sets, the SVDs and row norms
    of the task vectors, the bootstrap fits (CPU, small).
    """
    from ..chapter.cost import TRAINING_FACTOR, Stage, evaluations

    where = "cpu" if P.device == "cpu" else "device"
    runs = list(P.seeds)
    trained: set = set()
    ops_cache: dict = {}

    def ops(s: Setting) -> tuple[int, int, int]:
        key = (s.data, s.learner)
        if key not in ops_cache:
            ops_cache[key] = (*fine_tune_ops(s), grid_pass_ops(s))
        return ops_cache[key]

    def fine_tunes(stage: str, requests: list[tuple[Setting, int, int]]) -> Stage:
        new = [(s, r, role) for s, r, role in dict.fromkeys(requests) if (s, r, role) not in trained]
        trained.update(new)
        fwd = train = flops = calls = op_total = 0.0
        for s, _, _ in new:
            t, f = s.train, learner_flops(s.data, s.learner.m)
            evals = evaluations(t.max_steps, t.eval_every)
            step_ops, eval_ops, _ = ops(s)
            train += t.max_steps * t.batch_size
            fwd += evals * t.n_test
            flops += TRAINING_FACTOR * t.max_steps * t.batch_size * f + evals * t.n_test * f
            calls += t.max_steps + evals
            op_total += t.max_steps * step_ops + evals * eval_ops
        what = f"at most {len(new)} new fine-tunes × {P.max_steps} steps (the budget) of {P.batch_size}"
        return Stage(stage, what, forward=fwd, training=train, flops=flops, calls=int(calls),
                     ops_per_call=op_total / calls if calls else 0.0, where=where)  # fmt: skip

    def grid(stage: str, what: str, calls: list[tuple[Setting, int, int, int]]) -> Stage:
        """calls: (setting, grid points, test sets, samples per set)."""
        fwd = flops = passes = op_total = 0.0
        for s, G, sets, n in calls:
            m = s.learner.m
            block = max(1, GPU_BLOCK_BYTES // (4 * GRID_CHUNK * s.data.P * m))  # merged_outputs_on's blocks
            p = sets * -(-G // GRID_CHUNK) * -(-n // block)
            fwd += sets * G * n
            flops += sets * (G * n * merge_flops(s.data, m) + 3 * n * learner_flops(s.data, m))
            passes += p
            op_total += p * ops(s)[2]
        return Stage(stage, what, forward=fwd, flops=flops, calls=int(passes),
                     ops_per_call=op_total / passes if passes else 0.0, where=where)  # fmt: skip

    def pair(s: Setting, r: int, alpha: float = 0.0) -> list[tuple[Setting, int, int]]:
        return [(s, r, seeds.T1), (s, r, seeds.pair_t2(alpha))]

    lam_add = len(lambda_grid(*P.add_lam_range, P.add_lam_step))
    lam_slope = len(lambda_grid(*P.slope_lam_range, P.slope_lam_step))
    sweeps = [sweep_setting(P, P.n_stop, d=d, M=P.M_fixed) for d in P.d_sizes]
    sweeps += [sweep_setting(P, P.n_stop, d=d, M=round(P.M_per_d * d)) for d in P.d_sizes]
    sweeps += [sweep_setting(P, P.n_stop, d=P.M_sweep_d, M=M) for M in P.M_sizes]
    base = sweep_setting(P, P.n_stop)
    eps_settings = [sweep_setting(P, P.n_stop, e, P.eps_eval_every) for e in P.eps_sizes]
    n_neg = P.neg_lam_points + 1
    n_ood = len(lambda_grid(*P.lam1_range, P.ood_step)) * len(lambda_grid(*P.lam2_range, P.ood_step))
    stages = [
        fine_tunes("Theorem 1: fine-tunes", [x for s in sweeps for r in runs for x in pair(s, r)]),
        grid("Theorem 1: λ grids", f"{len(sweeps)} sizes × {len(runs)} seeds × ({lam_add} λ on 2 sets + {lam_slope} "
             f"on 1) × {P.n_test}", [(s, G, k, P.n_test) for s in sweeps for _ in runs
                                       for G, k in ((lam_add, 2), (lam_slope, 1))]),
        fine_tunes("Theorem 2: fine-tunes", [x for r in P.fit_seeds for x in pair(base, r)]
                   + [x for r in runs for a in P.neg_alphas for x in pair(base, r, a)]),
        grid("Theorem 2: λ walks (at most)", f"{len(P.fit_seeds)} fit seeds × {n_neg} λ, then {len(runs)} seeds × "
             f"{len(P.neg_alphas)} α × ({n_neg} + {P.neg_refine} λ on 2 sets) × {P.n_test}",
             [(base, n_neg, 1, P.n_test) for _ in P.fit_seeds]
             + [(base, G, 2, P.n_test) for _ in runs for _ in P.neg_alphas for G in (n_neg, P.neg_refine)]),
        fine_tunes("Θ(ε): fine-tunes", [x for s in eps_settings for r in runs for x in pair(s, r)]),
        grid("Θ(ε): region points", f"{len(eps_settings)} ε × {len(runs)} seeds × 3 points × {P.n_test}",
             [(s, G, k, P.n_test) for s in eps_settings for _ in runs for G, k in ((2, 2), (1, 1))]),
    ]  # fmt: skip
    best = None
    for knobs in P.regimes.values():
        request = [(sweep_setting(P, P.n_stop, **knobs), P.fit_seeds[0], seeds.T1)]
        request += [(sweep_setting(P, P.n_stop, **knobs, m=m), r, seeds.T1) for r in runs for m in P.m_sizes]
        request += [(sweep_setting(P, P.n_stop, e, P.eps_eval_every, **knobs, m=P.cor2_m), r, seeds.T1)
                    for r in runs for e in P.cor2_eps_sizes]  # fmt: skip
        saved = set(trained)
        stage = fine_tunes("Corollary 2: fine-tunes", request)
        if best is None or stage.calls > best[0].calls:
            best = (stage, set(trained))
        trained.clear()
        trained.update(saved)
    trained.update(best[1])
    stages.append(best[0])
    stages.append(grid("Theorem 3: λ₁ × λ₂ grid", f"{len(P.d_sizes)} d × {len(runs)} seeds × {n_ood} points × "
                       f"{P.n_test}", [(s, n_ood, 1, P.n_test) for s in sweeps[: len(P.d_sizes)] for _ in runs]))  # fmt: skip
    return stages
