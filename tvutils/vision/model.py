"""The vision transformer of the case study: construction, pre-training (cached), fine-tuning, evaluation, α̂.

Models are ``transformers``' ``ViTForImageClassification`` (no torchvision, no timm). Ψ⁽⁰⁾ is either
- a small ViT pre-trained inside the book on Fashion-MNIST (offline default; cached on disk as safetensors
  under ``cache_dir("vit")``, keyed by its recipe, so later runs reuse it), or
- a hub checkpoint (e.g. ViT-Small/16, as in the paper) loaded by ``load_pretrained_dir`` at its own resolution.
Either way the fine-tuning model is the pre-trained encoder with a new two-way head (parity), initialised
from a seed; that head is part of Ψ⁽⁰⁾ and (by default) frozen, like the fixed output layer a of eq. (3).

Inputs are (N, 3, 28, 28) in [0, 1]; ``prepare`` resizes them to the model's image size and maps them to
[−1, 1].
"""

from __future__ import annotations

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
from transformers import ViTConfig, ViTForImageClassification

from ..chapter.paths import atomic_write_bytes, cache_dir
from ..chapter.progress import progress
from ..editing.task_vector import TaskVector
from .data import load_fashion_mnist, random_tint

CACHE_VERSION = 1  # bump when the pre-training code changes, so old checkpoints are not reused


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


# ---- training -----------------------------------------------------------------------------------------------
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
    model.train()
    for step in progress(range(n_steps), desc=desc):
        idx = order[step * batch_size : (step + 1) * batch_size]
        logits_ = model(pixel_values=prepare(x[idx].to(device), size)).logits
        loss = F.cross_entropy(logits_, y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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
        doc = json.dumps({"version": CACHE_VERSION, **asdict(self)}, sort_keys=True)
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
    test_x = random_tint(test_images[:2000], seed=recipe.seed + 1)
    acc = accuracy(logits(model, test_x).argmax(1), torch.from_numpy(test_classes[:2000]))
    record = {
        "key": recipe.key(),
        "recipe": asdict(recipe),
        "fashion_test_accuracy": acc,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
    }
    state = OrderedDict((k, v.contiguous()) for k, v in model.state_dict().items())
    atomic_write_bytes(weights, save_safetensors(state, metadata={"key": recipe.key()}))
    atomic_write_bytes(record_path, json.dumps(record, indent=2).encode())
    return model.eval(), {**record, "cached": False}


@dataclass(frozen=True)
class FineTuneRecipe:
    """One fine-tuning recipe for every task (SPEC §10: short, so the models lean on colour as the paper's do)."""

    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    train_head: bool = False  # the head stays as Ψ⁽⁰⁾ has it (like a in eq. 3): task vectors cover the encoder
    seed: int = 0


def fine_tune(
    base: ViTForImageClassification, x: torch.Tensor, y: torch.Tensor, recipe: FineTuneRecipe
) -> ViTForImageClassification:
    """Ψ*_T: a copy of Ψ⁽⁰⁾ trained on (x, y) with the recipe; Ψ⁽⁰⁾ is untouched."""
    import copy

    model = copy.deepcopy(base)
    return train_classifier(
        model, x, y, **_optimiser_settings(recipe), train_head=recipe.train_head, desc="fine-tuning"
    )


# ---- evaluation ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def logits(model: ViTForImageClassification, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, C) in batches, on the CPU (the model may sit on another device)."""
    size, device = model.config.image_size, next(model.parameters()).device
    return torch.cat(
        [
            model(pixel_values=prepare(x[i : i + batch_size].to(device), size)).logits.float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    )


def margins(model: ViTForImageClassification, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logit margin f(x) = logit(odd) − logit(even) of a two-way model, shape (N,)."""
    out = logits(model, x, batch_size)
    return out[:, 1] - out[:, 0]


def accuracy(predicted: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in %, of class predictions (ints) or of margins (floats: predict 1 where the margin is > 0)."""
    if predicted.is_floating_point():
        predicted = (predicted > 0).long()
    return 100.0 * float((predicted == y).double().mean())


class Merger:
    """Evaluates Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ for many λ without copying the model: one working model, weights set in place."""

    def __init__(self, base: ViTForImageClassification, task_vectors: list[TaskVector]) -> None:
        import copy

        self.model = copy.deepcopy(base).eval()
        self.base = {k: v.detach().clone() for k, v in base.state_dict().items()}
        self.task_vectors = task_vectors
        self.targets = dict(self.model.state_dict(keep_vars=True))
        for tv in task_vectors:
            unknown = [k for k in tv.deltas if k not in self.base]
            if unknown:
                raise ValueError(f"task vector keys not in the model: {unknown[:3]}")

    @torch.no_grad()
    def set(self, lambdas: list[float] | tuple[float, ...]) -> ViTForImageClassification:
        if len(lambdas) != len(self.task_vectors):
            raise ValueError(f"{len(self.task_vectors)} task vectors but {len(lambdas)} coefficients")
        keys = set().union(*(tv.deltas for tv in self.task_vectors))
        for key in keys:
            value = self.base[key].clone()
            for lam, tv in zip(lambdas, self.task_vectors):
                if key in tv.deltas:
                    value.add_(tv.deltas[key], alpha=float(lam))
            self.targets[key].copy_(value)
        return self.model

    def margins(
        self, lambdas: list[float] | tuple[float, ...], x: torch.Tensor, batch_size: int = 1000
    ) -> torch.Tensor:
        return margins(self.set(lambdas), x, batch_size)


def output_alpha(margin_change_1: torch.Tensor, margin_change_2: torch.Tensor) -> float:
    """α̂ in output space: cosine of two models' logit-margin changes relative to Ψ⁽⁰⁾ on the same inputs."""
    a, b = margin_change_1.double().reshape(-1), margin_change_2.double().reshape(-1)
    denom = float(a.norm() * b.norm())
    if denom == 0:
        raise ValueError("a model whose margins did not change has no direction: α̂ is undefined")
    return float(a @ b) / denom


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


# ---- λ sweeps and the selection of "best λ" -------------------------------------------------------------------
def sweep_margins(
    merger: Merger,
    coefficients: list[tuple[float, ...]],
    x: torch.Tensor,
    batch_size: int = 1000,
    desc: str = "λ sweep",
) -> torch.Tensor:
    """Margins of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ on x for every coefficient tuple: shape (len(coefficients), N)."""
    return torch.stack([merger.margins(lams, x, batch_size) for lams in progress(coefficients, desc=desc)])


def accuracy_rows(sweep: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """Accuracy (%) of each row of a margin sweep, on the items where ``mask`` is True (all by default)."""
    if mask is not None:
        sweep, y = sweep[:, mask], y[mask]
    return 100.0 * ((sweep > 0).long() == y[None]).double().mean(dim=1).numpy()


def half_masks(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random halves of range(n) as boolean masks (select on the first, score on the second)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    first = torch.zeros(n, dtype=torch.bool)
    first[perm[: n // 2]] = True
    return first, ~first


def select_addition(acc1: np.ndarray, acc2: np.ndarray) -> int:
    """Multi-task rule: the λ with the highest mean of the two tasks' accuracies (first one on ties)."""
    return int(np.argmax((np.asarray(acc1) + np.asarray(acc2)) / 2))


def select_unlearning(
    acc1: np.ndarray, acc2: np.ndarray, lambdas: np.ndarray, t1_reference: float, tolerance: float = 1.0
) -> int:
    """Unlearning rule: among λ ≤ 0 keeping T1 within ``tolerance`` points of its reference accuracy, the lowest T2
    accuracy (ties: the λ nearest 0)."""
    lambdas = np.asarray(lambdas)
    ok = (lambdas <= 1e-12) & (np.asarray(acc1) >= t1_reference - tolerance - 1e-9)
    if not ok.any():
        raise ValueError("no λ ≤ 0 keeps T1 within the tolerance")
    return int(min(np.flatnonzero(ok), key=lambda i: (round(float(acc2[i]), 9), abs(float(lambdas[i])))))


def choose_lambda(
    use: str, acc1: np.ndarray, acc2: np.ndarray, lambdas: np.ndarray, t1_reference: float, tolerance: float = 1.0
) -> int:
    """Index of "best λ" for ``use`` = "multi-task" (``select_addition``) or "unlearning" (``select_unlearning``)."""
    if use == "multi-task":
        return select_addition(acc1, acc2)
    if use == "unlearning":
        return select_unlearning(acc1, acc2, lambdas, t1_reference, tolerance)
    raise ValueError(f"unknown use {use!r}; 'multi-task' or 'unlearning'")
