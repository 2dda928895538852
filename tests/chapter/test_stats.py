"""Tests of tvutils.chapter.stats: bootstrap intervals and the line and power-law fits."""

import math

import numpy as np
import pytest

from tvutils.chapter.stats import (
    bootstrap_mean,
    difference_of_relative_changes,
    fit_line,
    fit_power,
    relative_change,
)


def test_bootstrap_intervals():
    rng = np.random.default_rng(0)
    before = rng.uniform(0.4, 0.6, 40)
    after = before * 0.5
    point, lo, hi = relative_change(before, after, n_boot=500)
    assert point == pytest.approx(-0.5) and lo == pytest.approx(-0.5) and hi == pytest.approx(-0.5)
    noisy = before * rng.uniform(0.2, 1.0, 40)
    point, lo, hi = relative_change(before, noisy, n_boot=500)
    assert lo < point < hi < 0
    diff, lo, hi = difference_of_relative_changes(before, after, before, before, n_boot=500)
    assert diff == pytest.approx(-0.5) and lo <= diff <= hi
    mean, lo, hi = bootstrap_mean([1.0, 2.0, 3.0, 4.0], n_boot=500)
    assert mean == 2.5 and 1.0 <= lo < mean < hi <= 4.0
    assert relative_change(before, noisy, n_boot=300, seed=3) == relative_change(before, noisy, n_boot=300, seed=3)


def test_fit_line_and_power():
    slope, intercept = fit_line([0, 1, 2, float("nan")], [1, 3, 5, 7])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    assert all(math.isnan(v) for v in fit_line([1, 1], [2, 3]))
    a = np.array([-1.0, -0.5, -0.25, 0.0])  # α = 0 is skipped
    C, p = fit_power(a, np.concatenate([-0.8 / a[:3] ** 2, [-1.0]]))
    assert C == pytest.approx(0.8) and p == pytest.approx(2.0)


def test_power_exponent():
    from tvutils.chapter.stats import power_exponent

    sizes = np.array([32.0, 64.0, 128.0, 256.0])
    rng = np.random.default_rng(1)
    exact = 3.0 * sizes[None, :] ** -1.0 * np.ones((5, 1))
    assert power_exponent(sizes, exact) == pytest.approx(-1.0)
    # constant values give exactly 0 (no rounding noise)
    assert str(power_exponent(sizes, np.full(4, 0.3))) == "0.0"
    with_gaps = exact.copy()
    with_gaps[0, 0], with_gaps[1, 1] = 0.0, np.nan
    assert power_exponent(sizes, with_gaps) == pytest.approx(-1.0)
    # per-run sizes (S, K), one seed, and bad shapes
    per_run = sizes[None, :] * rng.uniform(0.9, 1.1, (5, 4))
    assert power_exponent(per_run, 2.0 * per_run**0.5) == pytest.approx(0.5)
    assert math.isnan(power_exponent([1.0, 1.0], [2.0, 3.0]))
