"""Evaluating the case study's ViTs: logits, margins and accuracy, λ sweeps of in-place merges, and the rules
that pick "best λ" (the paper does not state its rules: ours are stated here, and selection and scoring can
use disjoint halves of a test set).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import ViTForImageClassification

from ..chapter.progress import progress
from ..editing.inplace import InPlaceMerge
from .model import prepare


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


def sweep_margins(
    merger: InPlaceMerge,
    coefficients: Sequence[tuple[float, ...]],
    x: torch.Tensor,
    batch_size: int = 1000,
    desc: str = "λ sweep",
) -> torch.Tensor:
    """Margins of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ on x for every coefficient tuple: shape (len(coefficients), N).

    The merger's model is left at the last merge: restore it (or use the merger in a ``with`` block) after.
    """
    return torch.stack([margins(merger.set(lams), x, batch_size) for lams in progress(coefficients, desc=desc)])


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
