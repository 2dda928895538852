import numpy as np
import pytest
import torch

from tvutils.icl.data import DataConfig, cycle_tasks, idr_patterns, sample_prompts
from tvutils.icl.experiments import pretrained
from tvutils.icl.model import LearnerConfig, loss_and_error
from tvutils.icl.sparsity import LARGEST, PRUNING, RANDOM, SMALLEST, keep_mask, neuron_norms, pruned, pruning_curves


def test_keep_mask_orders_and_counts():
    norms = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert keep_mask(norms, 0.4, SMALLEST).tolist() == [True, False, True, False, True]
    assert keep_mask(norms, 0.4, LARGEST).tolist() == [False, True, True, True, False]
    r = keep_mask(norms, 0.6, RANDOM, seed=1)
    assert r.sum() == 2 and np.array_equal(r, keep_mask(norms, 0.6, RANDOM, seed=1))
    layers = keep_mask(np.arange(8.0).reshape(2, 4), 0.5, SMALLEST)
    assert layers.shape == (2, 4) and layers.sum(1).tolist() == [2, 2]
    with pytest.raises(ValueError, match="unknown pruning"):
        keep_mask(norms, 0.2, "middle")
    with pytest.raises(ValueError, match="fraction"):
        keep_mask(norms, 1.2, SMALLEST)


def test_pruned_removes_rows_and_curves_start_unpruned():
    cfg = DataConfig()
    model = pretrained(LearnerConfig(D=cfg.D, m=10, o_init=1.0), 0)
    keep = keep_mask(neuron_norms(model), 0.3, SMALLEST)
    small = pruned(model, keep)
    assert torch.all(small.W_O[torch.from_numpy(~keep)] == 0) and torch.equal(small.W_O[keep], model.W_O[keep])
    assert not torch.all(model.W_O[torch.from_numpy(~keep)] == 0)  # the original is untouched
    prompts = sample_prompts(idr_patterns(cfg), cycle_tasks(6), 100, 10, 0.8, cfg, torch.Generator().manual_seed(0))
    curves = pruning_curves(model, prompts, [0.0, 0.5, 1.0], neuron_norms(model), pruned, run=0, draws=2)
    assert set(curves) == set(PRUNING)
    base = loss_and_error(model(prompts.P), prompts.z)
    for loss, err in curves.values():
        assert loss[0] == pytest.approx(base[0]) and err[0] == pytest.approx(base[1])
        assert loss[-1] == pytest.approx(1.0)  # every neuron removed: F = 0, hinge loss 1
    with pytest.raises(ValueError, match="rows"):
        pruned(model, np.ones(3, dtype=bool))
