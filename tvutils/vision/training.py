"""Training the case study's ViTs: pre-training the offline Ψ⁽⁰⁾ (cached), and fine-tuning one task.

The offline Ψ⁽⁰⁾ is cached on disk as safetensors under ``cache_dir("vit")``, keyed by its recipe and the
runtime fingerprint (library versions, thread count), so later runs reuse it and a Ψ⁽⁰⁾ made under other
conditions is never reused. Fine-tuning copies Ψ⁽⁰⁾ and trains the copy with one recipe for every task;
``fine_tune_cached`` keeps the result on disk under the same kind of key. On a GPU training runs in mixed
precision (float16 with loss scaling).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from transformers import ViTForImageClassification

from ..chapter.paths import atomic_write_bytes, cache_dir
from ..chapter.progress import progress
from ..chapter.runtime import fingerprint
from .cache import cache_key, cached_tensors, device_name
from .data import load_fashion_mnist, random_tint
from .evaluation import accuracy, autocast, logits
from .model import ViTSpec, encoder_keys, make_vit, prepare

CACHE_VERSION = 2  # bump when the pre-training code changes, so old checkpoints are not reused
TEST_TINT = 1  # the Fashion-MNIST test images are tinted from seed recipe.seed + TEST_TINT (training: recipe.seed)


def train_classifier(
    model: ViTForImageClassification,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    train_head: bool = True,
    desc: str = "training",
) -> ViTForImageClassification:
    """Cross-entropy, AdamW at a constant step size, seeded shuffling; ``epochs`` may be fractional. In place."""
    params = [p for n, p in model.named_parameters() if train_head or not n.startswith("classifier.")]
    for n, p in model.named_parameters():
        p.requires_grad_(train_head or not n.startswith("classifier."))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n_steps = max(1, int(round(epochs * len(y) / batch_size)))
    order = torch.cat([torch.randperm(len(y), generator=gen) for _ in range(int(np.ceil(epochs)) + 1)])
    size, device = model.config.image_size, next(model.parameters()).device
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")  # float16 needs loss scaling
    model.train()
    for step in progress(range(n_steps), desc=desc):
        idx = order[step * batch_size : (step + 1) * batch_size]
        with autocast(device):
            logits_ = model(pixel_values=prepare(x[idx].to(device), size)).logits
            loss = F.cross_entropy(logits_.float(), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _optimiser_settings(recipe: PretrainRecipe | FineTuneRecipe) -> dict:
    """The fields of a recipe that ``train_classifier`` takes, shared by pre-training and fine-tuning."""
    return {name: getattr(recipe, name) for name in ("epochs", "lr", "batch_size", "seed", "weight_decay")}


@dataclass(frozen=True)
class PretrainRecipe:
    """How the offline Ψ⁽⁰⁾ is pre-trained: 10-way Fashion-MNIST with random RGB tints (our choice)."""

    spec: ViTSpec = ViTSpec()
    n_train: int = 60000  # Fashion-MNIST training images used
    epochs: float = 3.0
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    seed: int = 0

    def key(self) -> str:
        """The cache key: the recipe, the code version and the runtime fingerprint (versions, threads)."""
        doc = json.dumps({"version": CACHE_VERSION, **asdict(self), "fingerprint": fingerprint()}, sort_keys=True)
        return "fashion-vit-" + hashlib.sha256(doc.encode()).hexdigest()[:16]


def pretrained_vit(recipe: PretrainRecipe, directory: Path | None = None) -> tuple[ViTForImageClassification, dict]:
    """The pre-trained ViT for ``recipe``: loaded from the cache if there, else trained and cached atomically.

    Returns the model and its record: recipe key, Fashion-MNIST test accuracy (%), training seconds, and
    whether this call loaded it from the cache.
    """
    directory = Path(directory) if directory is not None else cache_dir("vit")
    weights, record_path = directory / f"{recipe.key()}.safetensors", directory / f"{recipe.key()}.json"
    model = make_vit(recipe.spec, num_labels=10, seed=recipe.seed)
    if weights.is_file() and record_path.is_file():
        model.load_state_dict(load_safetensors(weights.read_bytes()))
        return model.eval(), {**json.loads(record_path.read_text()), "cached": True}
    images, classes = load_fashion_mnist("train")
    pick = np.random.default_rng(recipe.seed).permutation(len(classes))[: recipe.n_train]
    x, y = random_tint(images[pick], seed=recipe.seed), torch.from_numpy(classes[pick])
    start = time.perf_counter()
    train_classifier(model, x, y, **_optimiser_settings(recipe), desc="pre-training")
    seconds = time.perf_counter() - start
    test_images, test_classes = load_fashion_mnist("test")
    test_x = random_tint(test_images[:2000], seed=recipe.seed + TEST_TINT)
    acc = accuracy(logits(model, test_x).argmax(1), torch.from_numpy(test_classes[:2000]))
    record = {
        "key": recipe.key(),
        "recipe": asdict(recipe),
        "fashion_test_accuracy": acc,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "fingerprint": fingerprint(),
    }
    state = OrderedDict((k, v.contiguous()) for k, v in model.state_dict().items())
    atomic_write_bytes(weights, save_safetensors(state, metadata={"key": recipe.key()}))
    atomic_write_bytes(record_path, json.dumps(record, indent=2).encode())
    return model.eval(), {**record, "cached": False}


@dataclass(frozen=True)
class FineTuneRecipe:
    """One fine-tuning recipe for every task (short, so that the models can lean on colour, as the paper's numbers imply)."""

    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    train_head: bool = False  # the head stays as Ψ⁽⁰⁾ has it (like a in eq. 3): task vectors cover the encoder
    seed: int = 0


def fine_tune_vit(
    base: ViTForImageClassification, x: torch.Tensor, y: torch.Tensor, recipe: FineTuneRecipe
) -> ViTForImageClassification:
    """Ψ*_T: a copy of Ψ⁽⁰⁾ trained on (x, y) with the recipe; Ψ⁽⁰⁾ is untouched."""
    model = copy.deepcopy(base)
    return train_classifier(
        model, x, y, **_optimiser_settings(recipe), train_head=recipe.train_head, desc="fine-tuning"
    )


def fine_tune_cached(
    base: ViTForImageClassification,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: FineTuneRecipe,
    data_doc: dict,
    directory: Path | None = None,
) -> tuple[ViTForImageClassification, bool]:
    """``fine_tune_vit``, cached: the encoder weights of Ψ*_T stored under a key of ``data_doc`` (what defines
    Ψ⁽⁰⁾ and the training data: the caller's recipe), the fine-tuning recipe, the device and the runtime
    fingerprint. Returns the model and whether it came from the cache."""
    directory = Path(directory) if directory is not None else cache_dir("vit", "finetuned")
    device = next(base.parameters()).device
    key = cache_key("finetune", {"data": data_doc, "recipe": asdict(recipe), "device": device_name(device)})

    def train() -> dict[str, torch.Tensor]:
        return {k: v for k, v in fine_tune_vit(base, x, y, recipe).state_dict().items() if encoder_keys(k)}

    state, cached = cached_tensors(directory, key, train)
    model = copy.deepcopy(base)
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    if unexpected or any(encoder_keys(k) for k in missing):
        raise ValueError(f"cached fine-tune {key} does not fit Ψ⁽⁰⁾: missing {missing}, unexpected {unexpected}")
    return model.eval(), cached
