"""The paper's data model for in-context learning: patterns, tasks, prompts (slides 9-10 of the talk).

In-domain relevant (IDR) patterns μ_1..μ_{M₁} and irrelevant patterns ν_1..ν_{M₂} are orthonormal in ℝ^d; an
input is x = μ_j + κ ν_k. A task is an ordered pair (a, b) of IDR patterns: f(x) = +1 if x's pattern is μ_a,
−1 if it is μ_b, a random label otherwise. A prompt P ∈ ℝ^{(d + d_y) × (l + 1)} has l context columns
p_i = (x_i; y_i) with y_i = ±q, and the query column p_query = (x_query; 0). Each context example is, with
probability α/2 each, an example of μ_a or of μ_b (a fraction α of the context is task-relevant), and
otherwise an example of another pattern with a random label; the query is μ_a or μ_b with probability 1/2.

Out of domain, the out-of-domain relevant (ODR) patterns μ'_j = Σᵢ c_{j,i} μ_i are linear combinations of the
IDR patterns with coefficient sum S₁ = Σᵢ c_{j,i} (``ood_patterns``); tasks and prompts are built from them in
the same way, with α' in place of α.

[choice] the patterns are standard basis vectors (μ_j = e_j, ν_k = e_{M₁+k}), q = e_0 ∈ ℝ^{d_y}, and the
irrelevant component's index k is uniform; an optional isotropic Gaussian noise of total std ``noise`` is added
to each x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

Pair = tuple[int, int]  # a task: (index of the +1 pattern, index of the −1 pattern)


@dataclass(frozen=True)
class DataConfig:
    """Sizes of the data model; every field is a notebook parameter."""

    M1: int = 6  # in-domain relevant patterns μ_1..μ_{M₁}
    M2: int = 24  # irrelevant patterns ν_1..ν_{M₂}
    d: int = 32  # feature dimension (≥ M₁ + M₂)
    d_y: int = 4  # label-embedding dimension (y = ±q, q = e_0)
    kappa: float = 0.5  # x = μ_j + κ ν_k
    noise: float = 0.0  # std of the Gaussian noise added to each x (total, spread over d coordinates)

    def __post_init__(self) -> None:
        if self.M1 < 3:
            raise ValueError(f"need at least 3 in-domain patterns (a task and one other pattern), got M1={self.M1}")
        if self.M2 < 1 or self.d < self.M1 + self.M2:
            raise ValueError(f"need d ≥ M1 + M2 with M2 ≥ 1; got d={self.d}, M1={self.M1}, M2={self.M2}")
        if self.d_y < 1 or self.kappa < 0 or self.noise < 0:
            raise ValueError(f"need d_y ≥ 1, κ ≥ 0, noise ≥ 0; got {self.d_y}, {self.kappa}, {self.noise}")

    @property
    def D(self) -> int:
        """The height of a prompt column, d + d_y."""
        return self.d + self.d_y


def idr_patterns(cfg: DataConfig) -> torch.Tensor:
    """The in-domain relevant patterns μ_1..μ_{M₁} as rows, (M₁, d)."""
    return torch.eye(cfg.d)[: cfg.M1]


def irrelevant_patterns(cfg: DataConfig) -> torch.Tensor:
    """The irrelevant patterns ν_1..ν_{M₂} as rows, (M₂, d)."""
    return torch.eye(cfg.d)[cfg.M1 : cfg.M1 + cfg.M2]


def label_embedding(cfg: DataConfig) -> torch.Tensor:
    """q ∈ ℝ^{d_y}: y = +q for label +1 and −q for label −1."""
    return torch.eye(cfg.d_y)[0]


def all_tasks(n_patterns: int) -> list[Pair]:
    """Every ordered pair (a, b), a ≠ b: the M(M − 1) tasks on M patterns."""
    return [(a, b) for a in range(n_patterns) for b in range(n_patterns) if a != b]


def cycle_tasks(n_patterns: int) -> list[Pair]:
    """(0, 1), (1, 2), …, (M − 1, 0): M tasks using every pattern once as +1 and once as −1."""
    return [(a, (a + 1) % n_patterns) for a in range(n_patterns)]


def both_ways_cycle_tasks(n_patterns: int, distances: Sequence[int] = (1,)) -> list[Pair]:
    """The tasks (i, i + k) and (i + k, i) for every pattern i and distance k around the cycle: 2M tasks a
    distance, in which a pattern's partner says nothing about its label."""
    if any(not 0 < k < n_patterns for k in distances) or len(set(distances)) != len(distances):
        raise ValueError(f"distances must be distinct and in 1 … {n_patterns - 1}, got {list(distances)}")
    tasks = {
        t for k in distances for i in range(n_patterns) for t in ((i, (i + k) % n_patterns), ((i + k) % n_patterns, i))
    }
    return sorted(tasks)


def coverage(tasks: Sequence[Pair], n_patterns: int) -> float:
    """The fraction of the 2M (pattern, label) combinations the tasks use; 1.0 = Theorem 1's condition."""
    used = {(a, +1) for a, _ in tasks} | {(b, -1) for _, b in tasks}
    return len(used) / (2 * n_patterns)


def random_tasks(n: int, n_patterns: int, generator: torch.Generator) -> list[Pair]:
    """n distinct tasks drawn uniformly without replacement from the M(M − 1) ordered pairs."""
    pool = all_tasks(n_patterns)
    if not 1 <= n <= len(pool):
        raise ValueError(f"cannot draw {n} distinct tasks from {len(pool)}")
    return [pool[i] for i in torch.randperm(len(pool), generator=generator)[:n].tolist()]


def noncovering_tasks(n: int, n_patterns: int, generator: torch.Generator) -> list[Pair]:
    """n distinct random tasks in which pattern 0 is never the −1 side: a set that misses one (pattern, label)."""
    pool = [t for t in all_tasks(n_patterns) if t[1] != 0]
    if not 1 <= n <= len(pool):
        raise ValueError(f"cannot draw {n} distinct tasks from the {len(pool)} that never label pattern 0 as −1")
    return [pool[i] for i in torch.randperm(len(pool), generator=generator)[:n].tolist()]


TASK_SETS = ("cycle", "both-ways cycle", "random", "non-covering")


def training_tasks(kind: str, n: int, n_patterns: int, generator: torch.Generator) -> list[Pair]:
    """A set of n training tasks of a kind: ``cycle`` (n = M), ``both-ways cycle`` (n = 2M), ``random`` or
    ``non-covering`` (drawn with ``generator``)."""
    fixed = {"cycle": cycle_tasks, "both-ways cycle": both_ways_cycle_tasks}
    if kind in fixed:
        tasks = fixed[kind](n_patterns)
        if len(tasks) != n:
            raise ValueError(f"the {kind} on {n_patterns} patterns has {len(tasks)} tasks, not {n}")
        return tasks
    if kind == "random":
        return random_tasks(n, n_patterns, generator)
    if kind == "non-covering":
        return noncovering_tasks(n, n_patterns, generator)
    raise ValueError(f"unknown kind of task set {kind!r}; known: {list(TASK_SETS)}")


def unseen_tasks(train: Sequence[Pair], n_patterns: int) -> list[Pair]:
    """The tasks of 𝒯 \\ 𝒯_tr, on which in-domain generalisation is measured."""
    seen = set(train)
    return [t for t in all_tasks(n_patterns) if t not in seen]


@dataclass(frozen=True)
class Prompts:
    """A batch of prompts, columns as rows: P (n, l + 1, D) with the query last; z (n,) ±1 query labels."""

    P: torch.Tensor  # (n, l + 1, d + d_y)
    z: torch.Tensor  # (n,)
    pattern: torch.Tensor  # (n, l + 1): index of each column's relevant pattern (query last)
    relevant: torch.Tensor  # (n, l): whether a context example is task-relevant (pattern a or b)

    def to(self, device: str | torch.device) -> Prompts:
        """The same prompts on another device."""
        return Prompts(*(t.to(device) for t in (self.P, self.z, self.pattern, self.relevant)))


def sample_prompts(
    patterns: torch.Tensor,
    tasks: Sequence[Pair],
    n: int,
    length: int,
    alpha: float,
    cfg: DataConfig,
    generator: torch.Generator,
) -> Prompts:
    """n prompts of ``length`` context examples, each for a task drawn uniformly from ``tasks``.

    ``patterns`` (M, d) are the relevant patterns the tasks index (the IDR patterns, or the ODR ones out of
    domain). A context example is task-relevant with probability α (then μ_a or μ_b with probability 1/2,
    labelled +q or −q), else one of the other M − 2 patterns with a random label.
    """
    M = patterns.shape[0]
    if not 0 <= alpha <= 1:
        raise ValueError(f"α must lie in [0, 1], got {alpha}")
    if length < 1 or n < 1:
        raise ValueError(f"need n ≥ 1 prompts of length ≥ 1, got n={n}, length={length}")
    if not tasks or any(not (0 <= a < M and 0 <= b < M and a != b) for a, b in tasks):
        raise ValueError(f"tasks must be pairs of distinct indices below {M}, got {list(tasks)[:5]}…")
    pairs = torch.tensor(list(tasks))[torch.randint(0, len(tasks), (n,), generator=generator)]  # (n, 2)
    a, b = pairs[:, 0:1], pairs[:, 1:2]  # (n, 1) each
    relevant = torch.rand(n, length, generator=generator) < alpha  # (n, l)
    is_a = torch.rand(n, length, generator=generator) < 0.5  # (n, l): μ_a or μ_b when relevant
    other = torch.randint(0, M - 2, (n, length), generator=generator)  # (n, l): an index among the M − 2 others
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)  # (n, 1)
    other = other + (other >= lo).long()
    other = other + (other >= hi).long()  # (n, l): skips a and b
    ctx_pattern = torch.where(relevant, torch.where(is_a, a, b), other)  # (n, l)
    random_sign = torch.randint(0, 2, (n, length), generator=generator) * 2 - 1  # (n, l)
    ctx_label = torch.where(relevant, torch.where(is_a, 1, -1), random_sign)  # (n, l)
    query_is_a = torch.rand(n, 1, generator=generator) < 0.5  # (n, 1)
    q_pattern = torch.where(query_is_a, a, b)  # (n, 1)
    z = torch.where(query_is_a[:, 0], 1.0, -1.0)  # (n,)
    pattern = torch.cat([ctx_pattern, q_pattern], dim=1)  # (n, l + 1)
    nu = irrelevant_patterns(cfg)[torch.randint(0, cfg.M2, (n, length + 1), generator=generator)]  # (n, l + 1, d)
    x = patterns[pattern] + cfg.kappa * nu  # (n, l + 1, d)
    if cfg.noise > 0:
        x = x + cfg.noise / math.sqrt(cfg.d) * torch.randn(x.shape, generator=generator)
    labels = torch.cat([ctx_label.float(), torch.zeros(n, 1)], dim=1)  # (n, l + 1): the query's label is 0
    y = labels[..., None] * label_embedding(cfg)  # (n, l + 1, d_y)
    return Prompts(torch.cat([x, y], dim=-1), z, pattern, relevant)


# ---- out-of-domain patterns --------------------------------------------------------------------------------
CONSTRUCTIONS = {
    "unpaired": "μ'_j = (S₁/2)(μ_i + μ_k), μ_i and μ_k never in one training task",
    "opposed": "μ'_j = (S₁/2)(μ_i + μ_k), (μ_i, μ_k) a training task (opposite labels)",
    "unit norm": "μ'_j = c₁μ_i + c₂μ_k on the unpaired supports, c₁ + c₂ = S₁ and c₁² + c₂² = 1",
}


def ood_supports(construction: str, M1: int) -> list[Pair]:
    """The two IDR patterns each ODR pattern combines, relative to the cycle training tasks (i, i + 1).

    ``unpaired`` (and ``unit norm``) pairs μ_i with μ_{i + M₁/2}, which never share a cycle task; ``opposed``
    pairs μ_{2j} with μ_{2j+1}, which are the two labels of the cycle task (2j, 2j + 1). M₁ must be even ≥ 6.
    """
    if M1 < 6 or M1 % 2:
        raise ValueError(f"the out-of-domain constructions need an even M1 ≥ 6, got {M1}")
    if construction in ("unpaired", "unit norm"):
        return [(i, i + M1 // 2) for i in range(M1 // 2)]
    if construction == "opposed":
        return [(2 * j, 2 * j + 1) for j in range(M1 // 2)]
    raise ValueError(f"unknown construction {construction!r}; known: {list(CONSTRUCTIONS)}")


def ood_coefficients(construction: str, S1: float) -> tuple[float, float]:
    """The two coefficients (c₁, c₂) of an ODR pattern; their sum is S₁ in every construction."""
    if construction in ("unpaired", "opposed"):
        return S1 / 2, S1 / 2
    if construction == "unit norm":
        if abs(S1) > math.sqrt(2):
            raise ValueError(f"a unit-norm combination of two orthonormal patterns has |S₁| ≤ √2, got {S1}")
        root = math.sqrt(2 - S1 * S1)
        return (S1 + root) / 2, (S1 - root) / 2
    raise ValueError(f"unknown construction {construction!r}; known: {list(CONSTRUCTIONS)}")


def ood_patterns(construction: str, S1: float, cfg: DataConfig) -> torch.Tensor:
    """The ODR patterns μ'_1..μ'_{M₁/2} as rows, (M₁/2, d), each with coefficient sum S₁."""
    c1, c2 = ood_coefficients(construction, S1)
    mu = idr_patterns(cfg)
    return torch.stack([c1 * mu[i] + c2 * mu[k] for i, k in ood_supports(construction, cfg.M1)])
