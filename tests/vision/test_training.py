"""Pre-training (cached) and fine-tuning, then merges in place and α̂ (tvutils.vision.training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvutils.editing.inplace import InPlaceMerge
from tvutils.editing.similarity import output_alpha
from tvutils.editing.task_vector import TaskVector
from tvutils.vision import evaluation as ve
from tvutils.vision import model as vm
from tvutils.vision import training as vt

TINY = vm.ViTSpec(image_size=8, patch_size=4, hidden_size=16, layers=1, heads=2, mlp_size=16)


def test_pretraining_is_cached(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    fake = {
        split: (rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n))
        for split, n in (("train", 64), ("test", 32))
    }
    monkeypatch.setattr(vt, "load_fashion_mnist", lambda split: fake[split])
    recipe = vt.PretrainRecipe(
        spec=vm.ViTSpec(image_size=28, patch_size=14, hidden_size=16, layers=1, heads=2, mlp_size=16),
        n_train=64,
        epochs=1,
        batch_size=32,
    )
    first, info = vt.pretrained_vit(recipe, tmp_path)
    assert not info["cached"] and (tmp_path / f"{recipe.key()}.safetensors").is_file()
    second, info2 = vt.pretrained_vit(recipe, tmp_path)
    assert info2["cached"] and info2["fashion_test_accuracy"] == info["fashion_test_accuracy"]
    for (k, v), (_, w) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(v, w), k
    assert vt.PretrainRecipe(epochs=2).key() != vt.PretrainRecipe().key()


def test_fine_tune_merge_and_alpha():
    base = vm.with_binary_head(vm.make_vit(TINY, 10, 0), seed=0)
    x, y = torch.rand(64, 3, 28, 28), torch.randint(0, 2, (64,))
    tuned = vt.fine_tune_vit(base, x, y, vt.FineTuneRecipe(epochs=1, batch_size=32))
    assert torch.equal(tuned.classifier.weight, base.classifier.weight)  # the head is frozen by default
    tv = TaskVector.from_models(base, tuned, include=vm.encoder_keys)
    assert not any(k.startswith("classifier.") for k in tv.keys())
    before = ve.margins(base, x)
    with InPlaceMerge(base, [tv, tv]) as merger:
        sweep = ve.sweep_margins(merger, [(1.0, 0.0), (0.5, 0.5), (0.0, 0.0)], x)
    assert torch.allclose(sweep[0], ve.margins(tuned, x), atol=1e-5)
    assert torch.allclose(sweep[1], ve.margins(tuned, x), atol=1e-5)
    assert torch.allclose(sweep[2], before, atol=1e-6)
    assert torch.equal(ve.margins(base, x), before)  # base restored
    assert ve.accuracy(torch.tensor([1.0, -1.0, 2.0]), torch.tensor([1, 0, 0])) == pytest.approx(200 / 3)
    change = ve.margins(tuned, x) - ve.margins(base, x)
    assert float(output_alpha(change, change, dim=0)) == pytest.approx(1.0)
    assert float(output_alpha(change, -change, dim=0)) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="undefined"):
        output_alpha(change, 0 * change, dim=0)
    blocks = vm.blockwise_cosine(tv, tv)
    assert set(blocks) <= {"embeddings", "attention", "MLP", "layer norms"}
    assert sum(share for _, share in blocks.values()) == pytest.approx(1.0)


def test_fine_tunes_are_cached_under_their_recipe(tmp_path):
    base = vm.with_binary_head(vm.make_vit(TINY, 10, 0), seed=0)
    x, y = torch.rand(32, 3, 28, 28), torch.randint(0, 2, (32,))
    recipe = vt.FineTuneRecipe(epochs=1, batch_size=16)
    first, cached = vt.fine_tune_cached(base, x, y, recipe, {"task": "a"}, tmp_path)
    again, cached2 = vt.fine_tune_cached(base, x, y, recipe, {"task": "a"}, tmp_path)
    assert (cached, cached2) == (False, True)
    for (k, v), (_, w) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, w), k
    _, other = vt.fine_tune_cached(
        base, x, y, vt.FineTuneRecipe(epochs=1, batch_size=16, seed=1), {"task": "a"}, tmp_path
    )
    assert not other and len(list(tmp_path.glob("finetune-*.safetensors"))) == 2


def test_the_pretraining_key_covers_the_thread_count():
    before = torch.get_num_threads()
    key = vt.PretrainRecipe().key()
    try:
        torch.set_num_threads(before + 1)
        assert vt.PretrainRecipe().key() != key
    finally:
        torch.set_num_threads(before)
