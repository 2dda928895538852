"""Tests of tvutils.editing.inplace: merges written into a model's own tensors, restored bit for bit."""

import pytest
import torch
from torch import nn

from tvutils.editing.inplace import InPlaceMerge, add_in_place, task_arithmetic
from tvutils.editing.task_vector import TaskVector, merge


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _tv(model, seed):
    g = torch.Generator().manual_seed(seed)
    return TaskVector(
        {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items() if k.startswith("0.")}
    )


def test_set_equals_a_new_merged_model_and_restores(net):
    tvs = [_tv(net, 1), _tv(net, 2)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 4)
    with InPlaceMerge(net, tvs) as m:
        for lams in ([1.0, 0.5], [0.0, -1.2], [2.0, 0.0]):
            expected = merge(before, tvs, lams)
            m.set(lams)
            for k, v in net.state_dict().items():
                torch.testing.assert_close(v, expected[k], rtol=0, atol=1e-6)
        out = net(x)
    assert out.shape == (5, 2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="coefficients"):
        InPlaceMerge(net, tvs).set([1.0])


def test_task_arithmetic_and_add_in_place(net):
    tv = _tv(net, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with task_arithmetic(net, tv, -0.5):
        torch.testing.assert_close(net.state_dict()["0.weight"], before["0.weight"] - 0.5 * tv.deltas["0.weight"])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    add_in_place(net, tv, 1.0)
    torch.testing.assert_close(net.state_dict()["0.weight"], before["0.weight"] + tv.deltas["0.weight"])
    assert torch.equal(net.state_dict()["2.weight"], before["2.weight"])


def test_unknown_keys_and_shapes_are_refused(net):
    model = net
    with pytest.raises(ValueError, match="not a tensor of the model"):
        add_in_place(model, TaskVector({"nope.weight": torch.zeros(2)}), 1.0)
    key = "0.weight"
    with pytest.raises(ValueError, match="0.weight"):
        add_in_place(model, TaskVector({key: torch.zeros(3, 3)}), 1.0)
