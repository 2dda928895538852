"""The rules that pick "best λ" (tvutils.vision.evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvutils.editing.inplace import InPlaceMerge
from tvutils.editing.task_vector import TaskVector
from tvutils.vision import data as vd
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


def brute_force_accuracy(m: torch.Tensor, parity: torch.Tensor, p_colour: float, p_parity: float) -> float:
    """Enumerate each digit's four (label, colour) outcomes with their probabilities."""
    total = 0.0
    for i, par in enumerate(parity.tolist()):
        for y, p_y in ((par, p_parity), (1 - par, 1 - p_parity)):
            for colour, p_c in ((y, p_colour), (1 - y, 1 - p_colour)):  # colour code = y's channel when agreeing
                total += p_y * p_c * float(int(m[colour, i] > 0) == y)
    return 100 * total / len(parity)


@pytest.mark.parametrize("p_colour, p_parity", [(0.95, 1.0), (0.5, 1.0), (0.05, 1.0), (0.8, 0.05), (0.6, 0.25)])
def test_expected_accuracy_is_the_expectation_over_draws(p_colour, p_parity):
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(2, 40, generator=gen)
    parity = torch.randint(0, 2, (40,), generator=gen)
    got = ve.expected_accuracy(m, parity, p_colour, p_parity)
    assert got == pytest.approx(brute_force_accuracy(m, parity, p_colour, p_parity))
    stacked = ve.expected_accuracy(torch.stack([m, -m]), parity, p_colour, p_parity)  # leading axes kept
    assert stacked.shape == (2,) and stacked[0] == pytest.approx(got) and stacked[1] == pytest.approx(100 - got)
    mask = torch.arange(40) < 10
    assert ve.expected_accuracy(m, parity, p_colour, p_parity, mask) == pytest.approx(
        brute_force_accuracy(m[:, :10], parity[:10], p_colour, p_parity)
    )
    with pytest.raises(ValueError, match="margins must be"):
        ve.expected_accuracy(m[:1], parity, p_colour, p_parity)


def test_a_colour_reader_scores_p_and_a_sampled_test_set_agrees():
    parity = torch.tensor([0, 1] * 50)
    colour_reader = torch.tensor([[-1.0] * 100, [1.0] * 100])  # predicts odd iff green
    assert ve.expected_accuracy(colour_reader, parity, 0.95) == pytest.approx(95.0)
    assert ve.expected_accuracy(colour_reader, parity, 0.05) == pytest.approx(5.0)
    shape_reader = torch.stack([parity * 2.0 - 1] * 2)  # predicts the parity whatever the colour
    assert ve.expected_accuracy(shape_reader, parity, 0.3, p_parity=0.2) == pytest.approx(20.0)
    # a sampled Colored-MNIST test set of many copies of these digits estimates the same number
    images = np.random.default_rng(1).integers(0, 256, (100, 28, 28)).astype(np.uint8)
    task = vd.ColourTask("t", 0.8, 0.3, seed=3)
    big = vd.make_task_data(np.tile(images, (40, 1, 1)), np.tile(parity.numpy(), 40), task)
    sampled = ve.accuracy((big.colour == vd.GREEN).long(), big.y)  # the colour reader's predictions
    assert ve.expected_accuracy(colour_reader, parity, 0.8, 0.3) == pytest.approx(sampled, abs=1.5)


def test_addition_searches_positive_lambda_only():
    lambdas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    acc1 = np.array([99.0, 99.0, 99.0, 90.0, 80.0])
    acc2 = np.array([99.0, 99.0, 99.0, 80.0, 85.0])
    assert ve.select_addition(acc1, acc2, lambdas) == 3  # λ ≤ 0 is never an addition, however good
    with pytest.raises(ValueError, match="λ > 0"):
        ve.select_addition(acc1, acc2, -np.abs(lambdas))
    assert ve.best_cell(np.array([[1, 5], [5, 2]])) == (0, 1)


def test_colour_margins_and_sweeps_have_both_colourings():
    model = vm.with_binary_head(vm.make_vit(vm.ViTSpec(image_size=8, patch_size=4, hidden_size=16, layers=1,
                                                      heads=2, mlp_size=16), 3, 0), seed=0)  # fmt: skip
    pair = vd.both_colours(np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8))
    m = ve.colour_margins(model, pair, batch_size=3)
    assert m.shape == (2, 5)
    assert torch.allclose(m[1], ve.margins(model, pair[1]), atol=1e-6)
    tv = TaskVector({k: torch.zeros_like(v) for k, v in model.state_dict().items() if k.startswith("vit.")})
    with InPlaceMerge(model, [tv]) as merger:
        sweep = ve.sweep_colour_margins(merger, [(0.0,), (1.0,)], pair)
    assert sweep.shape == (2, 2, 5) and torch.allclose(sweep[0], m, atol=1e-6)
