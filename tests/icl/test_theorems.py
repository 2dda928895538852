import numpy as np
import pytest

from tvutils.icl.theorems import (
    bootstrap_exponent,
    fit_exponent,
    pattern_reader_error,
    theorem1_min_length,
    theorem2_predicts_success,
)


def test_fit_exponent_recovers_a_power_law():
    x = np.array([0.2, 0.4, 0.8])
    assert fit_exponent(x, 3 * x**-0.667) == pytest.approx(-0.667)
    assert fit_exponent(x, [5.0, np.nan, 5.0 / 4]) == pytest.approx(-1.0)


def test_bootstrap_exponent_over_seeds():
    x = np.array([0.2, 0.3, 0.5, 0.8])
    rng = np.random.default_rng(0)
    y = np.array([2 * x**-1.0 * np.exp(rng.normal(0, 0.05, 4)) for _ in range(6)])
    p, lo, hi, per_seed = bootstrap_exponent(x, y, n_boot=300)
    assert lo <= p <= hi and abs(p + 1) < 0.1 and per_seed.shape == (6,)
    assert bootstrap_exponent(x, y, n_boot=300)[1:3] == (lo, hi)  # seeded
    with pytest.raises(ValueError, match="shape"):
        bootstrap_exponent(x, y[:, :3])


def test_predictions():
    assert theorem1_min_length(0.25) == 4.0
    assert theorem2_predicts_success(1.0) and not theorem2_predicts_success(0.9)
    assert pattern_reader_error(0.8, 0) == 0.5 and pattern_reader_error(0.8, 3) == pytest.approx(0.5 * 0.6**3)
    with pytest.raises(ValueError, match="α'"):
        theorem1_min_length(0.0)


def test_bootstrap_exponent_skips_columns_without_values_quietly():
    import warnings

    y = np.array([[np.nan, 2.0, 1.0], [np.nan, 2.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p, lo, hi, _ = bootstrap_exponent([0.2, 0.4, 0.8], y, n_boot=20)
    assert p == pytest.approx(-1.0) and lo == pytest.approx(-1.0)
