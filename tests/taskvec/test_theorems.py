import numpy as np
import pytest

from tvutils.taskvec.theorems import agreement, lambda_grid, theorem1_region, theorem2_region, theorem3_region


def test_lambda_grid_is_exact():
    grid = lambda_grid(-2, 3, 0.2)
    assert len(grid) == 26 and grid[0] == -2 and grid[-1] == 3 and 1.0 in grid


def test_theorem1_region():
    alpha, lam = np.array([-0.5, 0.0, 0.5]), np.array([0.0, 0.6, 1.0, 2.0])
    mask = theorem1_region(alpha, lam, beta=0.1)
    assert mask.shape == (3, 4)
    assert not mask[0].any()  # α < 0: outside the theorem
    assert mask[1].tolist() == [False, False, False, True]  # λ ≥ 1.1
    assert mask[2].tolist() == [False, True, True, True]  # λ ≥ 0.6


def test_theorem2_region():
    alpha, lam = np.array([-1.0, -0.5, 0.0, 0.5]), np.array([-5.0, -1.0, -0.4, 0.0, 0.4])
    mask = theorem2_region(alpha, lam, C=0.5)
    assert mask[0].tolist() == [False, False, True, True, False]  # −0.5 ≤ λ ≤ 0
    assert mask[1].tolist() == [False, True, True, True, False]  # −2 ≤ λ ≤ 0
    assert mask[2].tolist() == [True, True, True, True, False]  # α = 0: unbounded below
    assert not mask[3].any()


def test_theorem3_region_and_agreement():
    lam1, lam2 = lambda_grid(-2, 3), lambda_grid(-2, 2)
    mask = theorem3_region((0.8, -0.6), lam1, lam2, c=0.1, beta=0.01)
    L1, L2 = np.meshgrid(lam1, lam2, indexing="ij")
    expected = (0.8 * L1 - 0.6 * L2 >= 1.1 - 1e-9) & (0.64 * L1 + 0.36 * L2 >= 1.1 - 1e-9)
    assert mask.shape == (26, 21) and np.array_equal(mask, expected)
    fitted = theorem3_region((0.8, -0.6), lam1, lam2, c=0.1, beta=0.01, thresholds=(0.2, 0.2))
    assert fitted.sum() > mask.sum()
    assert agreement(mask, mask) == 1.0
    assert agreement(mask, ~mask) == 0.0
    assert np.isnan(agreement(np.zeros((2, 2), bool), np.ones((2, 2), bool)))
    with pytest.raises(ValueError):
        agreement(mask, mask[:3])
