"""The learner of the paper, eq. (1) of the talk: a single-head, one-layer Transformer with a ReLU perceptron.

    F(Ψ; P) = aᵀ ReLU( W_O Σ_{i=1..l} W_V p_i · attn(Ψ; P, i) ),
    attn(Ψ; P, i) = softmax_i( (W_K p_i)ᵀ W_Q p_query )

The sum and the softmax run over the l context columns p_i of the prompt; p_query is its last column.
Ψ = {W_Q, W_K, W_V, W_O, a}; as in the paper, W_Q, W_K, W_V start as small multiples of the identity and
W_O from a Gaussian.

[choice] (the talk leaves these open) all of W_Q, W_K, W_V are (D × D) with D = d + d_y; W_O is (m × D);
a ∈ ℝ^m is fixed, half of its entries +1/√m and half −1/√m (as in Part I's learner); W_O⁽⁰⁾ has i.i.d.
N(0, o_init²) entries. The scores are computed as p_iᵀ (W_Kᵀ W_Q p_query), one vector per prompt, rather
than by projecting every column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LearnerConfig:
    D: int = 36  # height of a prompt column, d + d_y
    m: int = 64  # neurons: rows of W_O
    qk_init: float = 0.1  # W_Q⁽⁰⁾ = W_K⁽⁰⁾ = qk_init · I
    v_init: float = 1.0  # W_V⁽⁰⁾ = v_init · I
    o_init: float = 0.01  # std of W_O⁽⁰⁾'s entries

    def __post_init__(self) -> None:
        if self.m < 2 or self.m % 2:
            raise ValueError(f"m must be an even number ≥ 2 (half the a-entries are +, half −), got {self.m}")


class ICLTransformer(nn.Module):
    """Eq. (1), batched over prompts. Parameters W_Q, W_K, W_V (D, D), W_O (m, D); buffer a (m,)."""

    def __init__(self, cfg: LearnerConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        eye = torch.eye(cfg.D)
        self.W_Q = nn.Parameter(cfg.qk_init * eye.clone())  # (D, D)
        self.W_K = nn.Parameter(cfg.qk_init * eye.clone())  # (D, D)
        self.W_V = nn.Parameter(cfg.v_init * eye.clone())  # (D, D)
        self.W_O = nn.Parameter(cfg.o_init * torch.randn(cfg.m, cfg.D, generator=g))  # (m, D)
        half = torch.cat([torch.ones(cfg.m // 2), -torch.ones(cfg.m // 2)]) / math.sqrt(cfg.m)  # (m,)
        self.register_buffer("a", half[torch.randperm(cfg.m, generator=g)])  # (m,)

    def attention(self, P: torch.Tensor) -> torch.Tensor:
        """attn(Ψ; P, i) for every context column i: P (B, l + 1, D) → (B, l), each row summing to 1."""
        if P.ndim != 3 or P.shape[2] != self.cfg.D or P.shape[1] < 2:
            raise ValueError(f"expected prompts of shape (B, l + 1 ≥ 2, D={self.cfg.D}), got {tuple(P.shape)}")
        context, query = P[:, :-1], P[:, -1]  # (B, l, D), (B, D)
        key_dir = (query @ self.W_Q.T) @ self.W_K  # (B, D): W_Kᵀ W_Q p_query
        scores = (context @ key_dir[:, :, None])[..., 0]  # (B, l): (W_K p_i)ᵀ W_Q p_query
        return torch.softmax(scores, dim=1)  # (B, l): normalised over the context columns i

    def hidden(self, P: torch.Tensor, attn: torch.Tensor | None = None) -> torch.Tensor:
        """ReLU( W_O Σ_i W_V p_i attn_i ): P (B, l + 1, D) → (B, m)."""
        attn = self.attention(P) if attn is None else attn  # (B, l)
        mixed = (attn[:, :, None] * P[:, :-1]).sum(1)  # (B, D): Σ_i p_i attn_i
        values = mixed @ self.W_V.T  # (B, D): Σ_i W_V p_i attn_i
        return torch.relu(values @ self.W_O.T)  # (B, m)

    def forward(self, P: torch.Tensor) -> torch.Tensor:
        """F(Ψ; P) for a batch of prompts: (B, l + 1, D) → (B,)."""
        return self.hidden(P) @ self.a  # (B,): aᵀ ReLU(·)


def hinge_loss(output: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-prompt hinge loss ℓ = max{0, 1 − z F(Ψ; P)}: (B,), (B,) → (B,)."""
    return torch.clamp(1.0 - z * output, min=0.0)


def loss_and_error(output: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """Mean hinge loss and error rate (fraction of sign(F) ≠ z)."""
    output = output.detach()
    return float(hinge_loss(output, z).mean()), float((torch.sign(output) != z).float().mean())
