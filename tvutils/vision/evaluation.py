"""Evaluating the case study's ViTs: logits, margins and accuracy, λ sweeps of in-place merges, and the rules
that pick "best λ" (the paper does not state its rules: ours are stated here, and selection and scoring use
disjoint halves of a test set).

Scoring by expectation: every test digit is drawn in both colours (``tvutils.vision.data.both_colours``) and
a task's accuracy is the expectation, digit by digit, over that task's colour and label draws
(``expected_accuracy``). It is the accuracy a sampled test set of the same digits estimates, without the
sampling noise of the colours, and one pair of forward passes scores every task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from transformers import ViTForImageClassification

from ..chapter.progress import progress
from ..editing.inplace import InPlaceMerge
from .model import prepare


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision (float16) on a GPU; on the CPU nothing changes (float32 throughout)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.inference_mode()
def logits(model: ViTForImageClassification, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, C) in batches, on the CPU (the model may sit on another device; float16 there if a GPU)."""
    size, device = model.config.image_size, next(model.parameters()).device
    with autocast(device):
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


def colour_margins(model: ViTForImageClassification, pair: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Margins (2, N) of the digits drawn red ([0]) and green ([1]); ``pair`` is (2, N, 3, H, W)."""
    return margins(model, pair.flatten(0, 1), batch_size).view(2, -1)


def expected_accuracy(
    m: torch.Tensor,
    parity: torch.Tensor,
    p_colour: float,
    p_parity: float = 1.0,
    mask: torch.Tensor | None = None,
) -> np.ndarray:
    """Accuracy (%) expected over a task's draws, from margins ``m`` of shape (..., 2, N) on both colourings.

    Digit i's label is its parity w.p. ``p_parity`` (else flipped) and it is drawn in its label's colour
    (red for 0, green for 1) w.p. ``p_colour``; the model predicts 1 where the margin of the drawn colour is > 0.
    Returns one number per leading index, averaged over the digits where ``mask`` is True (all by default).
    """
    if m.shape[-2] != 2 or m.shape[-1] != len(parity):
        raise ValueError(f"margins must be (..., 2, {len(parity)}) for {len(parity)} digits, got {tuple(m.shape)}")
    red, green = (m[..., 0, :] > 0).double(), (m[..., 1, :] > 0).double()  # P(predict odd) per colour
    par = parity.double()
    total = 0.0
    for y, p_y in ((par, p_parity), (1 - par, 1 - p_parity)):
        own, other = y * green + (1 - y) * red, y * red + (1 - y) * green  # prediction in y's colour / the other
        correct_own = y * own + (1 - y) * (1 - own)
        correct_other = y * other + (1 - y) * (1 - other)
        total = total + p_y * (p_colour * correct_own + (1 - p_colour) * correct_other)
    if mask is not None:
        total = total[..., mask]
    return 100.0 * total.mean(dim=-1).numpy()


def sweep_colour_margins(
    merger: InPlaceMerge,
    coefficients: Sequence[tuple[float, ...]],
    pair: torch.Tensor,
    batch_size: int = 1000,
    desc: str = "λ sweep",
) -> torch.Tensor:
    """``colour_margins`` of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ for every coefficient tuple: shape (len(coefficients), 2, N)."""
    return sweep_margins(merger, coefficients, pair.flatten(0, 1), batch_size, desc).view(len(coefficients), 2, -1)


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


def select_addition(acc1: np.ndarray, acc2: np.ndarray, lambdas: np.ndarray) -> int:
    """Multi-task rule: among λ > 0 (an addition), the λ with the highest mean of the two tasks' accuracies
    (the smallest such λ on ties)."""
    lambdas = np.asarray(lambdas)
    ok = np.flatnonzero(lambdas > 1e-12)
    if not ok.size:
        raise ValueError("the λ grid has no λ > 0 to add with")
    mean = (np.asarray(acc1) + np.asarray(acc2)) / 2
    return int(ok[np.argmax(mean[ok])])


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


def best_cell(acc: np.ndarray) -> tuple[int, ...]:
    """Index of the highest value of a grid (the first in row-major order on ties)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(acc)), np.shape(acc)))


def choose_lambda(
    use: str, acc1: np.ndarray, acc2: np.ndarray, lambdas: np.ndarray, t1_reference: float, tolerance: float = 1.0
) -> int:
    """Index of "best λ" for ``use`` = "multi-task" (``select_addition``) or "unlearning" (``select_unlearning``)."""
    if use == "multi-task":
        return select_addition(acc1, acc2, lambdas)
    if use == "unlearning":
        return select_unlearning(acc1, acc2, lambdas, t1_reference, tolerance)
    raise ValueError(f"unknown use {use!r}; 'multi-task' or 'unlearning'")
