"""One run of the vision case study (fine-tunes, the Table 1 sweeps, the Table 2 grid), what it costs, and the
selections the chapter judges.

A run (one of the chapter's ``seeds``) seeds the parity head, the fine-tunes and their training colours
(``tvutils.vision.seeds``); Ψ⁽⁰⁾'s encoder is shared by all runs. Every fine-tune and every sweep is cached on
disk under a key of its full recipe (``tvutils.vision.cache``), so a run that stops resumes where it was.
Scores are expected accuracies over each task's colour and label draws (``evaluation.expected_accuracy``),
selected on one half of the test digits and scored on the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import ViTForImageClassification

from ..chapter.paths import cache_dir
from ..editing.inplace import InPlaceMerge
from ..editing.similarity import output_alpha
from ..editing.task_vector import TaskVector
from . import evaluation as ve
from . import seeds
from .cache import cache_key, cached_tensors, device_name
from .data import ColourTask, make_task_data
from .model import encoder_keys, with_binary_head
from .training import FineTuneRecipe, fine_tune_cached

TABLE1_PAIRS = ("irrelevant", "aligned", "contradictory")


def digest(array: np.ndarray | torch.Tensor) -> str:
    """A short SHA-256 of an array's bytes (names the digits a result was computed on, in cache keys)."""
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:16]


@dataclass
class RunResult:
    """What one run measured: margins (2, N) on both colourings of the test digits, per model and per merge."""

    run: int
    models: dict[str, torch.Tensor]  # "Ψ⁽⁰⁾" and each task: (2, N)
    table1: dict[str, torch.Tensor]  # pair → (len(lambdas), 2, N): Ψ⁽⁰⁾ + ΔΨ_T1 + λ ΔΨ_T2
    grid: torch.Tensor  # (len(grid), 2, n_ood): Ψ⁽⁰⁾ + λ₁ ΔΨ_T1 + λ₂ ΔΨ_irrelevant
    task_vectors: dict[str, TaskVector]
    from_cache: int  # how many of the fine-tunes and sweeps were read from the cache


def run_case_study(
    run: int,
    pretrained: ViTForImageClassification,
    pretrained_key: str,
    tasks: dict[str, ColourTask],
    train_images: np.ndarray,
    train_digits: np.ndarray,
    test_pair: torch.Tensor,
    lambdas: np.ndarray,
    grid: list[tuple[float, float]],
    n_ood: int,
    recipe: FineTuneRecipe,
    device: str = "cpu",
    batch_size: int = 1000,
    directory: Path | None = None,
) -> RunResult:
    """Fine-tune every task of ``tasks`` from Ψ⁽⁰⁾ (with run ``run``'s head), then sweep Table 1 and the Table 2
    grid; ``test_pair`` is (2, N, 3, 28, 28) from ``data.both_colours``."""
    directory = Path(directory) if directory is not None else cache_dir("vit", "runs")
    base = with_binary_head(pretrained, seed=seeds.head(run)).to(device)
    data_doc = {"pretrained": pretrained_key, "head": seeds.head(run), "digits": digest(train_images)}
    models, docs, hits = {}, {}, 0
    for name, task in tasks.items():
        task = replace(task, seed=seeds.train_draws(run, name))
        train = make_task_data(train_images, train_digits, task)
        docs[name] = {**data_doc, "task": asdict(task)}
        ft = replace(recipe, seed=seeds.finetune(run, name))
        models[name], cached = fine_tune_cached(base, train.x, train.y, ft, docs[name], directory)
        docs[name]["recipe"] = asdict(ft)
        hits += cached
    vectors = {k: TaskVector.from_models(base, m, include=encoder_keys) for k, m in models.items()}
    sweep_doc = {"models": docs, "test": digest(test_pair), "batch": batch_size, "device": device_name(device)}

    def sweep(name: str, pair: tuple[str, str], coefficients: list, x: torch.Tensor) -> torch.Tensor:
        key = cache_key(f"sweep-{name}", {**sweep_doc, "pair": pair, "coefficients": coefficients})
        with InPlaceMerge(base, [vectors[pair[0]], vectors[pair[1]]]) as merger:  # base is restored after
            out, cached = cached_tensors(
                directory, key, lambda: {"m": ve.sweep_colour_margins(merger, coefficients, x, batch_size, name)}
            )
        return out["m"], cached

    table1 = {}
    for rel in TABLE1_PAIRS:
        table1[rel], cached = sweep(f"table1-{rel}", ("T1", rel), [(1.0, float(lam)) for lam in lambdas], test_pair)
        hits += cached
    ood, cached = sweep("table2", ("T1", "irrelevant"), [tuple(map(float, c)) for c in grid], test_pair[:, :n_ood])
    margins = {"Ψ⁽⁰⁾": ve.colour_margins(base, test_pair, batch_size)}
    margins.update({k: ve.colour_margins(m, test_pair, batch_size) for k, m in models.items()})
    return RunResult(run, margins, table1, ood, vectors, hits + cached)


def output_alphas(result: RunResult, pairs: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Output-space α̂ of each named pair: the cosine, over both colourings of every test digit, of the two
    models' margin changes relative to Ψ⁽⁰⁾ (colour and shape vary independently on these inputs)."""
    base = result.models["Ψ⁽⁰⁾"].reshape(-1)
    change = {k: m.reshape(-1) - base for k, m in result.models.items()}
    return {name: float(output_alpha(change[a], change[b], dim=0)) for name, (a, b) in pairs.items()}


def table1_choice(
    sweep: torch.Tensor,
    parity: torch.Tensor,
    t1: ColourTask,
    t2: ColourTask,
    single_1: torch.Tensor,
    single_2: torch.Tensor,
    lambdas: np.ndarray,
    use: str,
    tolerance: float,
    select: torch.Tensor | None,
    score: torch.Tensor | None,
) -> dict[str, float]:
    """ "Best λ" for ``use`` chosen on the digits ``select`` and scored on ``score`` (None: all digits): λ, both
    tasks' accuracy and change vs their single-task models, T2 at λ = 0 and what negation gained over it."""

    def acc(m: torch.Tensor, task: ColourTask, mask: torch.Tensor | None) -> np.ndarray:
        return ve.expected_accuracy(m, parity, task.p_colour, task.p_parity, mask)

    ref_select = acc(single_1[None], t1, select)[0]
    i = ve.choose_lambda(use, acc(sweep, t1, select), acc(sweep, t2, select), lambdas, ref_select, tolerance)
    a1, a2 = acc(sweep, t1, score), acc(sweep, t2, score)
    r1, r2 = acc(single_1[None], t1, score)[0], acc(single_2[None], t2, score)[0]
    zero = int(np.argmin(np.abs(np.asarray(lambdas))))
    return {"lambda": float(lambdas[i]), "T1": a1[i], "T2": a2[i], "d1": a1[i] - r1, "d2": a2[i] - r2,
            "T2 at 0": a2[zero], "negation gain": a2[zero] - a2[i]}  # fmt: skip


def ood_choice(
    grid_margins: torch.Tensor,
    grid: list[tuple[float, float]],
    parity: torch.Tensor,
    design: ColourTask,
    select: torch.Tensor | None,
    score: torch.Tensor | None,
) -> dict[str, object]:
    """The best (λ₁, λ₂) of the grid on ``select``, scored on ``score`` against Ψ*_T1 = (1, 0) and Ψ*_T2 = (0, 1)."""
    points = [tuple(round(float(v), 9) for v in c) for c in grid]
    if (1.0, 0.0) not in points or (0.0, 1.0) not in points:
        raise ValueError("the grid must contain (1, 0) and (0, 1), the single-task models")
    sel = ve.expected_accuracy(grid_margins, parity, design.p_colour, design.p_parity, select)
    acc = ve.expected_accuracy(grid_margins, parity, design.p_colour, design.p_parity, score)
    best, one, two = int(np.argmax(sel)), points.index((1.0, 0.0)), points.index((0.0, 1.0))
    return {"lambdas": points[best], "best": acc[best], "T1 alone": acc[one], "T2 alone": acc[two],
            "gain": acc[best] - max(acc[one], acc[two])}  # fmt: skip


# ---- what a run costs --------------------------------------------------------------------------------------
def vit_macs(image_size: int, patch_size: int, hidden: int, layers: int, mlp: int) -> float:
    """Multiply-adds of one ViT forward pass: patch embedding, then per layer the projections, the MLP and the
    attention products (e.g. ViT-S/16 at 224 px ≈ 4.6 G, timm's model card figure)."""
    patches = (image_size // patch_size) ** 2
    tokens = patches + 1
    per_layer = tokens * (4 * hidden * hidden + 2 * hidden * mlp) + 2 * tokens * tokens * hidden
    return float(patches * 3 * patch_size**2 * hidden + layers * per_layer)


def work(
    seeds_: int, tasks: int, train_images: int, epochs: float, pairs: int, lambdas: int, n_test: int,
    grid: int, n_ood: int,
) -> dict[str, int]:  # fmt: skip
    """Images through the network: training passes (forward + backward) and forward-only passes."""
    per_seed_fwd = 2 * (pairs * lambdas * n_test + grid * n_ood + (tasks + 1) * n_test)  # ×2: both colourings
    return {
        "training passes (forward + backward)": int(round(seeds_ * tasks * train_images * epochs)),
        "forward passes": int(seeds_ * per_seed_fwd),
    }


def time_estimate(passes: dict[str, int], macs: float, tflops: float) -> float:
    """Seconds at ``tflops`` effective TFLOP/s: a forward pass is 2·MACs FLOPs, a training pass 3× that."""
    flops = 2 * macs * (3 * passes["training passes (forward + backward)"] + passes["forward passes"])
    return flops / (tflops * 1e12)


def mean_text(values: list[float] | np.ndarray, digits: int = 1) -> str:
    """Mean over seeds with its 95 % t interval, e.g. '93.2 [91.0, 95.4]' (just the value for one seed)."""
    from ..chapter.verdict import mean_interval

    m, lo, hi = mean_interval(values)
    return f"{m:.{digits}f}" if np.isnan(lo) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def mean_interval_low(values: list[float] | np.ndarray) -> float:
    """The lower end of the 95 % t interval of the mean over seeds (NaN for one seed)."""
    from ..chapter.verdict import mean_interval

    return mean_interval(values)[1]
