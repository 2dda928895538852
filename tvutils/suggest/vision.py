"""The ViT workload of the chapter "Choosing λ": chapter 07's runs (``tvutils.vision.experiments.run_case_study``,
read from its cache), every method's λ for Table 1 (add and forget, T1 with each second task) and Table 2 (the
out-of-domain target), scored like the theory model.

Halves: chapter 07's (``half_masks`` seeded by ``seeds.halves(run)``): the grid chooses on half A and everything
is scored on half B. The probe: ``n_probe`` digits of half A, drawn in colour by each task's rule (``probe_rows``; inputs
only, no labels), and for the target ``n_probe`` other digits with the target's labels; the search's validation
set: ``n_probe`` more digits, scored by expectation. For Table 2, whose grid covers only the first ``n_ood``
test digits, these are drawn from the digits after them (never scored there). Output changes on the probe
are read off the run's margins on both colourings (the same numbers a forward pass of the probe gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import ViTForImageClassification

from ..editing.inplace import InPlaceMerge
from ..editing.task_vector import TaskVector
from ..vision import evaluation as ve
from ..vision import seeds as vs
from ..vision.data import ColourTask
from ..vision.experiments import RunResult
from ..vision.model import prepare
from . import baselines as bl
from .api import suggest
from .estimate import Estimate
from .rules import Constants, suggest_add, suggest_forget
from .scoring import Choice, case_rows, utility

_PROBE = 400  # probe colours of task role r in run k: seed RUN_BLOCK·k + 400 + r (the roles' other seeds: 0 … 305)


@dataclass
class ViTRun:
    """One run of chapter 07 and what scoring it needs."""

    result: RunResult
    base: ViTForImageClassification  # Ψ⁽⁰⁾ with the run's parity head
    test_pair: torch.Tensor  # (2, N, 3, 28, 28)
    parity: torch.Tensor  # (N,)
    tasks: dict[str, ColourTask]
    n_probe: int
    ada_steps: int
    search_budgets: tuple[int, ...]
    batch_size: int = 1000

    def halves(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return ve.half_masks(n, vs.halves(self.result.run))

    def probe_rows(self, task: str, digits: np.ndarray, labelled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(colour, label) of each digit drawn by ``task``'s rule, from the probe seed of the task's role."""
        t = self.tasks[task]
        rng = np.random.default_rng(vs.RUN_BLOCK * self.result.run + _PROBE + vs.role(task) + (50 if labelled else 0))
        par = self.parity.numpy()[digits]
        y = np.where(rng.random(len(digits)) >= t.p_parity, 1 - par, par)
        colour = np.where(rng.random(len(digits)) < t.p_colour, y, 1 - y)
        return colour, y

    def digits(self, n: int, k: int) -> np.ndarray:
        """The k-th block of n_probe digits (k = 0: every source task's probe, each drawing its own colours;
        1: the target's labelled probe; 2: the search's validation digits), in a seeded order, from half A of the
        first n test digits, or, where n is less than all (the target's grid), from the digits after the n."""
        total = self.test_pair.shape[1]
        pool = np.flatnonzero(self.halves(n)[0].numpy()) if n == total else np.arange(n, total)
        order = np.random.default_rng(vs.RUN_BLOCK * self.result.run + _PROBE).permutation(pool)
        block = order[k * self.n_probe : (k + 1) * self.n_probe]
        if len(block) < self.n_probe:
            raise ValueError(f"{len(pool)} digits to draw probes from: too few for 3 blocks of {self.n_probe}")
        return block

    def probe(self, names: Sequence[str], n: int, target: str | None = None):  # noqa: ANN201
        """The probe of a case: (colour, digit, task, target labels) per row: block 0's digits drawn by each task
        of ``names`` in turn (task 0, 1, …), then block 1's drawn by ``target`` with its labels (task −1)."""
        d = self.digits(n, 0)
        colour = [self.probe_rows(t, d)[0] for t in names]
        digits, task, labels = [d] * len(names), [np.full(len(d), k) for k in range(len(names))], None
        if target is not None:
            td = self.digits(n, 1)
            tc, labels = self.probe_rows(target, td, labelled=True)
            colour, digits, task = colour + [tc], digits + [td], task + [np.full(len(td), -1)]
        return np.concatenate(colour), np.concatenate(digits), np.concatenate(task), labels

    def change(self, model: str, colour: np.ndarray, digits: np.ndarray) -> torch.Tensor:
        """Δf of a fine-tuned model on the given (colour, digit) probe rows, from the run's margins."""
        m = self.result.models
        return (m[model] - m["Ψ⁽⁰⁾"])[torch.as_tensor(colour), torch.as_tensor(digits)]

    def margins(self, tvs: Sequence[TaskVector], lambdas: Sequence[float], x: torch.Tensor) -> torch.Tensor:
        """Margins (2, N) on both colourings of Ψ⁽⁰⁾ + Σ λᵢΔΨᵢ."""
        with InPlaceMerge(self.base, list(tvs)) as merger:
            return ve.sweep_colour_margins(merger, [tuple(lambdas)], x, self.batch_size, "merge")[0]

    def pixel_probe(self, colour: np.ndarray, digits: np.ndarray) -> torch.Tensor:
        """The probe rows as the classifier takes them (for a probe file of the command line)."""
        return prepare(self.test_pair[torch.as_tensor(colour), torch.as_tensor(digits)], self.base.config.image_size)

    def adamerging(self, tvs: Sequence[TaskVector], x: torch.Tensor) -> tuple[float, ...]:
        size = self.base.config.image_size
        forward = bl.merged_forward(self.base, tvs, lambda call: call(pixel_values=prepare(x, size)).logits)
        return bl.adamerging(forward, len(tvs), self.ada_steps)


def _acc(
    r: ViTRun, m: torch.Tensor, tasks: Sequence[str], mask: torch.Tensor | None, digits: np.ndarray | None = None
) -> np.ndarray:
    """Expected accuracies (…, len(tasks)) of margins (…, 2, n) on the first n test digits (or on ``digits``)."""
    parity = r.parity[: m.shape[-1]] if digits is None else r.parity[torch.as_tensor(digits)]
    return np.stack([ve.expected_accuracy(m, parity, r.tasks[t].p_colour, r.tasks[t].p_parity, mask)
                     for t in tasks], -1)  # fmt: skip


def pair_cases(r: ViTRun, second: str, constants: Constants) -> list[dict]:
    """Rows for add and forget of T1 with ``second`` (Table 1)."""
    n = r.test_pair.shape[1]
    select, score = r.halves(n)
    names = ("T1", second)
    tvs = [r.result.task_vectors[k] for k in names]
    colour, digit, task, _ = r.probe(names, n)
    changes = [r.change(model, colour, digit) for model in names]
    x_probe = r.test_pair[torch.as_tensor(colour), torch.as_tensor(digit)]
    val = r.digits(n, 2)
    cosine = tvs[0].cosine(tvs[1])
    cos_est = Estimate(cosine, cosine, cosine, 0, "parameter cosine")
    sweep = r.result.table1[second]  # (L, 2, N) for λ₁ = 1
    single = r.result.models["T1"][None]
    rows = []
    for goal in ("add", "forget"):
        forget = 1 if goal == "forget" else None
        masks = {"a": select, "b": score}
        ref = {h: _acc(r, single, names[:1], mask)[0] if forget else None for h, mask in masks.items()}
        ref["v"] = _acc(r, single[..., val], names[:1], None, val)[0] if forget else None

        def u(m: torch.Tensor, half: str, goal: str = goal, ref: dict = ref, masks: dict = masks) -> np.ndarray:
            if half == "v":  # margins on the validation digits only
                return utility(goal, _acc(r, m, names, None, val), ref["v"])
            return utility(goal, _acc(r, m, names, masks[half]), ref[half])

        ours = suggest(goal, changes, task, constants)
        by_cos = (
            suggest_add({(0, 1): cos_est}, 2, constants)
            if goal == "add"
            else suggest_forget([cos_est], 1, 2, constants)
        )
        picks = [("theory rule, α̂ by regression", ours.lambdas, 0, 3 * len(task), ours.guaranteed),
                 ("λ = 1", bl.fixed(1.0, 2, forget), 0, 0, None),
                 ("fixed 0.3", bl.fixed(bl.FIXED_DEFAULT, 2, forget), 0, 0, None),
                 ("norm ratio", bl.norm_ratio(tvs, forget), 0, 0, None),
                 ("theory rule, parameter cosine", by_cos.lambdas, 0, 0, None)]  # fmt: skip
        if goal == "add":
            picks.append(
                (f"AdaMerging ({r.ada_steps} steps)", r.adamerging(tvs, x_probe), 0, r.ada_steps * len(task), None)
            )
        x_val = r.test_pair[:, val]
        for budget in r.search_budgets:
            lam, used = bl.cma_search(
                lambda x, xv=x_val, score=u: -float(score(r.margins(tvs, x, xv)[None], "v")[0]),
                bl.fixed(1.0, 2, forget),
                budget,
            )
            picks.append((f"CMA-ES ({budget} merge evaluations)", lam, used, used * 2 * len(val), None))
        choices = [Choice(name, tuple(lam), float(u(r.margins(tvs, lam, r.test_pair)[None], "b")[0]), ev, fw, g)
                   for name, lam, ev, fw, g in picks]  # fmt: skip
        stock = bl.model_stock_vectors(tvs, forget)
        choices.append(
            Choice("Model Stock", "per layer", float(u(r.margins(stock, (1.0, 1.0), r.test_pair)[None], "b")[0]), 0, 0)
        )
        passes = len(sweep) * 2 * int(select.sum())
        rows += case_rows(
            "ViT (Table 1)", goal, f"T1 + {second}", r.result.run, choices, u(sweep, "a"), u(sweep, "b"), passes
        )
        rows[-len(choices) - 1]["α̂"] = ours.estimates["α̂[1,2]"].value
    return rows


def target_cases(r: ViTRun, grid: Sequence[tuple[float, float]], constants: Constants) -> list[dict]:
    """Rows for the target goal (Table 2): T' = the run's "ood" task from T1 and the irrelevant task."""
    margins = r.result.grid  # (G, 2, n_ood)
    n = margins.shape[-1]
    select, score = r.halves(n)
    names = ("T1", "irrelevant")
    tvs = [r.result.task_vectors[k] for k in names]
    colour, digit, task, labels = r.probe(names, n, target="ood")
    rows_t = np.flatnonzero(task == -1)
    sign = torch.as_tensor(2.0 * labels - 1.0)
    changes = [r.change(model, colour, digit) for model in names]
    target_gains = [sign * ch[rows_t] for ch in changes]
    own_gains = []
    for k, model in enumerate(names):
        own = np.flatnonzero(task == k)
        full = r.result.models[model][torch.as_tensor(colour[own]), torch.as_tensor(digit[own])]
        own_gains.append(torch.sign(full) * changes[k][own])
    ours = suggest("target", changes, task, constants, target_gains=target_gains, own_gains=own_gains)
    x_probe = r.test_pair[torch.as_tensor(colour[rows_t]), torch.as_tensor(digit[rows_t])]
    val, x = r.digits(n, 2), r.test_pair[:, :n]

    def u(m: torch.Tensor, mask: torch.Tensor | None, digits: np.ndarray | None = None) -> np.ndarray:
        return utility("target", _acc(r, m, ("ood",), mask, digits))

    picks = [("theory rule, γ̂ by signed gain", ours.lambdas, 0, 3 * len(task), ours.guaranteed),
             ("λ = 1", (1.0, 1.0), 0, 0, None), ("fixed 0.3", bl.fixed(bl.FIXED_DEFAULT, 2), 0, 0, None),
             ("norm ratio", bl.norm_ratio(tvs), 0, 0, None),
             (f"AdaMerging ({r.ada_steps} steps)", r.adamerging(tvs, x_probe), 0, r.ada_steps * r.n_probe, None)]  # fmt: skip
    x_val = r.test_pair[:, val]
    for budget in r.search_budgets:
        lam, used = bl.cma_search(lambda z: -float(u(r.margins(tvs, z, x_val)[None], None, val)[0]), (1.0, 1.0), budget)
        picks.append((f"CMA-ES ({budget} merge evaluations)", lam, used, used * 2 * len(val), None))
    choices = [Choice(name, tuple(lam), float(u(r.margins(tvs, lam, x)[None], score)[0]), ev, fw, g)
               for name, lam, ev, fw, g in picks]  # fmt: skip
    stock = bl.model_stock_vectors(tvs)
    choices.append(Choice("Model Stock", "per layer", float(u(r.margins(stock, (1.0, 1.0), x)[None], score)[0]), 0, 0))
    passes = len(grid) * 2 * int(select.sum())
    rows = case_rows("ViT (Table 2)", "target", "T′ from T1, irrelevant", r.result.run, choices, u(margins, select),
                     u(margins, score), passes)  # fmt: skip
    rows[0]["γ̂"] = tuple(round(ours.estimates[f"γ̂[{k}]"].value, 3) for k in (1, 2))
    return rows


# chapter 07's tasks (colour cue fractions) and its main out-of-domain design, and its ViT
TASKS = {"T1": ("T1", 0.95, 1.0), "irrelevant": ("irrelevant T2", 0.5, 1.0), "aligned": ("aligned T2", 0.9, 1.0),
         "contradictory": ("contradictory T2", 0.05, 1.0), "ood": ("T′", 0.8, 0.05)}  # fmt: skip
VIT = {"image_size": 28, "patch_size": 7, "hidden_size": 96, "layers": 4, "heads": 4, "mlp_size": 192}
FINETUNE = {"epochs": 3.0, "lr": 1e-3, "batch_size": 64, "weight_decay": 0.0, "train_head": False}


def vit_case_runs(
    seeds: Sequence[int], n_test: int, n_ood: int, n_train: int, lambda_step: float, ood_step: float,
    pretrain: dict, n_probe: int, ada_steps: int, search_budgets: Sequence[int],
) -> tuple[dict[int, ViTRun], list[tuple[float, float]]]:  # fmt: skip
    """Chapter 07's runs with its parameters (read from its cache, or rebuilt by the same functions), each ready
    to score, and its Table 2 grid."""
    from ..taskvec.theorems import lambda_grid
    from ..vision import data as vd
    from ..vision import experiments as vx
    from ..vision import model as vm
    from ..vision import training as vt

    images, digits = vd.load_digits("mnist5k")
    train_idx, test_idx = vd.split_indices(len(digits), n_test, seed=0)
    train_idx = train_idx[:n_train]
    tasks = {k: vd.ColourTask(*v) for k, v in TASKS.items()}
    test_pair, parity = vd.both_colours(images[test_idx]), torch.from_numpy(digits[test_idx] % 2)
    pretrained, record = vt.pretrained_vit(vt.PretrainRecipe(spec=vm.ViTSpec(**VIT), **pretrain))
    lambdas = lambda_grid(-2.0, 3.0, lambda_step)
    grid = [(float(a), float(b)) for a in lambda_grid(-2.0, 3.0, ood_step) for b in lambda_grid(-2.0, 2.0, ood_step)]
    runs = {}
    for run in seeds:
        result = vx.run_case_study(run, pretrained, record["key"], tasks, images[train_idx], digits[train_idx],
                                   test_pair, lambdas, grid, n_ood, vt.FineTuneRecipe(**FINETUNE), "cpu", 1000)  # fmt: skip
        base = vm.with_binary_head(pretrained, seed=vs.head(run))
        runs[run] = ViTRun(result, base, test_pair, parity, tasks, n_probe, ada_steps, tuple(search_budgets))
    return runs, grid
