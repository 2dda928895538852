"""The unlearning experiment's bookkeeping: seeds by role, intervals over seeds and over passages, cached scores,
and the work a run will do (with its time on a T4 and an A100) before it starts.

Seeds. Every fine-tune gets its generator seed from its role (``seed_for``): Ψ⁽⁰⁾′ (``"base"``) is one model for
every run; run r's task vector ΔΨ_A (``"forget"``) and its single-book fine-tunes Ψ*_T of α̂ (``"alpha"``) have
seeds of their own, so adding a run or a book never moves another one's numbers.

Intervals. A number the verdict judges is measured for every run (seed) on the same passages, so it has two
sources of spread: the seeds (a 95 % Student-t interval of the per-seed values) and the passages (a percentile
bootstrap over passages of the seed-averaged scores). ``OverSeeds.interval`` is the envelope of the two (the
lower of the two lower ends, the higher of the two upper ends), and a rule on the interval must hold at its
least favourable end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..chapter.cost import DEVICES, Device  # noqa: F401  (Device: re-exported, part of this module's API)
from ..chapter.paths import atomic_write_bytes, cache_dir
from ..chapter.runtime import fingerprint
from ..chapter.stats import bootstrap_mean, difference_of_relative_changes, relative_change
from ..chapter.verdict import mean_interval
from ..editing.inplace import task_arithmetic
from ..editing.task_vector import TaskVector
from .generation import final_hidden_states, output_similarity, score_passages
from .models import LowerPass, decoder_blocks

ROLES = {"base": 0, "forget": 1, "alpha": 10}  # offsets inside a run's block of 1000 seeds
BOOKS = "ABC"


def seed_for(role: str, run: int = 0, book: str = "") -> int:
    """The generator seed of a fine-tune: ``base`` (Ψ⁽⁰⁾′, the same for every run), ``forget`` (ΔΨ_A of run
    ``run``) or ``alpha`` (Ψ*_book of run ``run``, book ∈ A, B, C)."""
    if role not in ROLES:
        raise ValueError(f"unknown seed role {role!r}; use one of {list(ROLES)}")
    if run < 0:
        raise ValueError(f"runs are numbered from 0, got {run}")
    if role == "base":
        return 0
    if role == "alpha":
        if book not in BOOKS or not book:
            raise ValueError(f"an alpha fine-tune needs a book in {list(BOOKS)}, got {book!r}")
        return 1000 * run + ROLES[role] + BOOKS.index(book)
    return 1000 * run + ROLES[role]


# ---- intervals over seeds and over passages ---------------------------------------------------------------
@dataclass(frozen=True)
class OverSeeds:
    """A number measured for every seed: the per-seed values, their mean, and three 95 % intervals."""

    per_seed: list[float]
    mean: float
    seeds: tuple[float, float]  # Student t over the per-seed values (NaN for one seed)
    passages: tuple[float, float]  # bootstrap over passages of the seed-averaged scores
    interval: tuple[float, float]  # the envelope of the two

    def text(self, scale: float = 1.0, fmt: str = "+.3f") -> str:
        """'mean [lo, hi]' (the envelope), then the per-seed values, e.g. for a table."""
        lo, hi = self.interval
        seeds = ", ".join(format(scale * x, fmt) for x in self.per_seed)
        return f"{scale * self.mean:{fmt}} [{scale * lo:{fmt}}, {scale * hi:{fmt}}] (seeds: {seeds})"


def envelope(*intervals: tuple[float, float]) -> tuple[float, float]:
    """The smallest interval containing every given interval whose ends are numbers (NaN intervals are skipped)."""
    kept = [(lo, hi) for lo, hi in intervals if not (math.isnan(lo) or math.isnan(hi))]
    if not kept:
        return float("nan"), float("nan")
    return min(lo for lo, _ in kept), max(hi for _, hi in kept)


def _over_seeds(per_seed: Sequence[float], passages: tuple[float, float]) -> OverSeeds:
    m, lo, hi = mean_interval(per_seed)
    values = [float(x) for x in per_seed]
    return OverSeeds(values, float(np.mean(values)), (lo, hi), passages, envelope((lo, hi), passages))


@contextlib.contextmanager
def _undefined_is_nan() -> Iterator[None]:
    """A change relative to a mean of 0 (a model that recites nothing) is NaN, silently: the NaN is the result."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        yield


def _per_seed(after: np.ndarray) -> np.ndarray:
    a = np.asarray(after, dtype=float)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"scores after the edit must be (seeds, passages), got shape {a.shape}")
    return a


def change_over_seeds(before: Sequence[float], after: np.ndarray, n_boot: int = 2000, seed: int = 0) -> OverSeeds:
    """Relative change mean(after)/mean(before) − 1 per seed; ``before`` (N,) is one model, ``after`` (S, N)."""
    b, a = np.asarray(before, dtype=float), _per_seed(after)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{b.shape[0]} passages before the edit, {a.shape[1]} after")
    with _undefined_is_nan():
        per_seed = a.mean(axis=1) / b.mean() - 1
        _, lo, hi = relative_change(b, a.mean(axis=0), n_boot, seed)
    return _over_seeds(per_seed, (lo, hi))


def gap_over_seeds(
    before_1: Sequence[float],
    after_1: np.ndarray,
    before_2: Sequence[float],
    after_2: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
) -> OverSeeds:
    """(relative change of book 1) − (relative change of book 2) per seed; each book's passages resampled apart."""
    a1, a2 = _per_seed(after_1), _per_seed(after_2)
    if a1.shape[0] != a2.shape[0]:
        raise ValueError(f"{a1.shape[0]} seeds for the first book, {a2.shape[0]} for the second")
    c1 = change_over_seeds(before_1, a1, n_boot, seed).per_seed
    c2 = change_over_seeds(before_2, a2, n_boot, seed).per_seed
    with _undefined_is_nan():
        _, lo, hi = difference_of_relative_changes(before_1, a1.mean(0), before_2, a2.mean(0), n_boot, seed)
    return _over_seeds(np.subtract(c1, c2), (lo, hi))


def mean_over_seeds(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> OverSeeds:
    """The mean over passages per seed of ``values`` (S, N) (e.g. a per-passage α̂ difference)."""
    v = _per_seed(values)
    _, lo, hi = bootstrap_mean(v.mean(axis=0), n_boot, seed)
    return _over_seeds(v.mean(axis=1), (lo, hi))


# ---- cached results ----------------------------------------------------------------------------------------
RESULTS_VERSION = 1  # of generation.score_passages / final_hidden_states: raise it when they compute otherwise


def cache_depends(books: Mapping[str, Any], n: int, length: int, prompt_len: int, layers: int) -> dict[str, Any]:
    """What every cache key of the unlearning chapter holds (its fine-tunes' and its scores'): the books' texts, the
    windows (n trained windows a book of ``length`` tokens, split alternately, the first ``prompt_len`` the
    prompt) and the trained top ``layers``. The chapter "Choosing λ" builds the same keys to read its caches."""
    return {"texts": {k: b.digest() for k, b in books.items()}, "n": n, "L": length, "P": prompt_len,
            "split": "alternate", "layers": layers}  # fmt: skip


def results_cache_path(model_name: str, kind: str, **depends: Any) -> Path:
    """``<cache>/lm/<model>/results/<kind>-<hash>.npz``, the hash covering what the result ``depends`` on (the
    fine-tunes' cache names, λ, windows …), the code version and the runtime ``fingerprint()``."""
    doc = json.dumps({"code": RESULTS_VERSION, "runtime": fingerprint(), **depends}, sort_keys=True, default=str)
    name = f"{kind}-{hashlib.sha256(doc.encode()).hexdigest()[:16]}.npz"
    return cache_dir("lm", model_name.replace("/", "--"), "results") / name


def cached_arrays(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (an .npz read without pickle), computed with ``compute()`` and written
    atomically when absent, so that an interrupted run resumes where it stopped."""
    path = Path(path)
    if not path.is_file():
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def cached_scores(
    model: nn.Module,
    tokenizer,
    model_name: str,
    windows: torch.Tensor,
    prompt_len: int,
    batch_size: int,
    lower: LowerPass | None = None,
    /,
    **depends: Any,
) -> dict[str, np.ndarray]:
    """``{"rouge", "nll"}`` per window (``generation.score_passages``) of the model as it is now, cached at
    ``results_cache_path(model_name, "scores", **depends)``: ``depends`` must name what made the model (any names,
    ``model=`` included: the arguments before them are positional only)."""
    path = results_cache_path(model_name, "scores", **depends)

    def compute() -> dict[str, np.ndarray]:
        rouge, nll = score_passages(model, tokenizer, windows, prompt_len, batch_size, lower)
        return {"rouge": rouge, "nll": nll}

    return cached_arrays(path, compute)


# ---- the work of a run, and its time on a T4 and an A100 ---------------------------------------------------
# Device and DEVICES (T4, A100, one CPU core; assumed throughputs): one definition, in tvutils.chapter.cost


@dataclass(frozen=True)
class Sizes:
    """Parameter counts of the parts of the model a run uses (the embedding is a lookup, not counted)."""

    lower: int  # blocks 0 … first_top − 1 (frozen, run once per window)
    top: int  # the trained blocks
    head: int  # the output layer (tied or not)

    @classmethod
    def of(cls, model: nn.Module, train_layers: int) -> Sizes:
        blocks = decoder_blocks(model)
        first_top = len(blocks) - train_layers
        count = lambda ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
        return cls(count(blocks[:first_top]), count(blocks[first_top:]), model.get_output_embeddings().weight.numel())


def _row(stage: str, what: str, sizes: Sizes, *, lower=0, top=0, head=0, backward=0, decode=(0, 0)) -> dict:
    """One stage's work: tokens through the lower/top blocks and the head (forward), tokens back through the top
    blocks and the head (backward: input gradients only, the base weights are frozen: about one forward), and
    ``decode`` = (tokens, steps): tokens generated one step at a time through the whole model, in ``steps``
    batched steps (each reads every weight once)."""
    generated, steps = decode
    everything = sizes.lower + sizes.top + sizes.head
    flops = 2 * (sizes.lower * lower + sizes.top * top + sizes.head * head)
    flops += 2 * (sizes.top + sizes.head) * backward + 2 * everything * generated
    return {"stage": stage, "passes": what, "forward tokens": lower + top, "backward tokens": backward,
            "generated tokens": generated, "TFLOP": flops / 1e12, "weight reads (GB)": 4 * everything * steps / 1e9,
            "_flops": flops, "_bytes": 4 * everything * steps}  # fmt: skip


def work_plan(sizes: Sizes, P: Any) -> pd.DataFrame:
    """What the chapter's run with parameters ``P`` computes, stage by stage, and its time on each of ``DEVICES``.

    Reads from P: n_passages, prompt_len, continuation_len, base_epochs, forget_epochs, alpha_epochs, seeds,
    lambdas, batch_size, eval_batch_size.
    """
    n, L, C = P.n_passages, P.prompt_len + P.continuation_len, P.continuation_len
    N, S, e = 3 * n, len(P.seeds), P.eval_batch_size
    batches = lambda k: math.ceil(k / P.batch_size)  # noqa: E731

    def scoring(stage: str, windows: int, count: int) -> dict:
        return _row(stage, f"{count} × score {windows} windows (top pass, then {C} greedy tokens)", sizes,
                    top=count * windows * L, head=count * windows * (C + 1),
                    decode=(count * (C - 1) * windows, count * (C - 1) * math.ceil(windows / e)))  # fmt: skip

    def training(stage: str, windows: int, epochs: int, count: int) -> dict:
        tokens = count * epochs * windows * L
        what = f"{count} × {epochs} epochs × {batches(windows)} steps of {P.batch_size} windows (forward + backward)"
        return _row(stage, what, sizes, top=tokens, head=tokens, backward=tokens)

    grid = [lam for lam in P.lambdas if lam not in (0.0, -1.0)]
    rows = [
        _row("lower blocks", f"{2 * N} windows (trained and held-out) once", sizes, lower=2 * N * L),
        scoring("Ψ⁽⁰⁾ scored", N, 1),
        training("α̂: Ψ*_A, Ψ*_B, Ψ*_C", n, P.alpha_epochs, 3 * S),
        _row("α̂: last hidden states", f"{1 + 3 * S} × top pass over {N} windows", sizes, top=(1 + 3 * S) * N * L),
        training("Ψ⁽⁰⁾′ (A + B + C)", N, P.base_epochs, 1),
        scoring("λ = 0 scored (trained, held-out)", N, 2),
        training("ΔΨ_A", n, P.forget_epochs, S),
        scoring(f"λ grid {grid} (first seed), trained", N, len(grid)),
        scoring("λ = −1 scored, every seed (trained, held-out)", N, 2 * S),
        _row("λ = +1, NLL on A", f"{S} × top pass over {n} windows", sizes, top=S * n * L, head=S * n * (C + 1)),
    ]
    table = pd.DataFrame(rows)
    for d in DEVICES:
        seconds = np.maximum(table["_flops"] / d.flops, table["_bytes"] / d.bandwidth)
        table[f"minutes on {d.name}"] = seconds / 60
    table = table.drop(columns=["_flops", "_bytes"])
    table.loc[len(table)] = {"stage": "total", "passes": "", **table.drop(columns=["stage", "passes"]).sum().to_dict()}
    return table.set_index("stage")


# ---- α̂ between single-book fine-tunes ----------------------------------------------------------------------
def pair_similarities(
    model: nn.Module,
    ids: torch.Tensor,
    reference: torch.Tensor,
    task_vectors: dict[str, TaskVector],
    batch_size: int = 16,
    inputs: torch.Tensor | None = None,
    first_top: int = 0,
) -> dict[str, np.ndarray]:
    """Per window, α̂ of every pair of fine-tunes Ψ⁽⁰⁾ + ΔΨ_k (``generation.output_similarity`` against the
    ``reference`` last hidden states of Ψ⁽⁰⁾), keyed by the pair's names joined ('AB', 'AC', 'BC')."""
    states = {}
    for name, tv in task_vectors.items():
        with task_arithmetic(model, tv, 1.0):
            states[name] = final_hidden_states(model, ids, batch_size, inputs, first_top)
    return {a + b: output_similarity(reference, states[a], states[b]) for a, b in combinations(sorted(states), 2)}
