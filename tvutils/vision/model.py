"""The vision transformer of the case study: construction, the binary fine-tuning head, and where its weights lie.

Models are ``transformers``' ``ViTForImageClassification`` (no torchvision, no timm). Ψ⁽⁰⁾ is either
- a small ViT pre-trained inside the book on Fashion-MNIST (offline default; ``tvutils.vision.training``), or
- a hub checkpoint (e.g. ViT-Small/16, as in the paper) loaded by ``load_pretrained`` at its own resolution:
  a folder or hub id in the ``transformers`` layout, or a ``timm`` checkpoint (its ``model.safetensors``),
  whose keys ``timm_to_transformers`` maps onto ``transformers``' ViT without importing timm.
Either way the fine-tuning model is the pre-trained encoder with a new two-way head (parity), initialised
from a seed; that head is part of Ψ⁽⁰⁾ and (by default) frozen, like the fixed output layer a of eq. (3).

Inputs are (N, 3, 28, 28) in [0, 1]; ``prepare`` resizes them to the model's image size and maps them to
[−1, 1].
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import ViTConfig, ViTForImageClassification
from transformers.utils import logging as hf_logging

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
    """A ViT from a folder in the ``transformers`` layout (config.json + safetensors weights only)."""
    hf_logging.disable_progress_bar()  # no loading bar in the executed pages
    return ViTForImageClassification.from_pretrained(str(path), use_safetensors=True).eval()


def timm_to_transformers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """A timm ViT state dict → (``transformers`` ViT weights in its checkpoint layout, ViTConfig fields).

    The key map of ``transformers``' own timm converter: ``blocks.i.attn.qkv`` is split into query, key and
    value; ``norm1``/``norm2`` → ``layernorm_before``/``after``; ``mlp.fc1``/``fc2`` → ``intermediate``/``output``;
    ``norm`` → ``vit.layernorm``; ``head`` → ``classifier``. Sizes are read off the shapes; the head count is
    width / 64, the head size of every timm ViT (Ti, S, B, L) — shapes cannot tell it.
    """
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"not a timm ViT checkpoint: no {missing}")
    hidden, layers = (
        state["cls_token"].shape[-1],
        1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
    )
    patch = state["patch_embed.proj.weight"].shape[-1]
    side = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    out = {
        "vit.embeddings.cls_token": state["cls_token"],
        "vit.embeddings.position_embeddings": state["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "vit.layernorm.weight": state["norm.weight"],
        "vit.layernorm.bias": state["norm.bias"],
    }
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}  # fmt: skip
    for i in range(layers):
        src, dst = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for a, b in names.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{b}.{kind}"] = state[f"{src}{a}.{kind}"]
        for kind in ("weight", "bias"):
            for part, chunk in zip(("query", "key", "value"), state[f"{src}attn.qkv.{kind}"].chunk(3, dim=0)):
                out[f"{dst}attention.attention.{part}.{kind}"] = chunk
    head = state.get("head.weight")
    if head is not None and head.ndim == 2 and head.shape[0] > 0:
        out["classifier.weight"], out["classifier.bias"] = head, state["head.bias"]
    else:  # a checkpoint without a head: a zero one-way head keeps the layout complete (it is replaced anyway)
        out["classifier.weight"], out["classifier.bias"] = torch.zeros(1, hidden), torch.zeros(1)
    config = {
        "image_size": side * patch,
        "patch_size": patch,
        "num_channels": state["patch_embed.proj.weight"].shape[1],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "intermediate_size": state["blocks.0.mlp.fc1.weight"].shape[0],
        "layer_norm_eps": 1e-6,  # timm's ViT LayerNorm
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "num_labels": out["classifier.weight"].shape[0],
    }
    return {k: v.contiguous() for k, v in out.items()}, config


def convert_timm_folder(source: str | Path, target: str | Path) -> Path:
    """Write a timm checkpoint folder (``model.safetensors``) as a ``transformers`` ViT folder; returns target."""
    weights = Path(source) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{source}: no model.safetensors (only safetensors weights are loaded)")
    state, fields = timm_to_transformers(load_file(str(weights)))
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    ViTConfig(**fields).save_pretrained(target)
    tmp = target / f".model.safetensors.tmp{os.getpid()}"
    save_file(state, str(tmp), metadata={"format": "pt", "converted_from": "timm"})
    os.replace(tmp, target / "model.safetensors")
    return target


def is_timm_folder(folder: Path) -> bool:
    """A timm checkpoint folder: its config.json names a timm ``architecture`` instead of a ``model_type``."""
    config = folder / "config.json"
    return config.is_file() and "architecture" in json.loads(config.read_text())


def load_pretrained(name: str | Path, cache: Path) -> ViTForImageClassification:
    """Ψ⁽⁰⁾'s encoder from a local folder or a hub id, in the ``transformers`` layout or timm's (converted once
    into ``cache``, keyed by the name). Hub ids are downloaded (safetensors and config only)."""
    folder = Path(name)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(str(name), allow_patterns=["*.json", "*.safetensors"]))
        except Exception as exc:  # offline, unknown id, …: one line saying what to do
            raise RuntimeError(
                f"could not fetch the ViT {name!r} from the hub ({type(exc).__name__}); "
                "pass a local folder as hub_model, or run where the hub can be reached"
            ) from None
    if is_timm_folder(folder):
        converted = Path(cache) / ("timm-" + "".join(c if c.isalnum() else "-" for c in str(name))[-80:])
        if not (converted / "model.safetensors").is_file():
            convert_timm_folder(folder, converted)
        folder = converted
    return load_pretrained_dir(folder)


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
