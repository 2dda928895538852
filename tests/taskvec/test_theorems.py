import numpy as np
import pytest

from tvutils.taskvec.boundaries import agreement
from tvutils.taskvec.theorems import (
    addition_success,
    lambda_grid,
    negation_success,
    orthant,
    orthant_edge,
    theorem1_region,
    theorem2_region,
    theorem3_coordinates,
    theorem3_region,
)


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


def test_success_rules():
    lambdas = np.array([-1.0, 0.0, 2.0])
    loss = np.zeros((2, 1, 3))  # (task, α, λ)
    loss[0] = [[0.12, 0.05, 0.12]]  # T1: 0.12 ≤ 0.1 + |λ|·0.02 only where |λ| ≥ 1
    loss[1] = [[0.9, 0.05, 0.11]]
    add = addition_success(loss, lambdas, eps=0.05, eps_factor=2, beta=0.02)
    assert add.tolist() == [[False, True, False]]  # T2 must be ≤ 0.1 without the |λ|β allowance
    neg = negation_success(loss, lambdas, eps=0.05, eps_factor=2, beta=0.02, forgotten=0.5)
    assert neg.tolist() == [[True, False, False]]
    with_seed_axis = addition_success(loss[None], lambdas, 0.05, 2, 0.02)
    assert with_seed_axis.shape == (1, 1, 3)


def test_coordinates_match_theorem3_region():
    lam1, lam2, gam, c = lambda_grid(-2, 3), lambda_grid(-2, 2), (0.779, -0.627), 0.1
    s1, s2 = theorem3_coordinates(gam, lam1, lam2)
    assert s1.shape == (26, 21)
    assert s1[np.searchsorted(lam1, 1.0), np.searchsorted(lam2, 0.0)] == pytest.approx(gam[0])
    assert np.array_equal(orthant(s1, s2, 1 + c, 1 + c), theorem3_region(gam, lam1, lam2, c=c, beta=0.0))
    with pytest.raises(ValueError):
        theorem3_coordinates((0.5, 0.5, 0.5), lam1, lam2)


def test_orthant_edge_is_the_lowest_lambda1_inside():
    gam, lam1, lam2 = (0.779, -0.627), lambda_grid(-2, 3, 0.01), lambda_grid(-2, 2)
    s1, s2 = theorem3_coordinates(gam, lam1, lam2)
    edge = orthant_edge(gam, 0.7, 0.2, lam2)
    first = lam1[np.argmax(orthant(s1, s2, 0.7, 0.2), axis=0)]
    assert np.allclose(first, edge, atol=0.011)
    with pytest.raises(ValueError):
        orthant_edge((-0.5, 0.5), 1.0, 1.0, lam2)
