"""The ViT, its binary head and the hub loader (tvutils.vision.model)."""

from __future__ import annotations

import torch

from tvutils.vision import evaluation as ve
from tvutils.vision import model as vm

TINY = vm.ViTSpec(image_size=8, patch_size=4, hidden_size=16, layers=1, heads=2, mlp_size=16)


def test_binary_head_keeps_the_encoder():
    pre = vm.make_vit(TINY, num_labels=10, seed=0)
    a, b = vm.with_binary_head(pre, seed=1), vm.with_binary_head(pre, seed=1)
    assert a.classifier.out_features == 2
    for key, value in pre.state_dict().items():
        if key.startswith("vit."):
            assert torch.equal(a.state_dict()[key], value)
    assert torch.equal(a.classifier.weight, b.classifier.weight)  # the head is seeded


def test_hub_loader_on_a_tiny_saved_model(tmp_path):
    """The hub path's loader, on a tiny model saved in the Hugging Face layout (safetensors)."""
    pre = vm.make_vit(vm.ViTSpec(image_size=16, patch_size=8, hidden_size=16, layers=1, heads=2, mlp_size=16), 5, 0)
    pre.save_pretrained(tmp_path)
    loaded = vm.load_pretrained_dir(tmp_path)
    x = torch.rand(3, 3, 28, 28)  # 28 px digits are resized to the model's 16 px
    assert torch.allclose(ve.logits(loaded, x), ve.logits(pre, x), atol=1e-6)
    assert ve.margins(vm.with_binary_head(loaded, seed=0), x).shape == (3,)
