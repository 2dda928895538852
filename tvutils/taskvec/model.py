"""The learner of the paper, eq. (3): a one-layer Transformer with one softmax attention head and a ReLU layer.

    f(X; Ψ) = (1/P) Σ_{l=1..P} a_(l)ᵀ ReLU( Σ_{s=1..P} V x_s · softmax_l(x_sᵀ W x_l) )

softmax_l normalises over the key position s for each query position l. W ∈ ℝ^{d×d} and V ∈ ℝ^{m×d} are
trained (Ψ = {W, V}); a_(l) ∈ ℝ^m is fixed with entries ±1/√m.

[choice] (the paper leaves these open) W⁽⁰⁾ = w_init·I (default 0, so attention starts uniform), V⁽⁰⁾ with
i.i.d. N(0, v_init²) entries, and a_(l) the same for every position l, exactly half of its entries +1/√m and
half −1/√m (``a_per_position=True`` draws an independent sign vector per position instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LearnerConfig:
    d: int = 64  # token dimension
    m: int = 128  # number of neurons (rows of V)
    P: int = 20  # tokens per sample (a_(l) has one row per position)
    w_init: float = 0.0  # W⁽⁰⁾ = w_init · I
    v_init: float = 0.01  # std of the entries of V⁽⁰⁾
    a_per_position: bool = False  # one sign vector for all l (False) or one per position (True)

    def __post_init__(self) -> None:
        if self.m < 2 or self.m % 2:
            raise ValueError(f"m must be an even number ≥ 2 (half the a-entries are +, half −), got {self.m}")


class OneLayerTransformer(nn.Module):
    """Eq. (3), batched over samples. Parameters: W (d, d), V (m, d); buffer a (P, m)."""

    def __init__(self, cfg: LearnerConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(cfg.w_init * torch.eye(cfg.d))  # (d, d)
        self.V = nn.Parameter(cfg.v_init * torch.randn(cfg.m, cfg.d, generator=g))  # (m, d)
        half = torch.cat([torch.ones(cfg.m // 2), -torch.ones(cfg.m // 2)]) / math.sqrt(cfg.m)  # (m,)
        if cfg.a_per_position:
            a = torch.stack([half[torch.randperm(cfg.m, generator=g)] for _ in range(cfg.P)])  # (P, m)
        else:
            a = half[torch.randperm(cfg.m, generator=g)].expand(cfg.P, cfg.m).clone()  # (P, m)
        self.register_buffer("a", a)

    def hidden(self, X: torch.Tensor) -> torch.Tensor:
        """ReLU( Σ_s V x_s softmax_l(x_sᵀ W x_l) ) for every query l: X (B, P, d) → (B, P, m)."""
        scores = X @ self.W @ X.transpose(1, 2)  # (B, P_s, P_l): [s, l] = x_sᵀ W x_l
        attn = torch.softmax(scores, dim=1)  # (B, P_s, P_l): normalised over keys s for each query l
        values = X @ self.V.T  # (B, P_s, m): V x_s
        mixed = attn.transpose(1, 2) @ values  # (B, P_l, m): Σ_s V x_s softmax_l(·)
        return torch.relu(mixed)  # (B, P_l, m)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """f(X; Ψ) for a batch: X (B, P, d) → (B,)."""
        if X.ndim != 3 or X.shape[2] != self.cfg.d:
            raise ValueError(f"expected X of shape (B, P, d={self.cfg.d}), got {tuple(X.shape)}")
        if X.shape[1] != self.a.shape[0]:
            raise ValueError(f"X has P={X.shape[1]} tokens, the learner was built for P={self.a.shape[0]}")
        h = self.hidden(X)  # (B, P, m)
        return (h * self.a).sum(-1).mean(-1)  # (B,): (1/P) Σ_l a_(l)ᵀ h_l


def hinge_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample hinge loss ℓ = max{0, 1 − y f(X)}: (B,), (B,) → (B,)."""
    return torch.clamp(1.0 - y * output, min=0.0)


def loss_and_error(output: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean hinge loss and error rate (fraction of sign(f) ≠ y) over the last dimension: (…, n), (n,) → (…), (…)."""
    return hinge_loss(output, y).mean(-1), (torch.sign(output) != y).float().mean(-1)
