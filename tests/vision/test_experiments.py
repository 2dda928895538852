"""One run of the case study, its selections and its cost (tvutils.vision.experiments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvutils.vision import data as vd
from tvutils.vision import experiments as vx
from tvutils.vision import model as vm
from tvutils.vision import training as vt

TINY = vm.ViTSpec(image_size=8, patch_size=4, hidden_size=16, layers=1, heads=2, mlp_size=16)
TASKS = {
    "T1": vd.ColourTask("T1", 0.95),
    "irrelevant": vd.ColourTask("irrelevant", 0.5),
    "aligned": vd.ColourTask("aligned", 0.9),
    "contradictory": vd.ColourTask("contradictory", 0.05),
    "ood": vd.ColourTask("ood", 0.8, 0.05),
}


def test_a_run_end_to_end_and_resumed_from_its_cache(tmp_path):
    rng = np.random.default_rng(0)
    images, digits = rng.integers(0, 256, (40, 28, 28)).astype(np.uint8), rng.integers(0, 10, 40)
    test_pair = vd.both_colours(images[:6])
    lambdas = np.array([-1.0, 0.0, 1.0])
    grid = [(a, b) for a in (0.0, 1.0) for b in (0.0, 1.0)]
    pre = vm.make_vit(TINY, 10, 0)
    recipe = vt.FineTuneRecipe(epochs=1, batch_size=16)
    args = (pre, "tiny", TASKS, images[6:], digits[6:], test_pair, lambdas, grid, 4, recipe)
    first = vx.run_case_study(0, *args, directory=tmp_path)
    assert first.from_cache == 0 and first.grid.shape == (4, 2, 4)
    assert {k: v.shape for k, v in first.table1.items()} == {k: (3, 2, 6) for k in vx.TABLE1_PAIRS}
    assert set(first.models) == {"Ψ⁽⁰⁾", *TASKS} and first.models["T1"].shape == (2, 6)
    # the merge Ψ⁽⁰⁾ + ΔΨ_T1 + 0·ΔΨ_T2 is Ψ*_T1; (0, 0) is Ψ⁽⁰⁾
    assert torch.allclose(first.table1["aligned"][1], first.models["T1"], atol=1e-5)
    assert torch.allclose(first.grid[0], first.models["Ψ⁽⁰⁾"][:, :4], atol=1e-5)
    again = vx.run_case_study(0, *args, directory=tmp_path)
    assert again.from_cache == len(TASKS) + 4  # every fine-tune and every sweep
    assert torch.equal(again.grid, first.grid) and torch.equal(again.models["ood"], first.models["ood"])
    other = vx.run_case_study(1, *args, directory=tmp_path)  # another seed is another run
    assert other.from_cache == 0 and not torch.equal(other.models["T1"], first.models["T1"])
    alphas = vx.output_alphas(first, {"same": ("T1", "T1"), "pair": ("T1", "aligned")})
    assert alphas["same"] == pytest.approx(1.0) and -1 <= alphas["pair"] <= 1


def test_table1_choice_selects_on_one_half_and_scores_on_the_other():
    parity = torch.tensor([0, 1, 0, 1])
    colour = torch.tensor([[-1.0] * 4, [1.0] * 4])  # reads colour
    shape = torch.stack([parity * 2.0 - 1] * 2)  # reads parity
    sweep = torch.stack([colour, colour, -shape])  # λ = −1, 0, 1
    first, second = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])
    t1, t2 = vd.ColourTask("T1", 0.95), vd.ColourTask("irr", 0.5)
    lambdas = np.array([-1.0, 0.0, 1.0])
    c = vx.table1_choice(sweep, parity, t1, t2, colour, shape, lambdas, "unlearning", 1.0, first, second)
    assert c["lambda"] == 0.0  # ties are broken towards λ = 0
    assert c["T1"] == pytest.approx(95.0) and c["T2"] == pytest.approx(50.0) and c["negation gain"] == pytest.approx(0)
    assert c["d2"] == pytest.approx(-50.0)
    add = vx.table1_choice(sweep, parity, t1, t2, colour, shape, lambdas, "multi-task", 1.0, None, None)
    assert add["lambda"] == 1.0  # the only λ > 0


def test_ood_choice_needs_the_single_models_on_the_grid():
    parity = torch.tensor([0, 1, 0, 1])
    m = torch.stack([torch.stack([parity * 2.0 - 1] * 2), -torch.stack([parity * 2.0 - 1] * 2), torch.ones(2, 4)])
    design = vd.ColourTask("T'", 0.5, 0.0)  # the label is always the parity reversed
    out = vx.ood_choice(m, [(1.0, 0.0), (0.0, 1.0), (2.0, -1.0)], parity, design, None, None)
    assert out["lambdas"] == (0.0, 1.0) and out["best"] == pytest.approx(100.0) and out["gain"] == 0
    with pytest.raises(ValueError, match="must contain"):
        vx.ood_choice(m, [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)], parity, design, None, None)


def test_cost_of_a_run():
    assert vx.vit_macs(224, 16, 384, 12, 1536) == pytest.approx(4.6e9, rel=0.02)  # ViT-S/16's 4.6 GMAC
    passes = vx.work(3, 5, 100, 2.0, 3, 26, 10, 99, 5)
    assert passes == {"training passes (forward + backward)": 3000,
                      "forward passes": 3 * 2 * (3 * 26 * 10 + 99 * 5 + 6 * 10)}  # fmt: skip
    seconds = vx.time_estimate(passes, 1e9, 1.0)
    assert seconds == pytest.approx(2e9 * (3 * 3000 + passes["forward passes"]) / 1e12)
    assert vx.mean_text([1.0]) == "1.0" and vx.mean_text([1.0, 3.0]).startswith("2.0 [")


def test_the_lower_end_of_the_interval():
    assert vx.mean_interval_low([1.0, 2.0, 3.0]) == pytest.approx(2.0 - 4.303 * 1.0 / np.sqrt(3), rel=1e-3)
    assert np.isnan(vx.mean_interval_low([1.0]))
