"""tvutils.taskvec.scaling: fine-tunes trained once, the theorems' scaling quantities, and their edge cases."""

import math

import numpy as np
import pytest
import torch

from tvutils.taskvec import seeds
from tvutils.taskvec.config import THEORY_DEFAULTS, setting
from tvutils.taskvec.data import ood_tasks, task_pair
from tvutils.taskvec.experiments import fresh_set
from tvutils.taskvec.grid import evaluate_merges
from tvutils.taskvec.scaling import (
    REGION_POINTS,
    FineTunes,
    addition_offset,
    choose_regime,
    fitted_beta,
    loss_slope,
    negation_limit,
    negative_grid,
    ood_grid,
    ood_thresholds,
    region_losses,
    sweep_setting,
    theorem3_corner,
)
from tvutils.taskvec.sparsity import TwoGroups

SMALL = THEORY_DEFAULTS | {"d": 24, "M": 8, "P": 10, "m": 16, "max_steps": 400}


def test_fine_tunes_train_once_and_key_on_the_setting():
    s = setting(SMALL)
    t1, _ = task_pair(0.0, s.data)
    cache = FineTunes("cpu")
    a = cache.get(s, 0, t1, seeds.T1)
    assert cache.get(s, 0, t1, seeds.T1) is a and len(cache) == 1
    b = cache.get(setting(SMALL, epsilon=0.2), 0, t1, seeds.T1)  # another stopping rule: another model
    assert b is not a and len(cache) == 2 and b.history.steps <= a.history.steps
    c = cache.get(s, 1, t1, seeds.T1)
    assert not torch.equal(c.model.V, a.model.V)
    assert a.reached and a.model.V.device.type == "cpu"
    assert torch.equal(a.task_vector.deltas["V"], a.model.V.detach() - cache.model0(s, 0).V.detach())
    X, y = fresh_set(t1, 50, 123)
    lam = np.array([[1.0], [0.5]])
    ours = cache.losses(s, 0, [a.task_vector], lam, [(X, y)])
    assert ours.shape == (1, 2)
    np.testing.assert_allclose(ours[0], evaluate_merges(cache.model0(s, 0), [a.task_vector], lam, X, y)[0])


def test_sweep_setting_sets_the_stopping_set_and_drops_the_error_target_for_eps():
    s = sweep_setting(SMALL, 300, 0.1, eval_every=5, m=32)
    assert s.train.target_loss == 0.1 and s.train.target_error is None
    assert s.train.eval_every == 5 and s.train.n_test == 300 and s.learner.m == 32
    plain = sweep_setting(SMALL, 400, d=32)
    assert plain.train.n_test == 400 and plain.train.target_error == setting(SMALL).train.target_error
    assert plain.data.d == 32 and plain.train.eval_every == setting(SMALL).train.eval_every
    with pytest.raises(ValueError, match="unknown setting"):
        sweep_setting(SMALL, 300, 0.1, 5, width=3)


def test_addition_offset_and_loss_slope():
    lam = np.round(np.arange(0, 2.001, 0.1), 3)
    t2 = np.clip(1.0 - lam, 0, None)  # T2 learned (loss ≤ 0.1) from λ = 0.9 on
    t1 = 0.02 + 0.0 * lam
    assert addition_offset(np.stack([t1, t2]), lam, 0.0, 0.05, 2.0, 0.0) == pytest.approx(-0.1)
    assert addition_offset(np.stack([t1, t2]), lam, 0.5, 0.05, 2.0, 0.0) == pytest.approx(0.4)
    assert math.isnan(addition_offset(np.stack([t1 + 1, t2]), lam, 0.0, 0.05, 2.0, 0.0))
    neg = np.linspace(-2, 0, 11)
    assert loss_slope(0.1 - 0.3 * neg, neg) == pytest.approx(0.3)
    assert loss_slope(np.concatenate([0.1 - 0.3 * neg, [9.0]]), np.concatenate([neg, [1.0]])) == pytest.approx(0.3)


def test_negative_grid_and_fitted_beta():
    g = negative_grid(0.01, 100.0, 5)
    assert g[0] == pytest.approx(-100.0) and g[-2] == pytest.approx(-0.01) and g[-1] == 0 and np.all(np.diff(g) > 0)
    with pytest.raises(ValueError, match="smallest"):
        negative_grid(1.0, 0.5, 5)
    lam = np.array([-4.0, -2.0, -1.0, 0.0])
    assert fitted_beta(0.1 + 0.05 * np.abs(lam), lam, 0.05, 2.0) == pytest.approx(0.05)
    assert fitted_beta(np.zeros(4), lam, 0.05, 2.0) == 0.0


def test_negation_limit_refines_between_grid_points():
    true_limit = 7.3  # T1 kept for |λ| ≤ 7.3, T2 always forgotten

    def losses(lam):
        return np.stack([np.where(np.abs(lam) <= true_limit, 0.0, 5.0), np.ones_like(lam)])

    rule = {"eps": 0.05, "eps_factor": 2.0, "beta": 0.0, "forgotten": 0.5}
    grid = negative_grid(0.1, 100.0, 12)
    coarse, clipped = negation_limit(losses, grid, rule, n_refine=0)
    assert not clipped and coarse < true_limit and coarse in np.abs(grid)
    fine, clipped = negation_limit(losses, grid, rule, n_refine=200)
    assert not clipped and coarse < fine <= true_limit and true_limit - fine < 0.1
    assert negation_limit(lambda lam: np.stack([0 * lam, 1 + 0 * lam]), grid, rule, 10) == (100.0, True)
    lim, clipped = negation_limit(lambda lam: np.stack([5 + 0 * lam, 1 + 0 * lam]), grid, rule, 10)
    assert math.isnan(lim) and not clipped


def test_theorem3_corner_thresholds_and_region_losses():
    l1, l2 = theorem3_corner([0.8, -0.6], 1.1)
    assert 0.8 * l1 - 0.6 * l2 == pytest.approx(1.1) and 0.64 * l1 + 0.36 * l2 == pytest.approx(1.1)
    with pytest.raises(ValueError, match="different"):
        theorem3_corner([0.5, 0.5], 1.1)
    lam1, lam2 = np.linspace(-2, 3, 11), np.linspace(-2, 2, 9)
    pts = ood_grid(lam1, lam2)
    s1 = pts[:, 0] * 0.8 - 0.6 * pts[:, 1]
    th = ood_thresholds(np.where(s1 >= 1.0, 0.0, 1.0), [0.8, -0.6], lam1, lam2, 0.1)
    assert 0.8 < th.t1 <= 1.0 and th.balanced_accuracy == 1.0

    s = setting(SMALL)
    cache = FineTunes()
    t1, t2 = task_pair(0.0, s.data)
    tvs = [cache.get(s, 0, t, role).task_vector for t, role in ((t1, seeds.T1), (t2, seeds.pair_t2(0.0)))]
    target = ood_tasks([0.8, -0.6], 0.0, s.data).target
    sets = [fresh_set(t, 100, k) for k, t in enumerate((t1, t2, target))]
    out = region_losses(lambda lam, ss: cache.losses(s, 0, tvs, lam, ss), sets, 1 / 24, -0.1, (l1, l2))
    assert list(out) == list(REGION_POINTS) and all(v >= 0 for v in out.values())
    direct = cache.losses(s, 0, tvs, np.array([[1.0, -0.1]]), sets[:1])[0, 0]
    assert out["Theorem 2 (T1 kept)"] == pytest.approx(direct)


def test_choose_regime():
    clean = TwoGroups(0.1, 0.8, 0.01, 1.0, 5.0)
    cleaner = TwoGroups(0.1, 0.8, 0.01, 1.0, 7.0)
    none = TwoGroups(0.5, 0.9, 0.9, 1.0, 0.5)
    assert choose_regime({"a": clean, "b": cleaner, "c": none}) == "b"
    with pytest.raises(ValueError, match="no regime"):
        choose_regime({"c": none})


def test_one_run_of_each_law_on_a_small_setting():
    from tvutils.taskvec.scaling import (
        low_rank_errors,
        ood_run,
        region_run,
        row_groups,
        test_sets,
        theorem1_run,
        theorem2_run,
    )

    s = setting(SMALL)
    cache = FineTunes()
    sets = test_sets(s.data, 0, [0.8, -0.6], 50)
    assert [X.shape for X, _ in sets] == [(50, 10, 24)] * 3
    assert torch.equal(test_sets(s.data, 0, [0.8, -0.6], 50)[2][0], sets[2][0])
    offset, slope = theorem1_run(cache, s, 0, np.round(np.arange(0, 2.01, 0.05), 2), np.linspace(-2, 0, 11), 100, 2.0)
    assert -1.0 <= offset <= 1.0 and np.isfinite(slope)
    assert len(cache) == 2  # Ψ*_T1 and Ψ*_T2(0), each trained once
    rule = {"eps": 0.05, "eps_factor": 2.0, "beta": 0.1, "forgotten": 0.5, "n_refine": 4}
    limit, clipped = theorem2_run(cache, s, 0, -0.5, negative_grid(0.01, 50.0, 30), rule, 100)
    assert (0 < limit <= 50) or math.isnan(limit)
    th = ood_run(cache, s, 0, [0.8, -0.6], np.linspace(-2, 3, 11), np.linspace(-2, 2, 9), 100, 0.1)
    assert 0 <= th.balanced_accuracy <= 1
    region = region_run(cache, s, 0, [0.8, -0.6], 0.1, -0.1, 100)
    assert list(region) == list(REGION_POINTS)
    w1, v1, v2 = low_rank_errors(cache.pair(s, 0)[0].task_vector)
    assert 0 <= v2 <= v1 and w1 >= 0
    groups = row_groups(cache, s, 0)
    assert 0 < groups.large_fraction < 1 and len(cache) == 3  # T1 reused, T2(−0.5) trained
