"""The ViT, its binary head and the hub loader (tvutils.vision.model)."""

from __future__ import annotations

import pytest
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


def timm_state_of(model) -> dict[str, torch.Tensor]:
    """A transformers ViT's weights under timm's names (qkv fused), written independently of the key map."""
    sd, out = model.state_dict(), {}
    out["cls_token"], out["pos_embed"] = sd["vit.embeddings.cls_token"], sd["vit.embeddings.position_embeddings"]
    out["patch_embed.proj.weight"] = sd["vit.embeddings.patch_embeddings.projection.weight"]
    out["patch_embed.proj.bias"] = sd["vit.embeddings.patch_embeddings.projection.bias"]
    out["norm.weight"], out["norm.bias"] = sd["vit.layernorm.weight"], sd["vit.layernorm.bias"]
    out["head.weight"], out["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    for i in range(model.config.num_hidden_layers):
        a, b = f"vit.layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{b}attn.qkv.{kind}"] = torch.cat([sd[f"{a}attention.{p}_proj.{kind}"] for p in "qkv"])
            out[f"{b}attn.proj.{kind}"] = sd[f"{a}attention.o_proj.{kind}"]
            out[f"{b}norm1.{kind}"], out[f"{b}norm2.{kind}"] = (
                sd[f"{a}layernorm_before.{kind}"],
                sd[f"{a}layernorm_after.{kind}"],
            )
            out[f"{b}mlp.fc1.{kind}"], out[f"{b}mlp.fc2.{kind}"] = sd[f"{a}mlp.fc1.{kind}"], sd[f"{a}mlp.fc2.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}


def test_a_timm_checkpoint_loads_into_transformers_vit(tmp_path):
    """timm layout (config.json with 'architecture', model.safetensors) → transformers' ViT, same function."""
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        layer_norm_eps=1e-6,
        num_labels=7,
    )  # fmt: skip  (head size 64, as timm)
    torch.manual_seed(0)
    reference = ViTForImageClassification(config).eval()
    if "vit.layers.0.attention.q_proj.weight" not in reference.state_dict():
        pytest.skip("this test writes timm names from transformers ≥ 5 key names")
    timm_dir = tmp_path / "timm"
    timm_dir.mkdir()
    (timm_dir / "config.json").write_text('{"architecture": "vit_tiny_test", "num_classes": 7}')
    save_file(timm_state_of(reference), str(timm_dir / "model.safetensors"))
    assert vm.is_timm_folder(timm_dir) and not vm.is_timm_folder(tmp_path)
    loaded = vm.load_pretrained(timm_dir, tmp_path / "cache")
    assert loaded.config.image_size == 32 and loaded.config.num_attention_heads == 2
    x = torch.rand(2, 3, 28, 28)
    assert torch.allclose(ve.logits(loaded, x), ve.logits(reference, x), atol=1e-5)
    assert ve.margins(vm.with_binary_head(loaded, seed=0), x).shape == (2,)
    with pytest.raises(ValueError, match="not a timm ViT"):
        vm.timm_to_transformers({"head.weight": torch.zeros(1, 1)})
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        vm.convert_timm_folder(tmp_path / "nothing", tmp_path / "out")


def test_vit_s16_shapes_from_a_headless_timm_state():
    state = {"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 197, 384),
             "patch_embed.proj.weight": torch.zeros(384, 3, 16, 16), "patch_embed.proj.bias": torch.zeros(384),
             "norm.weight": torch.ones(384), "norm.bias": torch.zeros(384)}  # fmt: skip
    for i in range(12):
        for name, shape in (("attn.qkv", (1152, 384)), ("attn.proj", (384, 384)), ("norm1", (384,)), ("norm2", (384,)),
                            ("mlp.fc1", (1536, 384)), ("mlp.fc2", (384, 1536))):  # fmt: skip
            state[f"blocks.{i}.{name}.weight"] = torch.zeros(shape)
            state[f"blocks.{i}.{name}.bias"] = torch.zeros(shape[0])
    weights, fields = vm.timm_to_transformers(state)
    assert fields == {"image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_size": 384,
                      "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
                      "layer_norm_eps": 1e-6, "qkv_bias": True, "num_labels": 1}  # fmt: skip
    assert weights["vit.encoder.layer.11.attention.attention.value.weight"].shape == (384, 384)


def test_hub_ids_fail_with_one_line_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not fetch the ViT"):
        vm.load_pretrained("no-such-owner/no-such-vit", tmp_path)
