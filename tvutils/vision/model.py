"""The vision transformer of the case study: construction, the binary fine-tuning head, and where its weights lie.

Models are ``transformers``' ``ViTForImageClassification`` (no torchvision, no timm). Ψ⁽⁰⁾ is either
- a small ViT pre-trained inside the book on Fashion-MNIST (offline default; ``tvutils.vision.training``), or
- a hub checkpoint (e.g. ViT-Small/16, as in the paper) loaded by ``load_pretrained_dir`` at its own resolution.
Either way the fine-tuning model is the pre-trained encoder with a new two-way head (parity), initialised
from a seed; that head is part of Ψ⁽⁰⁾ and (by default) frozen, like the fixed output layer a of eq. (3).

Inputs are (N, 3, 28, 28) in [0, 1]; ``prepare`` resizes them to the model's image size and maps them to
[−1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTForImageClassification

from ..editing.task_vector import TaskVector


@dataclass(frozen=True)
class ViTSpec:
    """Sizes of a small ViT (the defaults: 28 px, 16 patches of 7 × 7, 4 layers of width 96, ≈ 0.3 M weights)."""

    image_size: int = 28
    patch_size: int = 7
    hidden_size: int = 96
    layers: int = 4
    heads: int = 4
    mlp_size: int = 192


def make_vit(spec: ViTSpec, num_labels: int, seed: int) -> ViTForImageClassification:
    """A freshly initialised ViT classifier (no dropout, so training and evaluation compute the same function)."""
    config = ViTConfig(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        num_channels=3,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.mlp_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    return ViTForImageClassification(config).eval()


def prepare(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N, 3, h, w) in [0, 1] → (N, 3, image_size, image_size) in [−1, 1] (bilinear resize when sizes differ)."""
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5


def with_binary_head(pretrained: ViTForImageClassification, seed: int) -> ViTForImageClassification:
    """The pre-trained encoder with a new two-way head initialised from ``seed``: the fine-tuning Ψ⁽⁰⁾."""
    config = ViTConfig.from_dict(
        {
            **pretrained.config.to_dict(),
            "num_labels": 2,
            "id2label": {0: "even", 1: "odd"},
            "label2id": {"even": 0, "odd": 1},
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    encoder = {k: v for k, v in pretrained.state_dict().items() if k.startswith("vit.")}
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"encoder weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval()


def load_pretrained_dir(path: str | Path) -> ViTForImageClassification:
    """A ViT from a Hugging Face model folder or hub id (safetensors weights only), e.g. ViT-Small/16."""
    return ViTForImageClassification.from_pretrained(str(path), use_safetensors=True).eval()


def encoder_keys(key: str) -> bool:
    """The weights a task vector covers by default: every encoder tensor, not the (frozen) head."""
    return not key.startswith("classifier.")


# ---- where a task vector's weights lie ---------------------------------------------------------------------
def block_of(key: str) -> str:
    """A readable group name for a ViT weight: patch/position embeddings, attention, MLP, layer norms, head."""
    if key.startswith("classifier."):
        return "head"
    if ".embeddings." in key:
        return "embeddings"
    if ".attention." in key:
        return "attention"
    if any(part in key for part in (".mlp.", ".intermediate.", ".output.")):  # transformers 5 and 4 names
        return "MLP"
    if "layernorm" in key or "norm" in key.rsplit(".", 2)[-2]:
        return "layer norms"
    return "other"


def blockwise_cosine(tv1: TaskVector, tv2: TaskVector) -> dict[str, tuple[float, float]]:
    """For each block: (cosine of the two task vectors restricted to it, its share of ‖ΔΨ₁‖·‖ΔΨ₂‖-weighted dot)."""
    total = tv1.dot(tv2)
    out: dict[str, list[float]] = {}
    for key in tv1.deltas:
        b = block_of(key)
        a, c = tv1.deltas[key].double().reshape(-1), tv2.deltas[key].double().reshape(-1)
        acc = out.setdefault(b, [0.0, 0.0, 0.0])
        acc[0] += float(a @ c)
        acc[1] += float(a @ a)
        acc[2] += float(c @ c)
    return {
        b: (d / max(np.sqrt(n1 * n2), 1e-30), d / total if total else float("nan")) for b, (d, n1, n2) in out.items()
    }
