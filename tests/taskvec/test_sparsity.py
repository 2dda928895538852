"""Tests of tvutils.taskvec.sparsity: row norms, the two-group split, the regime search."""

import numpy as np
import pandas as pd
import pytest
import torch

from tvutils.editing.task_vector import TaskVector
from tvutils.taskvec import seeds
from tvutils.taskvec.data import DataConfig, task_pair
from tvutils.taskvec.experiments import fine_tune_tasks, pretrained
from tvutils.taskvec.model import LearnerConfig
from tvutils.taskvec.sparsity import (
    MERGES,
    PRUNING,
    RANDOM_PRUNING,
    RANDOM_ROWS,
    SMALLEST_ROWS,
    RegimeResult,
    effective_readout,
    loss_at,
    pick_regime,
    prune_check,
    regime_result,
    regime_run,
    row_norms,
    safe_fraction,
    two_groups,
)
from tvutils.taskvec.training import TrainConfig


def _tv(rows=10, cols=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(rows, cols, generator=g) * torch.arange(1, rows + 1, dtype=torch.float32)[:, None]
    return TaskVector({"W": torch.randn(3, 3, generator=g), "V": V, "b": torch.ones(2)})


def test_row_norms_match_torch():
    tv = _tv()
    assert np.allclose(row_norms(tv), tv.deltas["V"].norm(dim=1).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="no key"):
        row_norms(tv, "Q")
    with pytest.raises(ValueError, match="not a matrix"):
        row_norms(tv, "b")


def test_two_groups_finds_planted_split():
    rng = np.random.default_rng(0)
    norms = np.concatenate([rng.uniform(0.9, 1.1, 70), rng.uniform(0.009, 0.011, 30)])
    g = two_groups(norms)
    assert g.large_fraction == pytest.approx(0.7)
    assert g.ratio == pytest.approx(0.01, rel=0.2)
    assert g.present() and 0.011 < g.threshold < 0.9


def test_two_groups_ignores_outliers_and_unimodal():
    rng = np.random.default_rng(1)
    norms = np.concatenate([rng.normal(1.0, 0.02, 98), [1e-3, 2e-3]])  # two dead rows are not a group
    g = two_groups(norms, min_fraction=0.1)
    assert not g.present()
    assert g.large_fraction <= 0.9


def test_effective_readout():
    a = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert np.allclose(effective_readout(a), [1.0, 0.0])


def test_regime_run_small_and_the_same_from_a_fine_tune_already_made():
    data, learner, train = (
        DataConfig(d=16, P=6, M=4),
        LearnerConfig(d=16, m=16, P=6),
        TrainConfig(max_steps=200, n_test=200),
    )
    res = regime_run(data, learner, train, 0)
    model0 = pretrained(learner, 0)
    (tuned,) = fine_tune_tasks(model0, [task_pair(0.0, data)[0]], train, [seeds.finetune(0, seeds.T1)])
    assert np.array_equal(regime_result(model0, tuned).norms, res.norms)
    row = res.summary()
    assert len(res.norms) == 16 and row["steps"] > 0
    assert set(row) >= {"large fraction", "separation D", "two groups"}


def test_pruning_methods_prune_the_fraction_asked():
    g = torch.Generator().manual_seed(0)
    tv = TaskVector({"W": torch.randn(3, 3, generator=g), "V": torch.randn(10, 4, generator=g) + 0.1})
    for name, prune in PRUNING.items():
        out = prune(tv, 0.3, 1)
        assert torch.equal(out.deltas["W"], tv.deltas["W"]), name  # only ΔV is pruned
        zero_rows = int((out.deltas["V"].norm(dim=1) == 0).sum())
        zero_entries = int((out.deltas["V"] == 0).sum())
        assert zero_rows == 3 if "rows" in name else zero_entries >= 1, name
        assert torch.equal(prune(tv, 0.0, 1).deltas["V"], tv.deltas["V"]), name
    assert RANDOM_PRUNING < set(PRUNING)


def test_prune_check_reads_the_pruning_table():
    rows = []
    for method, extra in ((SMALLEST_ROWS, 0.0), (RANDOM_ROWS, 0.5)):
        for p in (0.0, 0.2, 0.4):
            for merge in MERGES[:2]:
                rows.append({"regime": "r", "method": method, "p": p, "merge": merge, "loss": 0.1 + p * extra + p / 10})
    table = pd.DataFrame(rows)
    assert loss_at(table, "r", RANDOM_ROWS, MERGES[0], 0.2) == pytest.approx(0.22)
    p, rise, gap = prune_check(table, "r", [0.0, 0.2, 0.4], small_fraction=0.3, merges=MERGES[:2])
    assert p == 0.2 and rise == pytest.approx(0.02) and gap == pytest.approx(0.1)
    assert all(np.isnan(prune_check(table, "r", [0.0, 0.4], small_fraction=0.3, merges=MERGES[:2])))


def _result(norms):
    return RegimeResult(np.asarray(norms), np.zeros(len(norms)), two_groups(norms), 1, True, 0.0)


def test_pick_regime_takes_the_clearest_two_groups():
    rng = np.random.default_rng(0)
    flat = rng.uniform(0.9, 1.1, 100)
    split = np.concatenate([rng.uniform(0.9, 1.1, 70), rng.uniform(0.009, 0.011, 30)])
    closer = np.concatenate([rng.uniform(0.9, 1.1, 70), rng.uniform(0.15, 0.2, 30)])
    results = {"flat": _result(flat), "closer": _result(closer), "split": _result(split)}
    assert pick_regime(results) == "split"
    with pytest.raises(ValueError, match="no regime"):
        pick_regime({"flat": _result(flat)})


def test_safe_fraction_stops_at_the_first_rise():
    rows = [{"regime": "r", "method": "m", "p": p, "merge": g, "loss": 0.1 + (0.2 if p >= 0.4 else 0.01 * p)}
            for p in (0.0, 0.2, 0.4, 0.6) for g in MERGES[:2]]  # fmt: skip
    table = pd.DataFrame(rows)
    assert safe_fraction(table, "r", "m", MERGES[:2], tol=0.05) == 0.2
    assert safe_fraction(table, "r", "m", MERGES[:2], tol=1.0) == 0.6
