"""The ways practitioners choose λ, as the chapter "Choosing λ" scores them against the theory's rules.

* fixed coefficients: λ = 1 (plain task arithmetic) and 0.3 (the default of FusionBench's task-arithmetic and TIES
  configurations); a forgotten task gets the same magnitude, negated;
* Model Stock's closed form, per layer (tensor): t = N·cosθ / (1 + (N − 1)·cosθ) with θ the angle between the
  task vectors there (the mean pairwise cosine for N > 2), each task vector weighted t/N [Jang et al., 2024];
* the norm ratio of MetaGPT-style merging: λᵢ = ‖τᵢ‖² / Σₖ ‖τₖ‖² [Zhou et al., 2024];
* task-wise AdaMerging: λ learned by minimising the entropy of the merged model's predictions on unlabelled
  inputs, with Adam from λ = 0.3 for a stated number of steps [Yang et al., 2024];
* a black-box search: CMA-ES [Hansen] (the ``cma`` package) on a labelled validation score, at a fixed budget
  of merge evaluations (as mergekit-evolve and LoraHub search).

Forgetting with a closed form: the kept tasks stay at λ = 1 and the forgotten one gets the closed form's weight,
negated (Model Stock, norm ratio); AdaMerging has no objective for forgetting.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..editing.task_vector import TaskVector

FIXED_DEFAULT = 0.3


def model_stock_ratios(task_vectors: Sequence[TaskVector]) -> dict[str, float]:
    """Per tensor, Model Stock's t = N·cosθ / (1 + (N − 1)·cosθ) (cosθ: the mean pairwise cosine there)."""
    n = len(task_vectors)
    if n < 2:
        raise ValueError("Model Stock needs at least two task vectors")
    out = {}
    for key in task_vectors[0].deltas:
        flat = [tv.deltas[key].double().reshape(-1) for tv in task_vectors]
        cosines = []
        for a, b in itertools.combinations(flat, 2):
            denom = float(a.norm() * b.norm())
            cosines.append(float(a @ b) / denom if denom > 0 else 0.0)
        cos = float(np.mean(cosines))
        denom = 1 + (n - 1) * cos
        out[key] = n * cos / denom if abs(denom) > 1e-12 else 0.0
    return out


def scaled(tv: TaskVector, per_key: dict[str, float]) -> TaskVector:
    """A task vector with each tensor multiplied by its own factor (a per-layer λ folded into the vector)."""
    return TaskVector({k: v * float(per_key[k]) for k, v in tv.deltas.items()}, tv.frozen)


def model_stock_vectors(task_vectors: Sequence[TaskVector], forget: int | None = None) -> list[TaskVector]:
    """The task vectors with Model Stock's per-layer weights folded in, each merged with λ = 1 afterwards: t/N
    each for addition; with ``forget``, the kept ones unchanged and the forgotten one at −t (its pair with them)."""
    t = model_stock_ratios(task_vectors)
    if forget is None:
        n = len(task_vectors)
        return [scaled(tv, {k: v / n for k, v in t.items()}) for tv in task_vectors]
    return [scaled(tv, {k: -v for k, v in t.items()}) if i == forget else tv for i, tv in enumerate(task_vectors)]


def norm_ratio(task_vectors: Sequence[TaskVector], forget: int | None = None) -> tuple[float, ...]:
    """λᵢ = ‖τᵢ‖² / Σₖ ‖τₖ‖²; with ``forget``, the kept tasks at 1 and the forgotten one at minus its ratio."""
    sq = np.array([tv.norm() ** 2 for tv in task_vectors])
    if sq.sum() == 0:
        raise ValueError("every task vector is zero: the norm ratio is undefined")
    ratio = sq / sq.sum()
    if forget is None:
        return tuple(float(r) for r in ratio)
    return tuple(-float(r) if i == forget else 1.0 for i, r in enumerate(ratio))


def fixed(value: float, k: int, forget: int | None = None) -> tuple[float, ...]:
    """The same λ for every task; with ``forget``, the kept tasks at 1 and the forgotten one at −value."""
    return tuple(-value if i == forget else (1.0 if forget is not None else value) for i in range(k))


def merged_forward(
    model: nn.Module, task_vectors: Sequence[TaskVector], call: Callable[[Callable[..., torch.Tensor]], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """λ ↦ call(run), where ``run(*args, **kwargs)`` is the forward pass of Ψ⁽⁰⁾ + Σ λᵢ ΔΨᵢ, differentiable in λ
    (``torch.func.functional_call``); ``model`` is Ψ⁽⁰⁾ and is not changed."""
    base = {k: v.detach() for k, v in model.state_dict().items()}
    keys = list(dict.fromkeys(k for tv in task_vectors for k in tv.deltas))

    def forward(lam: torch.Tensor) -> torch.Tensor:
        params = dict(base)
        for key in keys:
            params[key] = base[key] + sum(
                lam[i] * tv.deltas[key] for i, tv in enumerate(task_vectors) if key in tv.deltas
            )
        return call(lambda *args, **kwargs: functional_call(model, params, args, kwargs, strict=False))

    return forward


def entropy(outputs: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy: of σ(f) for margins (n,), of the softmax for logits (n, C)."""
    if outputs.ndim == 1:
        p = torch.sigmoid(outputs)
        return -(
            p * torch.nn.functional.logsigmoid(outputs) + (1 - p) * torch.nn.functional.logsigmoid(-outputs)
        ).mean()
    logp = torch.log_softmax(outputs, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def adamerging(
    forward: Callable[[torch.Tensor], torch.Tensor], k: int, steps: int, lr: float = 0.05, init: float = FIXED_DEFAULT
) -> tuple[float, ...]:
    """Task-wise AdaMerging: λ (k,) minimising the entropy of ``forward(λ)`` (outputs on unlabelled inputs), Adam
    from λ = ``init`` for ``steps`` steps. Costs ``steps`` forward and backward passes over the inputs."""
    lam = torch.full((k,), float(init), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([lam], lr=lr)
    for _ in range(steps):
        loss = entropy(forward(lam))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuple(float(x) for x in lam.detach())


def cma_search(
    objective: Callable[[np.ndarray], float], x0: Sequence[float], budget: int, sigma: float = 0.5, seed: int = 1
) -> tuple[tuple[float, ...], int]:
    """CMA-ES minimising ``objective`` (e.g. minus a validation score) from ``x0`` with at most ``budget``
    evaluations (the population shrinks to fit a small budget); returns (the best λ evaluated, evaluations)."""
    import cma  # a dependency of the chapters, not of the rest of the package

    x0 = np.asarray(x0, dtype=float)
    if x0.size < 2:
        raise ValueError("CMA-ES needs at least two coefficients to search")
    if budget < 1:
        raise ValueError(f"the budget must be ≥ 1 evaluation, got {budget}")
    popsize = max(2, min(4 + int(3 * np.log(x0.size)), budget))
    es = cma.CMAEvolutionStrategy(x0, sigma, {"seed": seed, "popsize": popsize, "verbose": -9, "maxfevals": budget})
    best, best_f, used = x0, np.inf, 0
    while used < budget:
        xs = es.ask()[: budget - used]
        fs = [float(objective(np.asarray(x))) for x in xs]
        used += len(xs)
        i = int(np.argmin(fs))
        if fs[i] < best_f:
            best, best_f = np.asarray(xs[i]), fs[i]
        if len(xs) < popsize:
            break
        es.tell(xs, fs)
    return tuple(float(x) for x in best), used
