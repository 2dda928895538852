"""tvutils.suggest.baselines: the closed forms, AdaMerging's entropy descent, the budgeted CMA-ES search."""

import numpy as np
import pytest
import torch
from torch import nn

from tvutils.editing.task_vector import TaskVector
from tvutils.suggest.baselines import (
    adamerging,
    cma_search,
    entropy,
    fixed,
    merged_forward,
    model_stock_ratios,
    model_stock_vectors,
    norm_ratio,
)


def _tv(**tensors):
    return TaskVector({k: torch.tensor(v, dtype=torch.float64) for k, v in tensors.items()})


def test_model_stock_per_layer():
    a, b = _tv(w=[1.0, 0.0], v=[1.0, 1.0]), _tv(w=[0.0, 1.0], v=[2.0, 2.0])
    t = model_stock_ratios([a, b])
    assert t["w"] == pytest.approx(0.0) and t["v"] == pytest.approx(1.0)  # orthogonal → 0; parallel → 1
    added = model_stock_vectors([a, b])
    assert torch.allclose(added[0].deltas["v"], torch.tensor([0.5, 0.5], dtype=torch.float64))
    forgot = model_stock_vectors([a, b], forget=1)
    assert forgot[0] is a and torch.allclose(forgot[1].deltas["v"], -b.deltas["v"])
    c = _tv(w=[1.0, 1.0], v=[1.0, 0.0])
    cos = 1 / np.sqrt(2)
    assert model_stock_ratios([a, c])["w"] == pytest.approx(2 * cos / (1 + cos))


def test_norm_ratio_and_fixed():
    a, b = _tv(w=[3.0, 0.0]), _tv(w=[0.0, 1.0])
    assert norm_ratio([a, b]) == pytest.approx((0.9, 0.1))
    assert norm_ratio([a, b], forget=0) == pytest.approx((-0.9, 1.0))
    assert fixed(0.3, 3) == (0.3, 0.3, 0.3) and fixed(1.0, 2, forget=1) == (1.0, -1.0)


def test_adamerging_lowers_the_entropy_on_unlabelled_inputs():
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    tvs = [
        TaskVector({"weight": torch.tensor([[1.0, 0, 0, 0]])}),
        TaskVector({"weight": torch.tensor([[0, 1.0, 0, 0]])}),
    ]
    x = torch.randn(64, 4)
    forward = merged_forward(model, tvs, lambda run: run(x).squeeze(-1))
    before = float(entropy(forward(torch.tensor([0.3, 0.3]))))
    lam = adamerging(forward, 2, steps=30)
    assert float(entropy(forward(torch.tensor(lam)))) < before
    assert all(v > 0.3 for v in lam)  # sharper predictions: larger coefficients
    assert torch.equal(model.weight, torch.zeros(1, 4))  # Ψ⁽⁰⁾ untouched


def test_cma_search_respects_its_budget_and_improves():
    calls = []

    def objective(x):
        calls.append(x)
        return float(((x - np.array([1.5, -0.5])) ** 2).sum())

    best, used = cma_search(objective, [1.0, 1.0], budget=3)
    assert used == len(calls) == 3
    calls.clear()
    best, used = cma_search(objective, [1.0, 1.0], budget=20)
    assert used == len(calls) == 20
    assert objective(np.array(best)) < objective(np.array([1.0, 1.0]))
    with pytest.raises(ValueError):
        cma_search(objective, [1.0], budget=5)
