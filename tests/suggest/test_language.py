"""tvutils.suggest.language on a stand-in of chapter 08: a linear "model" whose scores follow its edit."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tvutils.editing.task_vector import TaskVector
from tvutils.suggest import language as sl
from tvutils.suggest.rules import FORGET_MARGIN, Constants
from tvutils.suggest.scoring import GRID

N = 16  # passages a book (half A: the 8 a probe needs at least)


def test_utility_is_forgetting_less_the_kept_books_rouge_beyond_one_point():
    assert sl.unlearning_utility(0.5, 0.8, 0.8) == pytest.approx(50.0)
    assert sl.unlearning_utility(0.5, 0.795, 0.8) == pytest.approx(50.0)  # half a point lost is free
    assert sl.unlearning_utility(0.0, 0.7, 0.8) == pytest.approx(100.0 - 9.0)
    assert sl.unlearning_utility(np.array([1.0, 0.2]), np.array([0.8, 0.8]), 0.8).tolist() == pytest.approx([0, 80])


def test_probe_is_half_a_of_the_kept_book_then_the_forgotten_one():
    select = torch.tensor([True, False, True, False])
    rows, task = sl.probe_rows(4, select)
    assert rows.tolist() == [4, 6, 0, 2] and task.tolist() == [0, 0, 1, 1]


@pytest.fixture
def unlearning(monkeypatch):
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(3, 3, bias=False)
    w0 = model.weight.detach().clone()
    delta = torch.randn(3, 3, generator=g)
    noise = torch.rand(3 * N, generator=g).numpy()

    def fake_scores(m, tokenizer, name, ids, prompt_len, batch_size, low, /, **depends):
        lam = float(((m.weight.detach() - w0) * delta).sum() / (delta * delta).sum())  # the edit's λ along ΔΨ_A
        rouge = (0.6 + 0.3 * noise) * max(0.0, 1.0 + 0.9 * lam)
        nll = (2.0 + noise) * (1.0 + 0.2 * lam**2)
        rouge[2 * N :] = (0.6 + 0.3 * noise[2 * N :]) * max(0.0, 1.0 - 0.1 * lam**2)  # C: hurt far less than A
        return {"rouge": rouge, "nll": nll}

    monkeypatch.setattr(sl.U, "cached_scores", fake_scores)
    x = torch.randn(2 * N, 5, 4, generator=g)
    changes = {"A": x, "C": 0.3 * x + 0.95 * torch.randn(2 * N, 5, 4, generator=g)}  # α = 0.3, same scale
    pair = {k: (f"alpha-{k}", TaskVector({"weight": torch.randn(3, 3, generator=g)})) for k in "AC"}
    params = {"model": "stand-in", "n_passages": N, "prompt_len": 2, "eval_batch_size": 4}
    u = sl.Unlearning(model, None, params, torch.zeros(3 * N, 5), None, {}, "base-x", {})
    u.runs[0] = sl.LMRun(0, ("forget-0", TaskVector({"weight": delta})), pair, changes)
    return u, w0


def test_every_method_is_scored_against_the_grid_and_the_model_is_restored(unlearning):
    u, w0 = unlearning
    lambdas = [0.0, -0.5, -1.0, -1.5, -2.0]
    rows = pd.DataFrame(sl.lm_cases(u, 0, lambdas, Constants.literal(64)))
    assert rows.method.tolist() == ["theory rule, α̂ by regression", "λ = 1", "fixed 0.3", "norm ratio",
                                    "theory rule, parameter cosine", "Model Stock", GRID]  # fmt: skip
    assert (rows.workload == sl.WORKLOAD).all() and (rows.goal == "forget").all()
    assert rows.set_index("method").loc[["λ = 1", "fixed 0.3"], "λ"].tolist() == ["-1.00", "-0.30"]
    alpha = rows["α̂"].iloc[0]
    assert alpha == pytest.approx(0.3, abs=0.1)
    assert float(rows["λ"].iloc[0]) == pytest.approx(-(FORGET_MARGIN + alpha), abs=0.01)
    assert rows["forward passes"].iloc[0] == 3 * N  # Ψ⁽⁰⁾, Ψ*_C and Ψ*_A over half A of two books
    grid = rows[rows.method == GRID].iloc[0]
    assert grid["merge evaluations"] == len(lambdas) and grid["forward passes"] == len(lambdas) * N
    assert np.isfinite(rows.regret).all() and grid.regret >= 0 and float(grid["λ"]) in lambdas
    assert torch.equal(u.model.weight.detach(), w0)


def test_edit_rounds_lambda_and_keeps_the_unedited_model_at_zero(unlearning):
    u, _ = unlearning
    start = u.edit(0, 0.0)
    assert np.allclose(start["rouge"], u.scores(model="base-x")["rouge"])
    assert u.edit(0, -1.00001)["rouge"].mean() < start["rouge"].mean()
    select, score = sl.half_masks(N, sl.HALVES)
    assert u.utility(start, select) == pytest.approx(100 - 100 * start["rouge"][:N][select.numpy()].mean())


def test_grid_table_has_a_row_per_lambda_and_the_unedited_model_first(unlearning):
    u, _ = unlearning
    table = sl.grid_table(u, [0.0, -1.0])
    assert table["λ"].tolist() == [0.0, -1.0] and table.shape == (2, 6)
    assert table["Rouge-L of A"].iloc[1] < table["Rouge-L of A"].iloc[0]
