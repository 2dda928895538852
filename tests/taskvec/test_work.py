"""Tests of chapter 06's work plan (tvutils.taskvec.work: work_plan and its FLOP and op counts)."""

from types import SimpleNamespace

import pytest

from tvutils.chapter.cost import plan_table
from tvutils.taskvec import work as sc
from tvutils.taskvec.config import THEORY_DEFAULTS, setting
from tvutils.taskvec.data import DataConfig

P08 = THEORY_DEFAULTS | {
    "m": 16, "max_steps": 100, "seeds": [0, 1], "fit_seeds": [100], "device": "cpu", "n_test": 50, "n_stop": 40,
    "d_sizes": [16, 32], "M_fixed": 10, "M_per_d": 0.3125, "M_sizes": [5, 10], "M_sweep_d": 32,
    "add_lam_range": [0.0, 2.0], "add_lam_step": 0.1, "slope_lam_range": [-2.0, 0.0], "slope_lam_step": 0.5,
    "neg_alphas": [-1.0, -0.3], "neg_lam_extent": [0.01, 100.0], "neg_lam_points": 20, "neg_refine": 4,
    "eps_sizes": [0.2, 0.1], "eps_eval_every": 5, "lam1_range": [-2.0, 3.0], "lam2_range": [-2.0, 2.0],
    "ood_step": 0.5, "regimes": {"defaults": {}, "step 4": {"a_per_position": True, "lr": 4.0}},
    "m_sizes": [16, 32], "cor2_eps_sizes": [0.2, 0.1], "cor2_m": 16,
}  # fmt: skip


def plan(**changes):
    return {s.stage: s for s in sc.work_plan(SimpleNamespace(**(P08 | changes)))}


def test_learner_flops_formula():
    cfg = DataConfig(d=64, P=20, M=20)
    P, d, m = 20, 64, 128
    assert sc.learner_flops(cfg, m) == 2 * P * d * d + 2 * P * P * d + 2 * P * d * m + 2 * P * P * m + 2 * P * m
    assert sc.merge_flops(cfg, m) > sc.merge_flops(cfg, m, k=1)


def test_fine_tune_ops_counts_a_step_and_an_evaluation():
    step, evaluation = sc.fine_tune_ops(setting(P08))
    assert step > evaluation > 5 and sc.grid_pass_ops(setting(P08)) > 5


def test_fine_tunes_are_counted_once_at_their_step_budget():
    one = plan()
    # Theorem 1: 3 sweeps of 2 sizes, but (d=32, M=10) is in all three: 4 distinct settings × 2 seeds × 2 tasks
    assert one["Theorem 1: fine-tunes"].training == 4 * 2 * 2 * 100 * 64
    # Theorem 2: base (d=64, M=20) is new: fit seed pair (2) + seeds × α's T2 (4) + the seeds' T1 (2)
    assert one["Theorem 2: fine-tunes"].training == (2 + 4 + 2) * 100 * 64
    twice = plan(seeds=[0, 1, 2, 3], max_steps=200)
    assert twice["Theorem 1: fine-tunes"].training == 4 * one["Theorem 1: fine-tunes"].training
    assert twice["Θ(ε): fine-tunes"].training == 4 * one["Θ(ε): fine-tunes"].training


def test_grids_scale_with_seeds_and_test_sets():
    one, more = plan(), plan(seeds=[0, 1, 2, 3], n_test=100)
    stage = "Theorem 3: λ₁ × λ₂ grid"
    assert one[stage].forward == 2 * 2 * (11 * 9) * 50  # d sizes × seeds × points × samples
    assert more[stage].forward == 4 * one[stage].forward
    assert more["Theorem 1: λ grids"].flops == pytest.approx(4 * one["Theorem 1: λ grids"].flops)


def test_device_decides_where_the_stages_run():
    assert all(s.where == "cpu" for s in plan().values())
    gpu = plan(device="cuda")
    assert all(s.where == "device" for s in gpu.values())
    table = plan_table(list(gpu.values()))
    assert table.loc["total", "minutes on A100"] < table.loc["total", "minutes on T4"]
