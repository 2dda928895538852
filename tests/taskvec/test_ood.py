import numpy as np
import pytest
import torch

from tvutils.editing.task_vector import TaskVector
from tvutils.taskvec import seeds
from tvutils.taskvec.data import DataConfig, ood_tasks
from tvutils.taskvec.model import LearnerConfig, OneLayerTransformer
from tvutils.taskvec.ood import (
    AUTHORS,
    FITTED,
    LITERAL_HAT,
    LITERAL_TRUE,
    OODRun,
    best_single,
    drawn_regions,
    gamma_from_cosine,
    gamma_from_outputs,
    gamma_from_readout,
    merge_gain,
    readout_direction,
    run_ood,
    single_gain,
)
from tvutils.taskvec.training import TrainConfig, fine_tune


def planted_vector(model0: OneLayerTransformer, mu: torch.Tensor, shared: torch.Tensor) -> TaskVector:
    """ΔV rows = sign(a_r)·μ + shared (what fine-tuning learns, plus a bias common to every task); ΔW = 0."""
    sign = torch.sign(model0.a[0])  # (m,)
    dV = sign[:, None] * mu[None, :] + shared[None, :]
    return TaskVector({"W": torch.zeros_like(model0.W), "V": dV})


def test_readout_recovers_gamma_where_whole_vector_cosine_does_not():
    d, gam = 12, (0.6, -0.8)
    model0 = OneLayerTransformer(LearnerConfig(d=d, m=8, P=4), seed=0)
    e = torch.eye(d)
    shared = 2.0 * e[5]  # a large component common to every task vector
    tvs = [planted_vector(model0, e[0], shared), planted_vector(model0, e[1], shared)]
    target = planted_vector(model0, gam[0] * e[0] + gam[1] * e[1], shared)
    r = readout_direction(model0, tvs[0])
    assert r.shape == (d,) and float(r[5]) == pytest.approx(0.0, abs=1e-6)  # the shared part cancels
    assert np.allclose(gamma_from_readout(model0, tvs, target), gam, atol=1e-6)
    cos = gamma_from_cosine(tvs, target)
    assert cos.shape == (2,) and abs(cos[1] - gam[1]) > 0.3  # the shared component hides the negative γ₂


def test_gamma_from_outputs_on_a_small_fine_tune():
    cfg = DataConfig(d=16, P=8, M=6, disc_frac=0.5)
    ood = ood_tasks((0.8, -0.6), 0.0, cfg)
    model0 = OneLayerTransformer(LearnerConfig(d=16, m=16, P=8), seed=0)
    train = TrainConfig(max_steps=200, n_test=200, batch_size=32, eval_every=20)
    models = [fine_tune(model0, t, train, seed=i)[0] for i, t in enumerate(ood.sources)]
    sets = [t.sample(400, torch.Generator().manual_seed(50 + i)) for i, t in enumerate(ood.sources)]
    target = ood.target.sample(400, torch.Generator().manual_seed(99))
    gamma_hat = gamma_from_outputs(model0, models, sets, target)
    assert np.all(np.sign(gamma_hat) == np.sign(ood.gammas))
    assert np.max(np.abs(gamma_hat - np.array(ood.gammas))) < 0.1
    with pytest.raises(ValueError):
        gamma_from_outputs(model0, models, sets[:1], target)
    with pytest.raises(ValueError):  # Ψ⁽⁰⁾ itself adds no margin
        gamma_from_outputs(model0, [model0], sets[:1], target)

    target_model = fine_tune(model0, ood.target, train, seed=7)[0]
    lam1, lam2 = np.array([0.0, 1.0, 2.0]), np.array([-1.0, 0.0, 1.0])
    run = run_ood(model0, ood, [*models, target_model], lam1, lam2, n_test=100, seed=0)
    assert run.loss.shape == (2, 3, 3) and run.mean_loss.shape == (3, 3)
    i, j = run.cell(1.0, 0.0)
    with torch.no_grad():  # the grid cell (1, 0) is Ψ*_T1 itself
        X, y = ood.target.sample(100, torch.Generator().manual_seed(seeds.ood_test(0, 0)))
        direct = float(torch.clamp(1 - y * models[0](X), min=0).mean())
    assert run.mean_loss[i, j] == pytest.approx(direct, abs=1e-4)
    assert np.allclose(run.gamma_readout, ood.gammas, atol=0.05)
    assert run.reference["Ψ*_T'"].shape == (2, 2)
    with pytest.raises(ValueError):
        run.cell(0.5, 0.0)


def _toy_run(loss: np.ndarray) -> OODRun:
    lam1, lam2 = np.array([-1.0, 0.0, 1.0, 2.0]), np.array([-1.0, 0.0, 1.0])
    err = np.zeros_like(loss)
    return OODRun(0, np.array([0.8, -0.6]), lam1, lam2, loss, err, {}, np.array([0.78, -0.58]), None, None)


def test_best_single_and_gains_choose_on_half_a_and_score_on_half_b():
    loss = np.ones((2, 4, 3))
    loss[:, 3, 1] = [0.3, 0.4]  # ΔΨ_T1 rescaled to λ₁ = 2 (λ₂ = 0) is the best single vector
    loss[:, 2, 0] = [0.1, 0.2]  # the best merge (1, −1), λᵢ ≠ 0
    loss[:, 1, 2] = [0.9, 0.0]  # ΔΨ_T2 alone: best on half B, but not chosen on half A
    run = _toy_run(loss)
    assert best_single(run) == (3, 1)
    assert single_gain(run) == pytest.approx(0.4 - 0.2)
    assert merge_gain(run) == pytest.approx(min(1.0, 0.0) - 0.2)  # the source Ψ*_T2 = (0, 1) scores 0 on B
    flat = _toy_run(np.zeros((2, 4, 3)))
    assert single_gain(flat) == 0.0  # zero loss on both: no gain
    with pytest.raises(ValueError, match="λ₁ = 0"):
        best_single(OODRun(0, run.gammas, run.lam1 + 0.5, run.lam2, loss, loss, {}, run.gammas, None, None))


def test_drawn_regions_nest_as_their_thresholds():
    run = _toy_run(np.zeros((2, 4, 3)))
    r = drawn_regions(run, c=0.1, beta=1 / 64, fitted=(0.5, -np.inf), authors=0.19)
    assert set(r) == {LITERAL_HAT, LITERAL_TRUE, AUTHORS, FITTED}
    assert all(m.shape == (4, 3) for m in r.values())
    assert (r[LITERAL_HAT] <= r[AUTHORS]).all() and r[AUTHORS].sum() > r[LITERAL_HAT].sum()  # 0.19 < 1 + c
    assert r[LITERAL_HAT][3, 1] and not r[LITERAL_HAT][3, 0]  # (2, 0): s₁ = 1.56, s₂ = 1.22; (2, −1): s₂ = 0.88
