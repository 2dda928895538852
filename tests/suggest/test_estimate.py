"""tvutils.suggest.estimate: α̂ by regression recovers α whatever the gains, γ̂ by signed gain, intervals, refusals."""

import numpy as np
import pytest
import torch

from tvutils.suggest.estimate import (
    MIN_EXAMPLES,
    ProbeError,
    alpha_regression,
    examples_needed,
    gamma_gain,
    output_cosine,
)


def _linear_probe(alpha: float, gains=(1.0, 3.0), n: int = 400, noise: float = 0.01, seed: int = 0):
    """The theory's linear picture: Δfᵢ = gainᵢ·μᵢᵀs on inputs whose signal s lies along their own task's μ."""
    rng = np.random.default_rng(seed)
    mu1, mu2 = np.array([1.0, 0.0]), np.array([alpha, np.sqrt(1 - alpha**2)])
    s1, s2 = rng.normal(size=(n, 1)) * mu1, rng.normal(size=(n, 1)) * mu2  # task 1's and task 2's inputs
    f = lambda s, mu, g: g * (s @ mu) + noise * rng.normal(size=len(s))  # noqa: E731
    return (f(s1, mu1, gains[0]), f(s1, mu2, gains[1]), f(s2, mu2, gains[1]), f(s2, mu1, gains[0]))


@pytest.mark.parametrize("alpha", [-0.8, -0.3, 0.0, 0.5, 0.9])
def test_regression_recovers_alpha_whatever_the_gain_ratio(alpha):
    est = alpha_regression(*_linear_probe(alpha))
    assert est.low <= est.value <= est.high
    assert abs(est.value - alpha) < 0.05
    assert est.method == "regression (both directions)"


def test_one_direction_keeps_the_gain_ratio_and_cosine_reads_2a_over_1_plus_a2():
    own_i, cross_i, own_j, cross_j = _linear_probe(0.5, gains=(1.0, 2.0))
    assert alpha_regression(own_i, cross_i).value == pytest.approx(2 * 0.5, abs=0.05)
    both_i, both_j = np.concatenate([own_i, cross_j]), np.concatenate([cross_i, own_j])
    cos = output_cosine(both_i, both_j)
    assert 0.6 < cos.value < 0.95  # not α: with equal gains it would be 2α/(1 + α²) = 0.8


def test_relation_is_named_by_the_interval():
    assert alpha_regression(*_linear_probe(0.6)).relation == "aligned"
    assert alpha_regression(*_linear_probe(-0.6)).relation == "contradictory"
    assert alpha_regression(*_linear_probe(0.0, noise=0.5, n=60)).relation == "irrelevant"


def test_same_probe_same_interval_and_more_examples_narrow_it():
    a, b = alpha_regression(*_linear_probe(0.3, noise=0.3)), alpha_regression(*_linear_probe(0.3, noise=0.3))
    assert (a.low, a.high) == (b.low, b.high)
    small = alpha_regression(*_linear_probe(0.3, n=50, noise=0.5))
    large = alpha_regression(*_linear_probe(0.3, n=800, noise=0.5))
    assert large.halfwidth < small.halfwidth
    needed = examples_needed(small, small.halfwidth / 2)
    assert 3.5 * small.n <= needed <= 4.5 * small.n


def test_vector_outputs_per_example():
    own_i, cross_i, own_j, cross_j = (torch.as_tensor(x)[:, None].repeat(1, 3) for x in _linear_probe(0.4))
    assert alpha_regression(own_i, cross_i, own_j, cross_j).value == pytest.approx(0.4, abs=0.05)


def test_refusals():
    own_i, cross_i, own_j, cross_j = _linear_probe(0.4, n=MIN_EXAMPLES - 1)
    with pytest.raises(ProbeError, match=f"at least {MIN_EXAMPLES}"):
        alpha_regression(own_i, cross_i, own_j, cross_j)
    with pytest.raises(ProbeError, match="did not change"):
        alpha_regression(np.zeros(20), np.ones(20))
    with pytest.raises(ProbeError, match="differ"):
        alpha_regression(np.ones(20), np.ones(21))
    with pytest.raises(ProbeError, match="no gain"):
        gamma_gain(np.ones(20), -np.ones(20))


def test_gamma_is_the_gain_ratio():
    rng = np.random.default_rng(0)
    own = 2.0 + 0.1 * rng.normal(size=200)
    target = -0.6 * 2.0 + 0.1 * rng.normal(size=100)
    g = gamma_gain(target, own)
    assert g.value == pytest.approx(-0.6, abs=0.03) and g.relation == "contradictory"
    assert g.low <= g.value <= g.high
