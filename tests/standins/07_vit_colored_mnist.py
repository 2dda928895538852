"""Stand-in for the full profile of chapter 07: a randomly initialised ViT-S/16 at 224 px, shrunk data, CPU.

The model folder has the real architecture and shapes (``transformers``' ``ViTConfig``: layers of width 384,
6 heads, 16 px patches, 224 px input), saved with safetensors, so the full profile's code path (hub loader,
binary head, 224 px resize, fine-tunes, sweeps, caches, verdict) runs end to end; the digits are the offline
5k set, shrunk to a handful, and the depth cut to ``LAYERS`` blocks, so it fits in seconds. Random weights cannot reproduce any science: the harness
runs it with ``TVUTILS_VERDICT_JUDGE=0``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification

SECONDS = 30  # this stand-in's share (CPU seconds) of the 3-minute budget of all stand-ins (measured 14 s)
LAYERS = 2  # of ViT-S/16's 12 blocks: one 224-px pass of the full depth costs about 0.3 s here; every shape is real


def overrides(tmp_path: Path) -> dict:
    """Write the stand-in ViT-S/16 folder under ``tmp_path`` and return the papermill overrides for profile='full'."""
    folder = Path(tmp_path) / "vit-small-patch16-224-random"
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=LAYERS, num_attention_heads=6,
                       intermediate_size=1536, layer_norm_eps=1e-6, num_labels=21843)  # fmt: skip
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder, safe_serialization=True)
    return {
        "device": "cpu",
        "hub_model": str(folder),
        "digits": "mnist5k",  # offline; the full profile downloads the 70k MNIST
        "seeds": [0],
        "n_train": 2,
        "n_test": 2,
        "n_ood": 1,
        "lambda_range": [-1.0, 1.0],  # λ ∈ {−1, 0, 1}: a negation, λ = 0 and an addition
        "lambda_step": 1.0,
        "lam1_range": [0.0, 1.0],  # the grid {0, 1}²: holds (1, 0) and (0, 1)
        "lam2_range": [0.0, 1.0],
        "ood_step": 1.0,
        "finetune": {"epochs": 1.0, "lr": 3e-5, "batch_size": 2, "weight_decay": 0.0, "train_head": False},
        "eval_batch": 8,
    }
