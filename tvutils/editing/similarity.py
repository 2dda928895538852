"""Task correlation measured in output space: α̂ = cos(f(X; Ψ*₁) − f(X; Ψ⁽⁰⁾), f(X; Ψ*₂) − f(X; Ψ⁽⁰⁾)).

The paper estimates how related two tasks are from the models' outputs on shared inputs, not from their
weights. The changes relative to the common starting model are compared, because the outputs themselves are
dominated by what every model shares (their raw cosine is close to 1 for any pair). What an "output" is
depends on the model: the logit margin of each input (the ViT case study: the cosine runs over inputs) or
the last hidden state of each position (the language case study: one cosine per position, over features).
"""

from __future__ import annotations

import torch


def output_alpha(change_1: torch.Tensor, change_2: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Cosine of two models' output changes along ``dim``, in float64: the shapes must agree, ``dim`` is reduced.

    Each change is normalised before the product (``torch.nn.functional.cosine_similarity``), which keeps
    full precision whatever the scale of the outputs.

    A change that is zero along ``dim`` has no direction: α̂ is undefined there, and it raises.
    """
    if change_1.shape != change_2.shape:
        raise ValueError(f"the output changes differ in shape: {tuple(change_1.shape)} vs {tuple(change_2.shape)}")
    a, b = change_1.double(), change_2.double()
    if bool(((a.norm(dim=dim) == 0) | (b.norm(dim=dim) == 0)).any()):
        raise ValueError("a model whose outputs did not change has no direction: α̂ is undefined")
    return torch.nn.functional.cosine_similarity(a, b, dim=dim, eps=1e-12)
