"""Tests of tvutils.taskvec.boundaries: region scores, edges of success, fitted constants and thresholds."""

import math

import numpy as np
import pytest

from tvutils.taskvec.boundaries import (
    balanced_accuracy,
    best_cell,
    fit_thresholds,
    fitted_region_accuracy,
    largest_constant,
    lower_edge,
    lower_limit,
    lowest_success,
    walk_down,
)
from tvutils.taskvec.theorems import lambda_grid, orthant, theorem3_coordinates


def test_walk_down():
    assert walk_down([True, True, False, True, True], 4) == 3
    assert walk_down([True, True, True], 2) == 0
    assert walk_down([True, False], 1) is None


def test_lowest_success_and_lower_limit():
    lambdas = np.array([-2.0, -1.0, 0.0, 1.0])
    success = np.array(
        [[False, False, True, True], [False, False, False, False], [True, False, True, True], [True, True, True, False]]
    )
    np.testing.assert_array_equal(lowest_success(success, lambdas), [0.0, np.nan, -2.0, -2.0])
    limit, clipped = lower_limit(success, lambdas, start=0.0)
    np.testing.assert_array_equal(limit, [0.0, np.nan, 0.0, -2.0])
    assert clipped.tolist() == [False, False, False, True]
    with pytest.raises(ValueError):
        lower_limit(success, lambdas, start=0.5)


def test_largest_constant():
    # largest C with −C/α² ≥ the observed limit: min |limit|·α², clipped rows skipped
    limit = np.array([-1.0, -2.0, -3.0, -0.5])
    assert largest_constant([-1.0, -0.5, 0.0, -0.2], limit) == pytest.approx(0.02)
    assert largest_constant([-1.0, -0.5], [-1.0, -2.0], clipped=[False, True]) == pytest.approx(1.0)
    assert np.isnan(largest_constant([0.0], [-1.0]))


def test_fit_thresholds_recovers_a_planted_orthant():
    lam1, lam2 = lambda_grid(-2, 3), lambda_grid(-2, 2)
    s1, s2 = theorem3_coordinates((0.779, -0.627), lam1, lam2)
    planted = orthant(s1, s2, 0.7, 0.2)
    fit = fit_thresholds(planted, s1, s2)
    assert fit.balanced_accuracy == pytest.approx(1.0)
    assert np.array_equal(orthant(s1, s2, fit.t1, fit.t2), planted)
    assert s1[planted].min() >= fit.t1 and s2[planted].min() >= fit.t2
    assert fit.t1 <= 0.7 + 0.2 and fit.t2 <= 0.2 + 0.2
    only_s1 = s1 >= 0.5  # no s₂ edge: the fit must say so rather than invent one
    fit = fit_thresholds(only_s1, s1, s2)
    assert fit.t2 == -np.inf and 0.4 < fit.t1 <= 0.5 and fit.balanced_accuracy == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_thresholds(np.ones_like(planted), s1, s2)


def test_balanced_accuracy():
    obs = np.array([True, True, False, False])
    assert balanced_accuracy(obs, obs) == 1.0
    assert balanced_accuracy(np.array([True, False, False, False]), obs) == 0.75
    assert balanced_accuracy(np.ones(4, bool), np.ones(4, bool)) == 1.0


def test_lower_edge():
    lam1 = np.array([-1.0, 0.0, 1.0, 2.0])
    success = np.array([[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=bool)
    edge = lower_edge(success, lam1)
    assert edge[0] == 1.0 and edge[1] == 0.0 and math.isnan(edge[2])
    with pytest.raises(ValueError):
        lower_edge(success, lam1[::-1])


def test_best_cell_breaks_ties_towards_the_smallest_merge():
    lam1, lam2 = np.array([0.0, 1.0, 2.0]), np.array([-1.0, 0.0])
    loss = np.array([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    error = np.zeros_like(loss)
    assert best_cell(loss, error, lam1, lam2, nonzero=False) == (0, 1)  # λ = (0, 0) itself
    assert best_cell(loss, error, lam1, lam2) == (1, 0)  # the smallest merge with every λᵢ ≠ 0
    error[1, 0] = 0.1
    assert best_cell(loss, error, lam1, lam2) == (2, 0)
    with pytest.raises(ValueError):
        best_cell(loss[:, 1:], error[:, 1:], lam1, lam2[1:])


def test_fitted_region_accuracy_scores_the_orthant():
    lam1, lam2 = lambda_grid(-2, 3), lambda_grid(-2, 2)
    s1, s2 = theorem3_coordinates((0.779, -0.627), lam1, lam2)
    planted = orthant(s1, s2, 0.7, 0.2)
    fit = fit_thresholds(planted, s1, s2)
    assert fitted_region_accuracy(fit, s1, s2, planted) == pytest.approx(1.0)
    assert fitted_region_accuracy(fit, s1, s2, ~planted) == pytest.approx(0.0)
