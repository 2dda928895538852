"""Seeds by role, intervals over seeds and passages, cached results, the work plan (tvutils.language.unlearning)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tvutils.language import unlearning as U


def test_seeds_by_role_are_distinct_and_stable():
    seeds = [U.seed_for("forget", r) for r in range(3)] + [U.seed_for("alpha", r, b) for r in range(3) for b in "ABC"]
    assert len(set(seeds)) == len(seeds) and U.seed_for("base", 0) == U.seed_for("base", 5) == 0
    assert U.seed_for("forget", 2) == 2001 and U.seed_for("alpha", 1, "C") == 1012
    for bad in (lambda: U.seed_for("nope"), lambda: U.seed_for("alpha", 0), lambda: U.seed_for("forget", -1)):
        with pytest.raises(ValueError):
            bad()


def test_envelope_skips_nan_intervals():
    assert U.envelope((0.0, 1.0), (-1.0, 0.5)) == (-1.0, 1.0)
    assert U.envelope((float("nan"), float("nan")), (0.1, 0.2)) == (0.1, 0.2)
    assert all(math.isnan(x) for x in U.envelope((float("nan"), 1.0)))


def test_change_over_seeds_has_both_intervals():
    rng = np.random.default_rng(0)
    before = rng.uniform(0.5, 1.0, 40)
    after = before[None, :] * np.array([[0.5], [0.6], [0.55]]) + rng.normal(0, 0.01, (3, 40))
    r = U.change_over_seeds(before, after, n_boot=500)
    assert np.allclose(r.per_seed, after.mean(1) / before.mean() - 1) and np.isclose(r.mean, np.mean(r.per_seed))
    assert r.seeds[0] < r.mean < r.seeds[1] and r.passages[0] < r.mean < r.passages[1]
    assert r.interval == (min(r.seeds[0], r.passages[0]), max(r.seeds[1], r.passages[1]))
    assert -0.6 < r.interval[0] < -0.45 < r.interval[1] < -0.3  # t(2) = 4.30: three seeds give a wide interval
    one = U.change_over_seeds(before, after[:1], n_boot=500)  # one seed: only the passages' interval
    assert one.interval == one.passages and "seeds: -0.50" in one.text(fmt=".2f").replace("−", "-")
    with pytest.raises(ValueError):
        U.change_over_seeds(before, after[:, :10])
    with pytest.raises(ValueError):
        U.change_over_seeds(before, after[0])


def test_gap_over_seeds_and_mean_over_seeds():
    rng = np.random.default_rng(1)
    b1, b2 = rng.uniform(1, 2, 30), rng.uniform(1, 2, 30)
    a1, a2 = np.stack([b1 * 2.0, b1 * 2.2]), np.stack([b2 * 1.2, b2 * 1.3])
    g = U.gap_over_seeds(b1, a1, b2, a2, n_boot=300)
    assert np.allclose(g.per_seed, [0.8, 0.9]) and g.interval[0] <= g.passages[0]
    with pytest.raises(ValueError, match="seeds"):
        U.gap_over_seeds(b1, a1, b2, a2[:1])
    m = U.mean_over_seeds(np.array([[0.1, 0.3], [0.2, 0.4]]), n_boot=200)
    assert np.allclose(m.per_seed, [0.2, 0.3]) and np.isclose(m.mean, 0.25)


def test_cached_arrays_compute_once_and_keyed_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))
    path = U.results_cache_path("org/model", "scores", lam=-1.0, windows="abc")
    assert path.parent == tmp_path / "lm" / "org--model" / "results" and path.suffix == ".npz"
    assert path != U.results_cache_path("org/model", "scores", lam=-0.5, windows="abc")
    monkeypatch.setattr(U, "fingerprint", lambda: {"threads": 9})
    assert path != U.results_cache_path("org/model", "scores", lam=-1.0, windows="abc")
    calls = []
    compute = lambda: (calls.append(1), {"rouge": np.arange(3.0), "nll": np.ones(3)})[1]  # noqa: E731
    first, second = U.cached_arrays(path, compute), U.cached_arrays(path, compute)
    assert calls == [1] and np.array_equal(first["rouge"], second["rouge"]) and set(second) == {"rouge", "nll"}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_work_plan_counts_the_run(tiny):
    model, _ = tiny
    sizes = U.Sizes.of(model, train_layers=2)
    assert sizes.lower == sizes.top > 0 and sizes.head == model.get_output_embeddings().weight.numel()
    P = SimpleNamespace(n_passages=4, prompt_len=6, continuation_len=4, base_epochs=2, forget_epochs=1,
                        alpha_epochs=1, seeds=[0, 1], lambdas=[0.0, -0.5, -1.0], batch_size=4, eval_batch_size=8)  # fmt: skip
    plan = U.work_plan(sizes, P)
    total = plan.loc["total"]
    assert total["TFLOP"] == pytest.approx(plan["TFLOP"].iloc[:-1].sum())
    assert plan.loc["lower blocks", "forward tokens"] == 2 * 12 * 10
    # trained: Ψ⁽⁰⁾′ 2 epochs × 12 windows; α̂ 3 books × 2 seeds × 4 windows; ΔΨ_A 2 seeds × 4 windows (10 tokens)
    assert total["backward tokens"] == (2 * 12 + 3 * 2 * 4 + 2 * 4) * 10
    # generated: 1 (Ψ⁽⁰⁾) + 2 (λ = 0) + 1 (grid) + 4 (λ = −1) scorings of 12 windows, 3 one-token steps each
    assert total["generated tokens"] == 8 * 12 * 3
    minutes = [c for c in plan.columns if c.startswith("minutes on")]
    assert len(minutes) == 3 and (plan.loc["total", minutes] > 0).all()


def test_pair_similarities(tiny, windows):
    import torch

    from tvutils.editing.task_vector import TaskVector
    from tvutils.language import generation

    model, _ = tiny
    key = "model.layers.3.mlp.down_proj.weight"
    w = model.state_dict()[key]
    torch.manual_seed(0)
    d = 0.05 * torch.randn_like(w)
    tvs = {"A": TaskVector({key: d}), "B": TaskVector({key: 2 * d}), "C": TaskVector({key: 0.05 * torch.randn_like(w)})}
    ref = generation.final_hidden_states(model, windows, 4)
    sims = U.pair_similarities(model, windows, ref, tvs, 4)
    assert set(sims) == {"AB", "AC", "BC"} and sims["AB"].shape == (6,)
    assert sims["AB"].mean() > 0.95 and sims["AC"].mean() < sims["AB"].mean()
    assert torch.equal(model.state_dict()[key], w)  # every fine-tune removed again


def test_cached_scores_and_cached_fine_tune(tiny, windows, tmp_path, monkeypatch):
    import torch

    from tvutils.language import generation, lora

    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path))
    model, tokenizer = tiny
    first = U.cached_scores(model, tokenizer, "org/tiny", windows, 10, 4, None, model="base")  # any key name
    plain = generation.score_passages(model, tokenizer, windows, 10, 4)
    assert np.array_equal(first["rouge"], plain[0]) and np.allclose(first["nll"], plain[1])
    monkeypatch.setattr(U, "score_passages", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = U.cached_scores(model, tokenizer, "org/tiny", windows, 10, 4, None, model="base")  # read, not recomputed
    assert np.array_equal(again["nll"], first["nll"])
    recipe = lora.LoraRecipe(rank=2, train_layers=1, epochs=1, lr=1e-2, batch_size=3, seed=0)
    name, tv, losses = lora.cached_fine_tune(model, "org/tiny", "forget", recipe, windows, book="A")
    assert name == lora.lora_cache_path("org/tiny", "forget", recipe, book="A").name and len(losses) == 2
    name2, tv2, _ = lora.cached_fine_tune(model, "org/tiny", "forget", recipe, windows, book="A")
    assert name2 == name and all(torch.equal(tv.deltas[k], tv2.deltas[k]) for k in tv.keys())
