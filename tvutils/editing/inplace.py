"""Task arithmetic in place: one model whose weights are set to Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ, for many λ, without copies.

Evaluating a merge by building a new model per λ (``TaskVector.apply_to``) copies every weight each time;
for a ViT or a language model over a λ grid that is most of the cost. ``InPlaceMerge`` keeps a copy of only
the tensors the task vectors touch, writes Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ into the model's own tensors for each λ, and
restores them bit for bit afterwards (``restore``, or on leaving a ``with`` block). ``task_arithmetic`` is
the one-merge form of it as a context manager; ``add_in_place`` makes a merge permanent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .task_vector import TaskVector


class InPlaceMerge:
    """Sets ``model``'s weights to Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ in place (Ψ⁽⁰⁾ = the weights it has when this is made).

    Every key of every task vector must be a tensor of the model's state dict with the same shape and dtype.
    """

    def __init__(self, model: nn.Module, task_vectors: Sequence[TaskVector]) -> None:
        if not task_vectors:
            raise ValueError("an in-place merge needs at least one task vector")
        self.model = model
        self.task_vectors = list(task_vectors)
        state = model.state_dict(keep_vars=True)
        keys = list(dict.fromkeys(k for tv in self.task_vectors for k in tv.deltas))
        for tv in self.task_vectors:
            for key, delta in tv.deltas.items():
                if key not in state:
                    raise ValueError(f"key {key!r} of the task vector is not a tensor of the model")
                t = state[key]
                if t.shape != delta.shape or t.dtype != delta.dtype:
                    raise ValueError(
                        f"key {key!r}: {tuple(delta.shape)} {delta.dtype} in the task vector vs "
                        f"{tuple(t.shape)} {t.dtype} in the model"
                    )
        self._targets = {k: state[k] for k in keys}
        self._base = {k: state[k].detach().clone() for k in keys}

    @torch.no_grad()
    def set(self, lambdas: Sequence[float]) -> nn.Module:
        """Write Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ into the model and return it."""
        if len(lambdas) != len(self.task_vectors):
            raise ValueError(f"{len(self.task_vectors)} task vectors but {len(lambdas)} coefficients λ")
        for key, target in self._targets.items():
            value = self._base[key].clone()
            for lam, tv in zip(lambdas, self.task_vectors):
                if key in tv.deltas:
                    value.add_(tv.deltas[key].to(value.device), alpha=float(lam))
            target.copy_(value)
        return self.model

    @torch.no_grad()
    def restore(self) -> nn.Module:
        """Give the model back its Ψ⁽⁰⁾ weights, bit for bit."""
        for key, target in self._targets.items():
            target.copy_(self._base[key])
        return self.model

    def __enter__(self) -> InPlaceMerge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


@contextlib.contextmanager
def task_arithmetic(model: nn.Module, tv: TaskVector, scale: float) -> Iterator[nn.Module]:
    """Inside the block the model is Ψ + scale·ΔΨ; afterwards its weights are restored bit for bit."""
    with InPlaceMerge(model, [tv]) as merge:
        yield merge.set([scale])


def add_in_place(model: nn.Module, tv: TaskVector, scale: float = 1.0) -> nn.Module:
    """Ψ ← Ψ + scale·ΔΨ for good (keys, shapes and dtypes must match the model's tensors)."""
    return InPlaceMerge(model, [tv]).set([scale])
