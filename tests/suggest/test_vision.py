"""tvutils.suggest.vision on a tiny ViT and a fake run of chapter 07: probes, scores and every method's row."""

import pandas as pd
import pytest
import torch

from tvutils.editing.task_vector import TaskVector
from tvutils.suggest import vision as sv
from tvutils.suggest.rules import Constants
from tvutils.vision import evaluation as ve
from tvutils.vision.data import ColourTask
from tvutils.vision.experiments import RunResult
from tvutils.vision.model import ViTSpec, encoder_keys, make_vit


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    base = make_vit(ViTSpec(28, 14, 16, 1, 2, 32), num_labels=2, seed=0)
    with torch.no_grad():  # Ψ⁽⁰⁾'s margins near 0, so that each model's own change decides its predictions
        base.classifier.bias.zero_()
        base.vit.layernorm.weight.mul_(0.01)
    g = torch.Generator().manual_seed(1)
    names = ("T1", "irrelevant", "aligned", "contradictory", "ood")
    tvs = {k: TaskVector({n: 0.2 * torch.randn(v.shape, generator=g) for n, v in base.state_dict().items()
                          if encoder_keys(n)}) for k in names}  # fmt: skip
    test_pair = torch.rand(2, 120, 3, 28, 28, generator=g)
    parity = torch.arange(120) % 2
    models = {"Ψ⁽⁰⁾": ve.colour_margins(base, test_pair)}
    models |= {k: ve.colour_margins(tv.apply_to(base), test_pair) for k, tv in tvs.items()}
    lambdas = [-1.0, 0.0, 1.0]
    grid = [(a, b) for a in (0.0, 1.0) for b in (-1.0, 0.0, 1.0)]

    def sweep(pair, coefs, x):
        with ve.InPlaceMerge(base, [tvs[pair[0]], tvs[pair[1]]]) as merger:
            return ve.sweep_colour_margins(merger, coefs, x)

    table1 = {k: sweep(("T1", k), [(1.0, lam) for lam in lambdas], test_pair) for k in names[1:4]}
    result = RunResult(0, models, table1, sweep(("T1", "irrelevant"), grid, test_pair[:, :60]), tvs, 0)
    tasks = {k: ColourTask(k, p, q) for k, p, q in zip(names, (0.95, 0.5, 0.9, 0.05, 0.8), (1, 1, 1, 1, 0.05))}
    return sv.ViTRun(result, base, test_pair, parity, tasks, n_probe=12, ada_steps=2, search_budgets=(3,)), grid


def test_probe_is_half_a_for_table1_and_the_unscored_digits_for_table2(run):
    r, _ = run
    colour, digit, task, labels = r.probe(("T1", "irrelevant"), 120)
    assert labels is None and task.tolist() == [0] * 12 + [1] * 12
    assert r.halves(120)[0][torch.as_tensor(digit)].all()
    colour, digit, task, labels = r.probe(("T1", "irrelevant"), 60, target="ood")
    assert (digit >= 60).all() and len(labels) == (task == -1).sum() == 12
    assert r.pixel_probe(colour, digit).shape == (36, 3, 28, 28)
    with pytest.raises(ValueError, match="too few"):
        sv.ViTRun(r.result, r.base, r.test_pair, r.parity, r.tasks, 30, 1, (3,)).digits(60, 2)


def test_change_is_read_off_the_margins(run):
    r, _ = run
    colour, digit, _, _ = r.probe(("T1",), 120)
    x = r.test_pair[torch.as_tensor(colour), torch.as_tensor(digit)]
    direct = ve.margins(r.result.task_vectors["T1"].apply_to(r.base), x) - ve.margins(r.base, x)
    assert torch.allclose(r.change("T1", colour, digit), direct, atol=1e-5)


def test_every_method_has_a_row(run):
    r, grid = run
    k = Constants.literal(16)
    rows = pd.DataFrame(sv.pair_cases(r, "aligned", k) + sv.target_cases(r, grid, k))
    assert set(rows.goal) == {"add", "forget", "target"}
    for goal, n_methods in (("add", 9), ("forget", 8), ("target", 8)):  # with one search budget, and the grid
        assert len(rows[rows.goal == goal]) == n_methods
    assert rows.score.between(-100, 100).all()
