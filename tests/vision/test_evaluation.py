"""The rules that pick "best λ" (tvutils.vision.evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvutils.vision import evaluation as ve
from tvutils.vision import model as vm


def test_lambda_selection_rules():
    lambdas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    acc1 = np.array([80.0, 94.5, 95.0, 94.0, 90.0])
    acc2 = np.array([10.0, 40.0, 60.0, 80.0, 85.0])
    assert ve.choose_lambda("multi-task", acc1, acc2, lambdas, 95.0) == 4  # mean 87.5
    # unlearning: λ = −1 forgets most but costs T1 15 points; −0.5 is within the 1-point tolerance
    assert ve.choose_lambda("unlearning", acc1, acc2, lambdas, 95.0, tolerance=1.0) == 1
    assert ve.select_unlearning(acc1, np.array([5.0, 5.0, 5.0, 1.0, 1.0]), lambdas, 95.0) == 2  # tie → nearest 0
    with pytest.raises(ValueError):
        ve.choose_lambda("other", acc1, acc2, lambdas, 95.0)
    sweep = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    y = torch.tensor([1, 0, 0, 0])
    assert ve.accuracy_rows(sweep, y).tolist() == [75.0, 75.0]
    first, second = ve.half_masks(4, seed=0)
    assert int(first.sum()) == 2 and not bool((first & second).any())
    assert ve.accuracy_rows(sweep, y, first).shape == (2,)
    assert vm.block_of("vit.layers.0.mlp.fc1.weight") == "MLP" and vm.block_of("vit.layernorm.bias") == "layer norms"
    assert vm.block_of("vit.encoder.layer.0.intermediate.dense.weight") == "MLP"
