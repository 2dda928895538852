"""The language workload of the chapter "Choosing λ": chapter 08's unlearning (forget book A, keep book C) from the
offline language model fine-tuned on the three books, every method's λ for its task vector ΔΨ_A, scored like the
theory model and the ViT.

Models: chapter 08's, with its parameters, read from its cache (LoRA factors and scores under ``<cache>/lm``) or
rebuilt by the same functions and cache keys: Ψ⁽⁰⁾′ (the base model Ψ⁽⁰⁾ fine-tuned on A, B and C), every run's
ΔΨ_A (fine-tuned from Ψ⁽⁰⁾′ on A) and its single-book fine-tunes Ψ*_A, Ψ*_C of Ψ⁽⁰⁾ (the models of chapter 08's
α̂). The edit is chapter 08's, Ψ⁽⁰⁾′ + λ ΔΨ_A: one coefficient.

Utility (``unlearning_utility``): chapter 08's scores (Rouge-L of the greedy continuation, the paper's measure of
both the forgotten and the kept books) made one number by ``scoring.utility``, Rouge-L in points as the accuracy:
100 − A's Rouge-L, minus every point C's Rouge-L loses beyond 1 point below Ψ⁽⁰⁾′'s on the same passages. (C's
next-token loss is no kept score here: on passages Ψ⁽⁰⁾′ memorised it starts near 0, so any edit multiplies it.)

Halves: per run, each book's trained passages split in two (``half_masks``, seeded by the run): the grid chooses
on half A, everything is scored on half B. The probe: the token ids of half A's passages of C and of A (inputs
only); the rule compares the last hidden states of Ψ*_C and Ψ*_A with Ψ⁽⁰⁾'s there, as chapter 08's α̂ does.
The methods reading parameters (the norm ratio, Model Stock, the rule fed with the parameter cosine) read the pair
the rule reads, τ*_C = Ψ*_C − Ψ⁽⁰⁾ and τ*_A = Ψ*_A − Ψ⁽⁰⁾: each gives the forgotten task's λ (Model Stock one per
tensor), applied to ΔΨ_A.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..editing.inplace import add_in_place, task_arithmetic
from ..editing.task_vector import TaskVector
from ..language import generation, lora, models
from ..language import unlearning as U
from ..language.books import load_book, split_windows
from ..vision.evaluation import half_masks
from . import baselines as bl
from .api import suggest
from .estimate import Estimate
from .rules import Constants, suggest_forget
from .scoring import Choice, case_rows, utility

# chapter 08's books by its parameters: A to forget, B its sequel (trained into Ψ⁽⁰⁾′, not scored here), C to keep
BOOK_PARAMS = {"A": "book_forget", "B": "book_close", "C": "book_far"}
HALVES = 500  # run r's halves: seed 1000·r + 500 (chapter 08's fine-tunes use offsets 0 … 12 of the block)
WORKLOAD = "language model (chapter 08)"


def unlearning_utility(rouge_a: np.ndarray | float, rouge_c: np.ndarray | float, rouge_c0: float) -> np.ndarray:
    """Utility of an edit from A's and C's mean Rouge-L (0 … 1), ``rouge_c0``: C's under Ψ⁽⁰⁾′ on the same passages
    (``scoring.utility``'s forget, Rouge-L in points as the accuracy): 100 − A's Rouge-L, minus every point C's
    Rouge-L loses beyond 1 point."""
    scores = 100.0 * np.stack([np.asarray(rouge_c, dtype=float), np.asarray(rouge_a, dtype=float)], -1)
    return utility("forget", scores, 100.0 * np.atleast_1d(rouge_c0))


def probe_rows(n: int, select: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(rows, task) of the probe in the (2n,) windows of A then C: half A's passages of C (task 0, kept) and of A
    (task 1, forgotten)."""
    chosen = np.flatnonzero(np.asarray(select))
    rows = np.concatenate([n + chosen, chosen])
    return rows, np.repeat([0, 1], len(chosen))


@dataclass
class LMRun:
    """One run of chapter 08: its ΔΨ_A, and α̂'s single-book fine-tunes with their output changes."""

    run: int
    forget: tuple[str, TaskVector]  # (cache name, ΔΨ_A)
    pair: dict[str, tuple[str, TaskVector]]  # book (A, C) → (cache name, τ* = Ψ* − Ψ⁽⁰⁾)
    changes: dict[str, torch.Tensor]  # book → last hidden states of Ψ* − Ψ⁽⁰⁾'s, (2n, L, H) on A's then C's windows


@dataclass
class Unlearning:
    """Chapter 08's Ψ⁽⁰⁾′, its trained passages and runs, ready to score edits Ψ⁽⁰⁾′ + λ ΔΨ."""

    model: nn.Module  # Ψ⁽⁰⁾′
    tokenizer: Any
    params: dict  # chapter 08's parameters
    ids: torch.Tensor  # (3n, L) trained windows: A's, B's, C's
    low: models.LowerPass
    shared: dict  # what every cache key of chapter 08 holds
    base_name: str
    runs: dict[int, LMRun]
    base_tv: TaskVector | None = None  # Ψ⁽⁰⁾′ − Ψ⁽⁰⁾ (chapter 08's merged LoRA)

    @property
    def n(self) -> int:
        return self.params["n_passages"]

    def part(self, book: str) -> slice:
        i = "ABC".index(book)
        return slice(i * self.n, (i + 1) * self.n)

    def halves(self, run: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``run``'s halves A (the grid chooses) and B (scored) of each book's n passages."""
        return half_masks(self.n, 1000 * run + HALVES)

    def scores(self, tv: TaskVector | None = None, scale: float = 1.0, /, **state: Any) -> dict[str, np.ndarray]:
        """Rouge-L and NLL of every trained window under Ψ⁽⁰⁾′ + scale·tv (Ψ⁽⁰⁾′ for no tv), cached as chapter 08
        caches them (``state`` names the edit: the arguments before it are positional only)."""
        p = self.params
        if tv is None:
            return U.cached_scores(self.model, self.tokenizer, p["model"], self.ids, p["prompt_len"],
                                   p["eval_batch_size"], self.low, set="trained", **self.shared, **state)  # fmt: skip
        with task_arithmetic(self.model, tv, scale):
            return self.scores(**state)

    def edit(self, run: int, lam: float) -> dict[str, np.ndarray]:
        """Scores of Ψ⁽⁰⁾′ + λ ΔΨ_A of ``run`` (λ = 0: Ψ⁽⁰⁾′), under chapter 08's cache keys."""
        name, tv = self.runs[run].forget
        lam = round(float(lam), 4)
        return self.scores(model=self.base_name) if lam == 0.0 else self.scores(tv, lam, forget=name, lam=lam)

    def utility(self, s: dict[str, np.ndarray], mask: torch.Tensor) -> float:
        """``unlearning_utility`` of scores ``s`` on the passages of ``mask`` (n,) of A and C."""
        start, m = self.scores(model=self.base_name), np.asarray(mask)
        a, c = s["rouge"][self.part("A")][m], s["rouge"][self.part("C")][m]
        return float(unlearning_utility(a.mean(), c.mean(), start["rouge"][self.part("C")][m].mean()))


def lm_cases(u: Unlearning, run: int, lambdas: Sequence[float], constants: Constants) -> list[dict]:
    """Rows for forgetting A and keeping C in ``run``: every method's λ of ΔΨ_A against the grid ``lambdas``."""
    r = u.runs[run]
    select, score = u.halves(run)
    grid = [u.edit(run, lam) for lam in lambdas]
    rows, task = probe_rows(u.n, select)
    ours = suggest("forget", [r.changes["C"][rows], r.changes["A"][rows]], task, constants)
    pair = [r.pair["C"][1], r.pair["A"][1]]
    cosine = pair[0].cosine(pair[1])
    by_cos = suggest_forget([Estimate(cosine, cosine, cosine, 0, "parameter cosine")], 1, 2, constants)
    picks = [("theory rule, α̂ by regression", ours.lambdas[1], 3 * len(task), ours.guaranteed),
             ("λ = 1", bl.fixed(1.0, 2, 1)[1], 0, None), ("fixed 0.3", bl.fixed(bl.FIXED_DEFAULT, 2, 1)[1], 0, None),
             ("norm ratio", bl.norm_ratio(pair, 1)[1], 0, None),
             ("theory rule, parameter cosine", by_cos.lambdas[1], 0, None)]  # fmt: skip
    choices = [Choice(name, (lam,), u.utility(u.edit(run, lam), score), 0, fw, g) for name, lam, fw, g in picks]
    name, tv = r.forget
    stock = bl.scaled(tv, {k: -t for k, t in bl.model_stock_ratios(pair).items()})
    s = u.scores(stock, 1.0, forget=name, model_stock=[r.pair["C"][0], r.pair["A"][0]])
    choices.append(Choice("Model Stock", "per layer", u.utility(s, score), 0, 0))
    passes = len(lambdas) * 2 * int(select.sum())  # A's and C's passages of half A, per grid point
    grid_a = np.array([u.utility(g, select) for g in grid])
    grid_b = np.array([u.utility(g, score) for g in grid])
    out = case_rows(WORKLOAD, "forget", "forget A, keep C", run, choices, grid_a, grid_b, passes)
    out[-1]["λ"] = f"{lambdas[int(np.argmax(grid_a))]:.2f}"  # the grid's choice on half A
    out[0]["α̂"] = ours.estimates["α̂[1,2]"].value
    out[0]["parameter cosine"] = cosine
    return out


def grid_table(u: Unlearning, lambdas: Sequence[float]) -> pd.DataFrame:
    """Per λ of the grid, the mean over runs of A's and C's Rouge-L and C's NLL on every trained passage, and of
    the utility on each half."""
    rows = []
    for lam in lambdas:
        per_run = []
        for run in u.runs:
            s, (select, score) = u.edit(run, lam), u.halves(run)
            per_run.append([s["rouge"][u.part("A")].mean(), s["rouge"][u.part("C")].mean(),
                            s["nll"][u.part("C")].mean(), u.utility(s, select), u.utility(s, score)])  # fmt: skip
        rows.append([lam, *np.mean(per_run, axis=0)])
    columns = ["λ", "Rouge-L of A", "Rouge-L of C", "NLL of C", "utility, half A", "utility, half B"]
    return pd.DataFrame(rows, columns=columns)


def unlearning_runs(params: dict) -> Unlearning:
    """Chapter 08's models with the parameters ``params`` (named as in its DEFAULTS): read from
    its cache where it ran with them, else built by the same functions and cached under the same keys."""
    p = params
    model, tokenizer = models.load_model(p["model"], device="cpu")
    books = {k: load_book(p[name]) for k, name in BOOK_PARAMS.items()}
    length = p["prompt_len"] + p["continuation_len"]
    split = {k: split_windows(models.encode(tokenizer, b.text), p["n_passages"], length) for k, b in books.items()}
    ids = torch.cat([torch.tensor(split[k][0]) for k in "ABC"])
    first_top = models.n_layers(model) - p["train_layers"]
    low = models.lower_pass(model, ids, first_top, p["prompt_len"], p["eval_batch_size"])
    shared = U.cache_depends(books, p["n_passages"], length, p["prompt_len"], p["train_layers"])
    u = Unlearning(model, tokenizer, p, ids, low, shared, "", {})

    def fine_tune(kind: str, prefix: str, seed: int, rows: slice, **key: Any) -> tuple[str, TaskVector]:
        recipe = lora.LoraRecipe(rank=p[f"{prefix}_rank"] if prefix == "base" else p["lora_rank"],
                                 train_layers=p["train_layers"], epochs=p[f"{prefix}_epochs"], lr=p[f"{prefix}_lr"],
                                 batch_size=p["batch_size"], seed=seed)  # fmt: skip
        name, tv, _ = lora.cached_fine_tune(
            model, p["model"], kind, recipe, ids[rows], low.inputs[rows], **shared, **key
        )
        return name, tv

    ac = torch.cat([torch.arange(len(ids))[u.part(k)] for k in "AC"])  # A's windows, then C's

    def states() -> torch.Tensor:
        return generation.final_hidden_states(model, ids[ac], p["eval_batch_size"], low.inputs[ac], first_top)

    reference, pairs = states(), {}
    for run in p["seeds"]:
        pairs[run] = {k: fine_tune("alpha", "alpha", U.seed_for("alpha", run, k), u.part(k), book=k) for k in "AC"}
        changes = {}
        for k, (_, tv) in pairs[run].items():
            with task_arithmetic(model, tv, 1.0):
                changes[k] = states() - reference
        pairs[run] = (pairs[run], changes)
    u.base_name, u.base_tv = fine_tune("base", "base", U.seed_for("base"), slice(None))
    add_in_place(model, u.base_tv, 1.0)  # the model is Ψ⁽⁰⁾′ from here on
    for run in p["seeds"]:
        forget = fine_tune("forget", "forget", U.seed_for("forget", run), u.part("A"), parent=u.base_name)
        u.runs[run] = LMRun(run, forget, *pairs[run])
    return u
