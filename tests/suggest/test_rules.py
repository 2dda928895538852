"""tvutils.suggest.rules and api: each goal's λ, region, flag and reason; Theorem 3's point is the region's closest."""

import numpy as np
import pytest
import torch

from tvutils.suggest.api import suggest
from tvutils.suggest.estimate import Estimate
from tvutils.suggest.rules import Constants, forget_point, suggest_add, suggest_forget, suggest_target, theorem3_point
from tvutils.taskvec.theorems import lambda_grid, theorem3_region

K = Constants.literal(64)


def est(value: float, half: float = 0.05) -> Estimate:
    return Estimate(value, value - half, value + half, 100, "test")


def test_literal_constants():
    assert (K.beta, K.c, K.negation, K.margin) == (1 / 64, 0.1, 1.0, 0.25)
    assert Constants.literal(64, forget_margin=None).margin == 1 + 1 / 64
    with pytest.raises(ValueError):
        Constants.literal(0)


@pytest.mark.parametrize(
    ("alpha", "lam", "guaranteed"),
    [(0.5, 1.0, True), (0.0, 1 + 1 / 64, True), (-0.5, 1.5 + 1 / 64, False)],
)
def test_add_returns_the_guard_and_a_flag(alpha, lam, guaranteed):
    s = suggest_add({(0, 1): est(alpha)}, 2, K)
    assert s.lambdas == (1.0, round(lam, 4))
    assert s.guaranteed is guaranteed
    assert ("Theorem 1 covers" in s.reason) is guaranteed


def test_add_with_three_tasks_guards_each_against_its_least_aligned_predecessor():
    s = suggest_add({(0, 1): est(0.5), (0, 2): est(0.6), (1, 2): est(-0.01, 0.02)}, 3, K)
    assert s.lambdas == (1.0, 1.0, round(1 + 0.01 + 1 / 64, 4))
    assert s.guaranteed  # the interval of α̂[2,3] contains 0: irrelevant, inside the premise


def test_forget_pushes_the_first_order_margin_to_minus_m_inside_theorem2():
    s = suggest_forget([est(-0.1)], 1, 2, K)
    assert s.lambdas == (1.0, -0.15) and s.guaranteed  # −(m + α̂) with the calibrated m = 0.25
    mirror = suggest_forget([est(-0.4)], 1, 2, Constants.literal(64, forget_margin=None))
    assert mirror.lambdas == (1.0, round(-(1 + 1 / 64 - 0.4), 4)) and mirror.guaranteed
    aligned = suggest_forget([est(0.5)], 1, 2, K)
    assert aligned.lambdas == (1.0, -0.75) and not aligned.guaranteed and "aligned" in aligned.reason
    zero = suggest_forget([est(-0.4)], 1, 2, K)
    assert zero.lambdas[1] == 0.0 and "λ = 0" in zero.reason
    lam, lower = forget_point([-0.1], Constants(beta=0.5, c=0.1, forget_margin=1.0))
    assert lower == pytest.approx(-0.2) and lam == pytest.approx(-0.2)  # −0.9, limited by |λ|β ≤ c


@pytest.mark.parametrize("gammas", [(0.8, -0.6), (0.6, 0.6), (0.9, 0.1), (-0.5, 0.7)])
def test_theorem3_point_is_the_closest_point_of_the_region(gammas):
    point = theorem3_point(gammas, K)
    assert point is not None
    g = np.array(gammas)
    assert g @ point >= 1.1 - 1e-9 and g**2 @ point >= 1.1 - 1e-9
    lam = lambda_grid(-4, 4, 0.02)
    mask = theorem3_region(g, lam, lam, K.c, K.beta)
    L1, L2 = np.meshgrid(lam, lam, indexing="ij")
    assert np.hypot(point[0], point[1]) <= np.hypot(L1, L2)[mask].min() + 1e-9


def test_target_with_no_reachable_region_promises_nothing():
    s = suggest_target([est(0.0, 0.01), est(0.0, 0.01)], K)
    assert s.lambdas == (0.0, 0.0) and not s.guaranteed
    s = suggest_target([est(0.8), est(-0.6)], K, sources=est(0.5))
    assert not s.guaranteed and "not orthogonal" in s.reason


def test_api_from_output_changes():
    rng = np.random.default_rng(0)
    n, alpha = 200, -0.5
    s = rng.normal(size=n)  # the signal of each row along its own task's pattern
    task = np.repeat([0, 1], n // 2)
    d1 = torch.tensor(np.where(task == 0, s, alpha * s))  # Δf₁: its own signal on T1 rows, α of it on T2 rows
    d2 = torch.tensor(np.where(task == 1, 2 * s, 2 * alpha * s))  # Δf₂ with twice the gain
    add = suggest("add", [d1, d2], task, K)
    assert add.estimates["α̂[1,2]"].value == pytest.approx(alpha, abs=1e-6)
    assert not add.guaranteed
    forget = suggest("forget", [d1, d2], task, K)
    assert forget.lambdas[1] == 0.0 and forget.guaranteed  # −(0.25 − 0.5) > 0: clipped to the range's end
    with pytest.raises(ValueError, match="gains"):
        suggest("target", [d1, d2], task, K)
    with pytest.raises(ValueError, match="unknown goal"):
        suggest("merge", [d1, d2], task, K)
