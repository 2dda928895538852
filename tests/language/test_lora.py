"""LoRA fine-tuning and its task vector (tvutils.language.lora)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tvutils.editing.inplace import task_arithmetic
from tvutils.language import generation, lora


def test_lora_task_vector_equals_peft_merge(tiny, windows):
    """ΔW = scale·B·A keyed like the base state dict reproduces peft's merge_and_unload."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny
    base = copy.deepcopy(model)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4,
        lora_alpha=12,
        target_modules=lora.block_linear_names(base),
        layers_to_transform=[2, 3],
        init_lora_weights=False,
    )  # random B, so the adapter is not a no-op
    peft_model = get_peft_model(copy.deepcopy(base), config)
    factors = lora.lora_factors(peft_model)
    assert len(factors) == 2 * 7 and all(k.startswith("model.layers.") and k.endswith(".weight") for k in factors)
    assert {s for _, _, s in factors.values()} == {3.0}
    tv = lora.task_vector_from_factors(factors)
    merged = peft_model.merge_and_unload().state_dict()
    ours = tv.apply_to(base.state_dict())
    assert set(ours) == set(merged)
    for key in merged:
        torch.testing.assert_close(ours[key], merged[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ours[k], base.state_dict()[k]) for k in tv.keys())
    # the same in place, and restored bit for bit afterwards
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with task_arithmetic(base, tv, 1.0):
        for key in tv.keys():
            torch.testing.assert_close(base.state_dict()[key], merged[key], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_fine_tune_lora_learns_only_the_top_blocks_and_leaves_the_model(tiny, windows, tmp_path):
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = lora.LoraRecipe(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=0)
    factors, losses = lora.fine_tune_lora(model, windows, recipe)
    assert set(model.state_dict()) == set(before) and all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )
    assert all(not p.requires_grad for p in model.parameters())
    assert len(losses) == 6 * 2 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert {k.split(".")[2] for k in factors} == {"2", "3"}
    again, losses_again = lora.fine_tune_lora(model, windows, recipe)  # seeded: the same numbers
    assert losses == losses_again and all(torch.equal(factors[k][1], again[k][1]) for k in factors)
    # the fine-tune lowers the loss of the full model on its windows
    tv = lora.task_vector_from_factors(factors)
    nll_before = generation.continuation_nll(model, windows, 8).mean()
    with task_arithmetic(model, tv, 1.0):
        assert generation.continuation_nll(model, windows, 8).mean() < nll_before
    # cached as safetensors; a second call reads it back
    path = tmp_path / "lora.safetensors"
    calls = []
    first = lora.cached_lora(path, lambda: (calls.append(1), (factors, losses))[1])
    second = lora.cached_lora(path, lambda: (calls.append(1), (factors, losses))[1])
    assert calls == [1] and first[2] is False and second[2] is True and second[1] == losses
    assert all(torch.equal(second[0][k][0], factors[k][0]) and second[0][k][2] == factors[k][2] for k in factors)


def test_lora_recipe_is_keyword_only_and_keys_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))
    with pytest.raises(TypeError):
        lora.LoraRecipe(4, 2, 6, 1e-2, 3, 0)
    r = lora.LoraRecipe(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=0)
    path = lora.lora_cache_path("org/model", "alpha", r, book="A")
    assert path.parent == tmp_path / "lm" / "org--model" and path.name.startswith("alpha-")
    assert path == lora.lora_cache_path("org/model", "alpha", r, book="A")
    other = lora.LoraRecipe(rank=4, train_layers=2, epochs=6, lr=1e-2, batch_size=3, seed=1)
    assert lora.lora_cache_path("org/model", "alpha", other, book="A") != path
    assert lora.lora_cache_path("org/model", "alpha", r, book="B") != path
    # the runtime is part of the key: a fine-tune made with another thread count or library version is not reused
    monkeypatch.setattr(lora, "fingerprint", lambda: {"torch": "0.0", "threads": 7})
    assert lora.lora_cache_path("org/model", "alpha", r, book="A") != path


def test_offline_model_folder_is_keyed_by_the_library_versions(tmp_path, monkeypatch):
    from tvutils.language import models as lmodels

    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))
    folder = lmodels.offline_model_folder()
    assert folder.parent == tmp_path / "lm" and folder.name.startswith("smollm2-135m-fp32-")
    monkeypatch.setattr(lmodels, "versions", lambda: {"transformers": "0.0"})
    assert lmodels.offline_model_folder() != folder
