import math

import numpy as np
import pytest
import torch

from tvutils.icl.data import DataConfig, cycle_tasks, idr_patterns, sample_prompts
from tvutils.icl.experiments import (
    attention_on_pattern,
    error_grid,
    needed_length,
    pattern_scores,
    pretrained,
    validation_prompts,
    weight_parts,
)
from tvutils.icl.model import LearnerConfig

CFG = DataConfig()
LC = LearnerConfig(D=CFG.D, m=8)


def test_needed_length():
    lengths = [1, 2, 4, 8, 16]
    assert needed_length([0.4, 0.2, 0.04, 0.01, 0.0], lengths, 0.05) == 4
    assert needed_length([0.4, 0.01, 0.2, 0.01, 0.0], lengths, 0.05) == 8  # must stay below from then on
    assert needed_length([0.0] * 5, lengths, 0.05) == 1
    assert math.isnan(needed_length([0.4, 0.3, 0.2, 0.1, 0.06], lengths, 0.05))
    with pytest.raises(ValueError, match="errors for"):
        needed_length([0.1], lengths, 0.05)


def test_error_grid_shapes_and_determinism():
    model = pretrained(LC, 0)
    args = (model, idr_patterns(CFG), cycle_tasks(6), [0.4, 0.8], [2, 5, 9], 50, CFG, 3)
    loss, err = error_grid(*args)
    assert loss.shape == err.shape == (2, 3) and np.all((err >= 0) & (err <= 1))
    assert np.array_equal(error_grid(*args)[0], loss)


def test_attention_on_pattern_with_a_sharp_pattern_matcher():
    model = pretrained(LC, 0)
    with torch.no_grad():  # scores 50 μᵢᵀμⱼ: attention only on the query's pattern
        model.W_Q.copy_(torch.diag(torch.cat([torch.full((CFG.M1,), 50.0**0.5), torch.zeros(CFG.D - CFG.M1)])))
        model.W_K.copy_(model.W_Q.detach())
    prompts = sample_prompts(idr_patterns(CFG), cycle_tasks(6), 300, 20, 0.8, CFG, torch.Generator().manual_seed(0))
    has = (prompts.pattern[:, :-1] == prompts.pattern[:, -1:]).any(1)
    assert attention_on_pattern(model, prompts) == pytest.approx(float(has.float().mean()), abs=1e-3)
    uniform = pretrained(LearnerConfig(D=CFG.D, m=8, qk_init=0.0), 0)
    assert attention_on_pattern(uniform, prompts) == pytest.approx(0.4, abs=0.03)  # α/2 at uniform attention


def test_pattern_scores_and_weight_parts():
    model = pretrained(LC, 1)
    pats = idr_patterns(CFG)
    sc = pattern_scores(model, pats)
    i, j = 1, 4
    manual = float(pats[j] @ (model.W_K.T @ model.W_Q).detach()[: CFG.d, : CFG.d] @ pats[i])
    assert sc.shape == (6, 6) and sc[i, j] == pytest.approx(manual)
    assert np.allclose(np.diag(sc), 0.01)  # 0.1 I · 0.1 I on unit patterns
    wp = weight_parts(model, CFG)
    assert set(wp) == {"feature_cos", "label_cos", "feature_norm", "label_norm", "sign"}
    assert all(v.shape == (8,) for v in wp.values()) and np.all(np.abs(wp["label_cos"]) <= 1 + 1e-9)


def test_validation_prompts_are_seeded_by_run():
    a = validation_prompts(cycle_tasks(6), CFG, 0, n=20)
    assert torch.equal(a.P, validation_prompts(cycle_tasks(6), CFG, 0, n=20).P)
    assert not torch.equal(a.P, validation_prompts(cycle_tasks(6), CFG, 1, n=20).P)
