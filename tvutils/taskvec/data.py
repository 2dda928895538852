"""The paper's data model: binary classification by a discriminative pattern.

A task T has a discriminative pattern μ_T ∈ ℝ^d. A sample X = (x_1, …, x_P) has P tokens; each token is μ_T,
−μ_T, or one of M irrelevant patterns v_j (orthogonal to every task pattern), optionally plus small Gaussian
noise. The label is y = +1 iff μ_T tokens outnumber −μ_T tokens (the paper's majority rule).

[choice] the patterns are the standard basis of ℝ^d: task directions are e_0, e_1, …, the M irrelevant
patterns are the last M basis vectors, so a sample drawn as an image shows its structure at a glance. The
learner is rotation-invariant in distribution (W⁽⁰⁾ = 0, Gaussian V⁽⁰⁾), so this loses no generality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DataConfig:
    """Sizes of the data model; every field is a notebook parameter."""

    d: int = 64  # token dimension
    P: int = 20  # tokens per sample
    M: int = 20  # number of irrelevant patterns
    disc_frac: float = 0.3  # fraction of the P tokens that are ±μ_T
    noise: float = 0.0  # std of the Gaussian noise added to each token (total, spread over d coordinates)

    def __post_init__(self) -> None:
        if self.M < 1 or self.d < self.M + 3:
            raise ValueError(f"need d ≥ M + 3 (three task directions plus M irrelevant); got d={self.d}, M={self.M}")
        if not 0 < self.disc_frac <= 1:
            raise ValueError(f"disc_frac must be in (0, 1], got {self.disc_frac}")
        if self.n_disc < 1:
            raise ValueError(f"disc_frac={self.disc_frac} × P={self.P} leaves no discriminative token")
        if self.noise < 0:
            raise ValueError(f"noise must be ≥ 0, got {self.noise}")

    @property
    def n_disc(self) -> int:
        """Number of discriminative (±μ_T) tokens per sample."""
        return round(self.disc_frac * self.P)

    @property
    def n_task_dirs(self) -> int:
        """How many orthonormal task directions are available besides the irrelevant patterns."""
        return self.d - self.M


def task_direction(i: int, cfg: DataConfig) -> torch.Tensor:
    """The i-th orthonormal task direction e_i (orthogonal to every irrelevant pattern)."""
    if not 0 <= i < cfg.n_task_dirs:
        raise ValueError(f"task direction {i} out of range: d - M = {cfg.n_task_dirs} directions exist")
    e = torch.zeros(cfg.d)
    e[i] = 1.0
    return e


def irrelevant_patterns(cfg: DataConfig) -> torch.Tensor:
    """The M irrelevant patterns v_1..v_M as rows, shape (M, d): the last M basis vectors."""
    return torch.eye(cfg.d)[cfg.d - cfg.M :]


@dataclass(frozen=True)
class Task:
    """A binary task given by its unit discriminative pattern μ_T."""

    mu: torch.Tensor  # (d,)
    cfg: DataConfig
    name: str = "T"

    def __post_init__(self) -> None:
        if self.mu.shape != (self.cfg.d,):
            raise ValueError(f"task {self.name}: μ has shape {tuple(self.mu.shape)}, expected ({self.cfg.d},)")
        norm = float(self.mu.norm())
        if abs(norm - 1.0) > 1e-5:
            raise ValueError(f"task {self.name}: μ must have unit norm, got ‖μ‖ = {norm:.6f}")
        overlap = float((irrelevant_patterns(self.cfg) @ self.mu).abs().max())
        if overlap > 1e-6:
            raise ValueError(f"task {self.name}: μ overlaps an irrelevant pattern (|μᵀv| = {overlap:.3g})")

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n samples. Returns X of shape (n, P, d) and y of shape (n,) with values ±1.

        The label y is uniform; of the n_disc discriminative tokens, k ~ U{⌊n_disc/2⌋+1, …, n_disc} carry
        y·μ_T (the majority) and the rest −y·μ_T; the other tokens are irrelevant patterns drawn uniformly.
        """
        cfg = self.cfg
        n_disc, P = cfg.n_disc, cfg.P
        y = torch.randint(0, 2, (n,), generator=generator) * 2 - 1  # (n,)
        low = n_disc // 2 + 1
        k = torch.randint(low, n_disc + 1, (n,), generator=generator)  # (n,) majority count
        slot = torch.arange(P).expand(n, P)  # (n, P)
        sign = torch.where(slot < k[:, None], 1.0, -1.0) * y[:, None]  # (n, P): ±1 on discriminative slots
        is_disc = slot < n_disc  # (n, P)
        v_idx = torch.randint(0, cfg.M, (n, P), generator=generator)  # (n, P)
        irr = irrelevant_patterns(cfg)[v_idx]  # (n, P, d)
        tokens = torch.where(is_disc[..., None], sign[..., None] * self.mu, irr)  # (n, P, d)
        perm = torch.argsort(torch.rand(n, P, generator=generator), dim=1)  # (n, P) random token order
        X = torch.gather(tokens, 1, perm[..., None].expand(n, P, cfg.d))  # (n, P, d)
        if cfg.noise > 0:
            X = X + cfg.noise / math.sqrt(cfg.d) * torch.randn(X.shape, generator=generator)
        return X, y.float()


def majority_labels(X: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Labels by the paper's rule, read off X: +1 iff tokens ≈ μ outnumber tokens ≈ −μ. X: (n, P, d)."""
    proj = X @ mu  # (n, P)
    n_pos = (proj > 0.5).sum(1)
    n_neg = (proj < -0.5).sum(1)
    if bool((n_pos == n_neg).any()):
        raise ValueError("a sample has as many μ as −μ tokens: its label is undefined")
    return torch.where(n_pos > n_neg, 1.0, -1.0)


def task_pair(alpha: float, cfg: DataConfig) -> tuple[Task, Task]:
    """Two tasks with correlation α = μ_T1ᵀ μ_T2: μ_T1 = e_0, μ_T2 = α e_0 + √(1−α²) e_1 (our [choice])."""
    if not -1.0 <= alpha <= 1.0:
        raise ValueError(f"α must lie in [-1, 1], got {alpha}")
    e0, e1 = task_direction(0, cfg), task_direction(1, cfg)
    mu2 = alpha * e0 + math.sqrt(max(0.0, 1.0 - alpha**2)) * e1
    return Task(e0, cfg, "T1"), Task(mu2, cfg, "T2")


@dataclass(frozen=True)
class OODTasks:
    """Orthogonal source tasks T_i and an out-of-domain task T' with μ_T' = Σ γᵢ μ_Tᵢ + κ μ'_⊥."""

    sources: tuple[Task, ...]
    target: Task
    gammas: tuple[float, ...]  # the γᵢ actually used (after normalisation)
    kappa: float


def ood_tasks(
    gammas: tuple[float, ...] | list[float], kappa: float, cfg: DataConfig, normalize: bool = True
) -> OODTasks:
    """Build orthogonal tasks T_1..T_k (μ_Tᵢ = e_{i-1}) and T' with μ_T' = Σ γᵢ μ_Tᵢ + κ μ'_⊥ (μ'_⊥ = e_k).

    With unit-norm patterns Σγᵢ² + κ² must be 1. ``normalize=True`` divides (γ, κ) by √(Σγᵢ² + κ²) and
    returns the γᵢ actually used; ``normalize=False`` raises if the squares do not sum to 1.
    """
    g = [float(x) for x in gammas]
    if not g or all(x == 0 for x in g):
        raise ValueError("Theorem 3 needs at least one non-zero γᵢ")
    if len(g) + 1 > cfg.n_task_dirs:
        raise ValueError(f"{len(g)} source tasks need {len(g) + 1} task directions, only {cfg.n_task_dirs} exist")
    total = math.sqrt(sum(x * x for x in g) + kappa * kappa)
    if normalize:
        g, kappa = [x / total for x in g], kappa / total
    elif abs(total - 1.0) > 1e-6:
        raise ValueError(f"Σγᵢ² + κ² = {total**2:.6f} ≠ 1; pass normalize=True to rescale")
    sources = tuple(Task(task_direction(i, cfg), cfg, f"T{i + 1}") for i in range(len(g)))
    mu = sum(gi * t.mu for gi, t in zip(g, sources)) + kappa * task_direction(len(g), cfg)
    return OODTasks(sources, Task(mu, cfg, "T'"), tuple(g), float(kappa))
