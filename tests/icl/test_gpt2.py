import numpy as np
import pytest
import torch

from tvutils.icl.config import GPT2_DEFAULTS, ICL_DEFAULTS, gpt2_setting
from tvutils.icl.data import DataConfig, cycle_tasks, idr_patterns, sample_prompts
from tvutils.icl.gpt2 import (
    GPT2Learner,
    GPT2LearnerConfig,
    attention_on_pattern_by_layer,
    mlp_neuron_norms,
    pruned_gpt2,
    trained_gpt2,
)

pytest.importorskip("transformers")
CFG = DataConfig()


def prompts(n=8, seed=0):
    return sample_prompts(idr_patterns(CFG), cycle_tasks(6), n, 10, 0.8, CFG, torch.Generator().manual_seed(seed))


def test_forward_shapes_and_position_free_inputs():
    model = GPT2Learner(GPT2LearnerConfig(D=CFG.D), seed=0)
    p = prompts()
    assert model(p.P).shape == (8,)
    assert torch.all(model.backbone.wpe.weight == 0) and not model.backbone.wpe.weight.requires_grad
    mass = attention_on_pattern_by_layer(model, p)
    assert mass.shape == (3,) and np.all((mass >= 0) & (mass <= 1))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, 5, CFG.D + 1))


def test_pruning_mlp_neurons():
    model = GPT2Learner(GPT2LearnerConfig(D=CFG.D), seed=0)
    norms = mlp_neuron_norms(model)
    assert norms.shape == (3, 256)
    keep = np.ones_like(norms, dtype=bool)
    keep[1, :10] = False
    small = pruned_gpt2(model, keep)
    assert np.all(mlp_neuron_norms(small)[1, :10] == 0) and np.all(mlp_neuron_norms(model)[1, :10] > 0)
    assert torch.all(small.backbone.h[1].mlp.c_proj.weight[:10] == 0)
    with pytest.raises(ValueError, match="keep has shape"):
        pruned_gpt2(model, keep[:2])


def test_trained_gpt2_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))
    learner, train = gpt2_setting(ICL_DEFAULTS | GPT2_DEFAULTS, gpt2_steps=4, gpt2_warmup=2, gpt2_width=16)
    a, ha = trained_gpt2(cycle_tasks(6), CFG, learner, train, run=0, n_val=20)
    files = list(tmp_path.rglob("model.safetensors"))
    assert len(files) == 1
    b, hb = trained_gpt2(cycle_tasks(6), CFG, learner, train, run=0, n_val=20)
    assert ha.val_error == hb.val_error
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
