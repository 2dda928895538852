"""tvutils.suggest.theory on a small theory model: every method scored for every goal, and the calibration."""

import numpy as np
import pandas as pd
import pytest

from tvutils.suggest import theory as st
from tvutils.suggest.rules import Constants
from tvutils.suggest.scoring import GRID
from tvutils.taskvec import seeds
from tvutils.taskvec.config import THEORY_DEFAULTS, setting
from tvutils.taskvec.data import ood_tasks
from tvutils.taskvec.experiments import pair_vectors


@pytest.fixture(scope="module")
def small():
    data, learner, train = setting(THEORY_DEFAULTS)
    pair = pair_vectors([0.0], data, learner, train, 0)  # two fine-tunes: T1 and an orthogonal T2
    budget = st.Budget(16, 100, 5, (3,), np.array([(a, b) for a in (0.0, 1.0) for b in (-1.0, 0.0, 1.0)]))
    return data, pair, budget


def test_probe_seeds_are_distinct_and_above_the_chapters_seeds():
    values = {st.probe_seed(run, role, k) for run in (0, 1, 12) for role in (1, 2, 310) for k in range(4)}
    assert len(values) == 36 and min(values) >= 30_000_000


def test_every_method_is_scored_for_add_and_forget(small):
    data, pair, budget = small
    rows = pd.DataFrame(st.pair_cases(pair, 0, budget, Constants.literal(data.d)))
    assert set(rows.goal) == {"add", "forget"}
    add = rows[rows.goal == "add"].set_index("method")
    assert {"λ = 1", "fixed 0.3", "Model Stock", "norm ratio", "AdaMerging (5 steps)", GRID} <= set(add.index)
    assert add.loc["CMA-ES (3 merge evaluations)", "merge evaluations"] == 3
    assert add.loc["theory rule, α̂ by regression", "merge evaluations"] == 0
    assert add.loc["theory rule, α̂ by regression", "α̂"] == pytest.approx(0.0, abs=0.1)
    assert (rows.score <= 100).all() and rows.regret.notna().all()


def test_target_cases(small):
    data, pair, budget = small
    ood = ood_tasks([0.8, -0.6], 0.0, data)
    rows = pd.DataFrame(st.target_cases(pair, "t", ood, seeds.ood_target(100), budget, Constants.literal(data.d)))
    ours = rows[rows.method == "theory rule, γ̂ by signed gain"].iloc[0]
    assert ours["γ̂"][0] > 0 > ours["γ̂"][1] and bool(ours["guaranteed"])


def test_calibration_picks_the_middle_of_the_best(small):
    data, pair, budget = small
    m, u = st.calibrate_forget_margin([pair], budget, 1 / data.d, [0.0, 0.25, 0.5, 3.0])
    candidates = np.array([0.0, 0.25, 0.5, 3.0])
    best = candidates[u >= u.max() - st.TIE]
    assert len(u) == 4 and m == np.median(best)
    assert u[-1] < u.max()  # pushing the forgotten task's margin to −3 overshoots
