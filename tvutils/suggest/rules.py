"""From α̂ or γ̂ to a recommended λ, with the region it lies in and whether the theorem's guarantee holds.

The theorems [Li et al., ICLR 2025] give sufficient regions, not points (the regions themselves are those of
``tvutils.taskvec.theorems``). How each rule picks its point:

* **add** (Theorem 1: α ≥ 0 and λ ≥ 1 − α + β): the guard λ = max(1, 1 − α̂ + β) for every task after the first
  (against its least aligned predecessor), and a flag saying whether the premise α ≥ 0 holds. λ = 1 is hard to
  beat and the theorem does not say that a larger λ is better, so nothing else is promised.
* **forget** (Theorem 2: α ≤ 0 and −C/α² ≤ λ ≤ 0): the theorem gives a range; the rule takes the point where the
  forgotten task's margin, Σ α̂ₖ + λ to first order in units of what fine-tuning learned (the reading under
  Theorem 1's edge, where T2's margin α + λ reaches 1 + β), is pushed to −m: λ = −(m + Σₖ α̂ₖ), clipped to the
  range and to |λ|β ≤ c. The literal mirror m = 1 + β overshoots (the merged model is not linear in λ: negating
  the attention weights stops it reading T2 at all); m is calibrated once on the theory model (``FORGET_MARGIN``).
  Aligned tasks (α̂ > 0) are outside the theorem: the same point is returned with the flag off, since
  forgetting then costs the kept tasks.
* **target** (Theorem 3: Σλᵢγᵢ ≥ 1 + c, Σλᵢγᵢ² ≥ 1 + c, |λᵢ|β ≤ c): the point of the region closest to the
  origin, exactly (two linear constraints: one or both are active at the optimum).

**Constants** (``Constants.literal``): β = 1/d with d the model's width (Θ(1/d) read with constant 1), c = 0.1
(the value chapter 03 draws) and C = 1 for Theorem 2's −Θ(α⁻²), read off the theory and fitted on nothing; the
forget rule's m, calibrated on theory-model runs that are never scored (``FORGET_MARGIN``), and used unchanged on
every other model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..taskvec.theorems import theorem1_region, theorem2_region, theorem3_region
from . import GOALS  # noqa: F401  (re-exported: the goals the rules serve)
from .estimate import Estimate

DIGITS = 4  # λ is rounded to this many decimals, as the command line prints it
# m of the forget rule, from ``tvutils.suggest.theory.calibrate_forget_margin`` on the theory model's calibration runs
# 90 and 91 at α ∈ {−0.6, −0.2, 0.2, 0.6}, candidates 0, 0.1, …, 1.5 (never a run or α the chapter scores; the
# chapter "Choosing λ" repeats the calibration and checks that it gives this value)
FORGET_MARGIN = 0.25


@dataclass(frozen=True)
class Constants:
    """The theorems' Θ(·) constants, as the rules read them."""

    beta: float  # β = Θ(1/d)
    c: float = 0.1  # Theorem 3's c ∈ (0, 1)
    negation: float = 1.0  # C in Theorem 2's lower end −C/α²
    forget_margin: float | None = None  # m of the forget rule λ = −(m + Σα̂); None: 1 + β (the literal mirror)

    @property
    def margin(self) -> float:
        return 1.0 + self.beta if self.forget_margin is None else self.forget_margin

    @classmethod
    def literal(cls, width: int, forget_margin: float | None = FORGET_MARGIN) -> Constants:
        """β = 1/width, c = 0.1, C = 1: the theory's constants read literally; the forget rule's margin m from the
        theory model's calibration (``FORGET_MARGIN``; None: the literal mirror 1 + β)."""
        if width < 1:
            raise ValueError(f"the width d must be ≥ 1, got {width}")
        return cls(beta=1.0 / width, forget_margin=forget_margin)


@dataclass
class Suggestion:
    """A recommended λ per task vector, the region it lies in, and why."""

    goal: str
    lambdas: tuple[float, ...]
    region: str
    relation: str
    reason: str
    guaranteed: bool  # the theorem's premise holds for the estimates, and λ lies in its region
    estimates: dict[str, Estimate] = field(default_factory=dict)
    constants: Constants | None = None

    def __post_init__(self) -> None:
        self.lambdas = tuple(round(float(x), DIGITS) + 0.0 for x in self.lambdas)  # as printed; no −0


def _within(a: Estimate, lo: float, hi: float) -> float:
    """α̂ moved into [lo, hi] where its interval reaches there (the value at which a region is judged)."""
    return float(np.clip(a.value, max(lo, a.low), min(hi, a.high))) if a.low <= hi and a.high >= lo else a.value


def _pair_name(i: int, j: int) -> str:
    return f"{i + 1},{j + 1}"


def suggest_add(alphas: dict[tuple[int, int], Estimate], k: int, constants: Constants) -> Suggestion:
    """Addition of k task vectors. ``alphas[(i, j)]`` (i < j, 0-based) is α̂ between tasks i and j."""
    if k < 2:
        raise ValueError("addition needs at least two task vectors")
    lambdas, worst = [1.0], {}
    for j in range(1, k):
        i = min(range(j), key=lambda i: alphas[(i, j)].value)  # the least aligned predecessor
        worst[j] = alphas[(i, j)]
        lambdas.append(max(1.0, 1.0 - worst[j].value + constants.beta))
    # the premise is judged on the interval: one that contains 0 is read at α = 0, inside the premise
    inside = [
        bool(theorem1_region([_within(a, 0.0, 1.0)], [lambdas[j]], constants.beta)[0, 0]) for j, a in worst.items()
    ]
    premise = all(a.relation != "contradictory" for a in alphas.values())
    relation = ", ".join(f"T{i + 1}–T{j + 1} {a.relation}" for (i, j), a in sorted(alphas.items()))
    region = "; ".join(f"λ{j + 1} ≥ 1 − α̂ + β = {1 - a.value + constants.beta:.3f}" for j, a in worst.items())
    if premise and all(inside):
        reason = "Theorem 1 covers these tasks (α ≥ 0): λ = 1 or the edge 1 − α̂ + β, whichever is larger."
    else:
        reason = (
            "A contradictory pair (α̂ < 0) is outside Theorem 1: addition is expected to cost the tasks whatever λ; "
            "the guard is returned without a guarantee."
        )
    estimates = {f"α̂[{_pair_name(i, j)}]": a for (i, j), a in alphas.items()}
    return Suggestion("add", tuple(lambdas), region, relation, reason, premise and all(inside), estimates, constants)


def forget_point(alphas: Sequence[float], constants: Constants) -> tuple[float, float]:
    """(λ, lower end of the allowed range) for forgetting: −(m + Σ α̂ₖ) clipped to [max(−C/max α̂², −c/β), 0]."""
    a = np.asarray(alphas, dtype=float)
    top = float(np.max(a**2)) if a.size else 0.0
    lower = max(-constants.negation / top if top > 0 else -np.inf, -constants.c / constants.beta)
    return float(np.clip(-(constants.margin + a.sum()), lower, 0.0)), lower


def suggest_forget(alphas: Sequence[Estimate], forget: int, k: int, constants: Constants) -> Suggestion:
    """Forget task ``forget`` (0-based) of k, keeping the others at λ = 1; ``alphas`` between each kept task and
    the forgotten one, in the order of the kept tasks."""
    if not 0 <= forget < k or len(alphas) != k - 1:
        raise ValueError(f"forget must index one of {k} tasks, with one α̂ per kept task ({k - 1}), got {len(alphas)}")
    lam, lower = forget_point([a.value for a in alphas], constants)
    lambdas = [1.0] * k
    lambdas[forget] = lam
    inside = all(bool(theorem2_region([_within(a, -1.0, 0.0)], [lam], constants.negation)[0, 0]) for a in alphas)
    premise = all(a.relation != "aligned" for a in alphas)
    kept = [t for t in range(k) if t != forget]
    relation = ", ".join(f"T{t + 1}–T{forget + 1} {a.relation}" for t, a in zip(kept, alphas))
    region = f"{lower:.3f} ≤ λ{forget + 1} ≤ 0"
    if premise and inside:
        reason = (
            f"Theorem 2 covers these tasks (α ≤ 0): λ = {lam:.3f} mirrors the forgotten task's margin "
            "and keeps the others."
        )
        if lam == 0.0:
            reason = "The kept tasks already oppose the forgotten one (α̂ ≤ −m): λ = 0 forgets it (Theorem 2)."
    else:
        reason = (
            "An aligned kept task (α̂ > 0) is outside Theorem 2: forgetting will cost it; "
            "λ is the same first-order point, without a guarantee."
        )
    estimates = {f"α̂[{_pair_name(t, forget)}]": a for t, a in zip(kept, alphas)}
    return Suggestion("forget", tuple(lambdas), region, relation, reason, premise and inside, estimates, constants)


def theorem3_point(gammas: Sequence[float], constants: Constants) -> np.ndarray | None:
    """The point of Theorem 3's region closest to the origin (None if the region is empty)."""
    g = np.asarray(gammas, dtype=float)
    t, box = 1.0 + constants.c, constants.c / constants.beta
    A = np.stack([g, g**2])  # rows: the two constraints a·λ ≥ t
    candidates = [t * a / (a @ a) for a in A if a @ a > 0]
    gram = A @ A.T
    if abs(np.linalg.det(gram)) > 1e-12 * max(1.0, float(np.trace(gram)) ** 2):
        candidates.append(A.T @ np.linalg.solve(gram, np.full(2, t)))
    feasible = [x for x in candidates if (A @ x >= t - 1e-9).all() and (np.abs(x) <= box + 1e-9).all()]
    return min(feasible, key=lambda x: float(x @ x)) if feasible else None


def suggest_target(gammas: Sequence[Estimate], constants: Constants, sources: Estimate | None = None) -> Suggestion:
    """Out of domain: λ from γ̂ (one per source); ``sources``: α̂ between two sources (Theorem 3 wants them
    orthogonal)."""
    point = theorem3_point([g.value for g in gammas], constants)
    t = 1 + constants.c
    region = f"Σλᵢγ̂ᵢ ≥ {t:g}, Σλᵢγ̂ᵢ² ≥ {t:g}, |λᵢ| ≤ c/β = {constants.c / constants.beta:.3g}"
    relation = ", ".join(f"T′–T{i + 1} {g.relation}" for i, g in enumerate(gammas))
    estimates = {f"γ̂[{i + 1}]": g for i, g in enumerate(gammas)}
    if sources is not None:
        estimates["α̂[sources]"] = sources
    if point is None:
        reason = "No λ reaches Theorem 3's region for these γ̂ (T′ is not covered by the sources): no merge is promised."
        return Suggestion("target", tuple(0.0 for _ in gammas), region, relation, reason, False, estimates, constants)
    inside = True
    if len(gammas) == 2:
        g = [x.value for x in gammas]
        inside = bool(theorem3_region(g, [point[0]], [point[1]], constants.c, constants.beta)[0, 0])
    orthogonal = sources is None or sources.relation == "irrelevant"
    reason = "Theorem 3: the point of its region closest to the origin."
    if not orthogonal:
        reason += " The sources are not orthogonal (α̂ ≠ 0), so the theorem's premise does not hold."
    return Suggestion("target", tuple(float(x) for x in point), region, relation, reason, inside and orthogonal,
                      estimates, constants)  # fmt: skip
