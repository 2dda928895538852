"""Evaluating many merges of the learner at once.

A merged learner is linear in λ: W(λ) = W⁽⁰⁾ + Σᵢ λᵢ ΔWᵢ and V(λ) = V⁽⁰⁾ + Σᵢ λᵢ ΔVᵢ. So the attention scores
XW(λ)Xᵀ = XW⁽⁰⁾Xᵀ + Σᵢ λᵢ XΔWᵢXᵀ and the values XV(λ)ᵀ are affine in λ too: computed once per term on the
test set, they give every grid point by a weighted sum, with no model built per point.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import OneLayerTransformer, hinge_loss
from .task_vector import TaskVector


def _terms(model0: OneLayerTransformer, tvs: list[TaskVector], X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and values of Ψ⁽⁰⁾ and of each task vector on X: (1+k, n, P, P) and (1+k, n, P, m)."""
    Ws = [model0.W.detach()] + [tv.deltas["W"] for tv in tvs]
    Vs = [model0.V.detach()] + [tv.deltas["V"] for tv in tvs]
    Xt = X.transpose(1, 2)  # (n, d, P)
    scores = torch.stack([X @ W @ Xt for W in Ws])  # (1+k, n, P_s, P_l)
    values = torch.stack([X @ V.T for V in Vs])  # (1+k, n, P_s, m)
    return scores, values


@torch.no_grad()
def evaluate_merges(
    model0: OneLayerTransformer,
    task_vectors: list[TaskVector],
    lambdas: np.ndarray | torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean hinge loss and error of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ on (X, y) for every row of ``lambdas`` (G, k) → (G,), (G,)."""
    lam = torch.as_tensor(np.asarray(lambdas, dtype=np.float32))
    if lam.ndim != 2 or lam.shape[1] != len(task_vectors):
        raise ValueError(f"lambdas must have shape (G, {len(task_vectors)}), got {tuple(lam.shape)}")
    for tv in task_vectors:
        missing = {"W", "V"} - set(tv.deltas)
        if missing:
            raise ValueError(f"task vector lacks the learner's key(s) {sorted(missing)}")
    scores, values = _terms(model0, task_vectors, X)
    coef = torch.cat([torch.ones(len(lam), 1), lam], dim=1)  # (G, 1+k): Ψ⁽⁰⁾ has coefficient 1
    a = model0.a  # (P, m)
    losses, errors = [], []
    for start in range(0, len(coef), chunk):
        c = coef[start : start + chunk]  # (g, 1+k)
        S = torch.einsum("gt,tnsl->gnsl", c, scores)  # (g, n, P_s, P_l)
        attn = torch.softmax(S, dim=2)  # over keys s
        Vx = torch.einsum("gt,tnsm->gnsm", c, values)  # (g, n, P_s, m)
        h = torch.relu(attn.transpose(2, 3) @ Vx)  # (g, n, P_l, m)
        out = (h * a).sum(-1).mean(-1)  # (g, n)
        losses.append(hinge_loss(out, y).mean(1))
        errors.append((torch.sign(out) != y).float().mean(1))
    return torch.cat(losses).numpy(), torch.cat(errors).numpy()


@torch.no_grad()
def evaluate_merges_loop(
    model0: OneLayerTransformer,
    task_vectors: list[TaskVector],
    lambdas: np.ndarray,
    X: torch.Tensor,
    y: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: build one merged model per grid point and evaluate it."""
    from .task_vector import merge

    losses, errors = [], []
    for row in np.asarray(lambdas, dtype=float):
        model = merge(model0, task_vectors, [float(v) for v in row])
        out = model(X)
        losses.append(float(hinge_loss(out, y).mean()))
        errors.append(float((torch.sign(out) != y).float().mean()))
    return np.array(losses), np.array(errors)


def grid_points(*axes: np.ndarray) -> np.ndarray:
    """All combinations of the axes as rows (G, k), the first axis slowest: reshape results to the axes' lengths."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)
