"""tvutils.suggest.scoring: utilities per goal, regret against the grid chosen on half A, the table over seeds."""

import numpy as np
import pandas as pd
import pytest

from tvutils.suggest.scoring import GRID, Choice, case_rows, per_seed_regret, regret_table, utility


def test_utilities():
    acc = np.array([[90.0, 70.0], [100.0, 0.0]])
    assert utility("add", acc).tolist() == [80.0, 50.0]
    # forget: kept task first (reference 95, one point free), the forgotten last
    assert utility("forget", acc, np.array([95.0])).tolist() == [30.0 - 4.0, 100.0]
    assert utility("target", acc[:, :1]).tolist() == [90.0, 100.0]
    with pytest.raises(ValueError):
        utility("forget", acc)
    with pytest.raises(ValueError):
        utility("merge", acc)


def test_regret_against_the_grid_chosen_on_half_a():
    grid_a, grid_b = np.array([50.0, 80.0, 79.0]), np.array([60.0, 75.0, 78.0])
    rows = case_rows("w", "add", "s", 0, [Choice("m", (1.0, 1.0), 70.0, 0, 10, True)], grid_a, grid_b, 30)
    ours, grid = rows
    assert ours["regret"] == pytest.approx(5.0) and ours["λ"] == "1.00, 1.00"  # grid picks index 1 → 75 on B
    assert grid["method"] == GRID and grid["regret"] == pytest.approx(3.0) and grid["merge evaluations"] == 3


def test_table_over_seeds():
    rows = []
    for seed, score in ((0, 70.0), (1, 72.0), (2, 74.0)):
        rows += case_rows(
            "w", "add", "s", seed, [Choice("m", "per layer", score, 3, 10)], np.ones(2), 80 * np.ones(2), 5
        )
    results = pd.DataFrame(rows)
    table = regret_table(results)
    row = table[table.method == "m"].iloc[0]
    assert row["regret (points)"].startswith("8.0 [") and row["merge evaluations"] == "3"
    assert per_seed_regret(results, "w", "add", "m").tolist() == [10.0, 8.0, 6.0]
