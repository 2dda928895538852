import numpy as np
import pytest
import torch

from tvutils.taskvec import experiments as ex
from tvutils.taskvec.data import DataConfig, task_pair
from tvutils.taskvec.grid import evaluate_merges_loop
from tvutils.taskvec.training import TrainConfig

torch.set_num_threads(1)

DATA = DataConfig(d=16, P=8, M=6, disc_frac=0.5)
LEARNER = ex.learner_config(DATA, m=16)
TRAIN = TrainConfig(lr=1.0, batch_size=32, max_steps=400, eval_every=25, n_test=300, target_error=None, target_loss=0.1)


@pytest.fixture(scope="module")
def pair() -> ex.PairVectors:
    return ex.pair_vectors([-1.0, 0.0, 0.6], DATA, LEARNER, TRAIN, seed=0)


def test_pair_vectors_fine_tunes_from_one_psi0(pair):
    assert pair.t1.reached and all(t.reached for t in pair.t2)
    assert len(pair.t2) == 3 and pair.alphas.tolist() == [-1.0, 0.0, 0.6]
    # ΔΨ = Ψ* − Ψ⁽⁰⁾ for every fine-tuned model, all from the same Ψ⁽⁰⁾
    for ft in [pair.t1, *pair.t2]:
        assert torch.allclose(pair.model0.V + ft.task_vector.deltas["V"], ft.model.V)
    assert torch.allclose(pair.t2[0].task.mu, -pair.t1.task.mu)  # α = −1: μ_T2 = −μ_T1


def test_pair_vectors_seeds_do_not_depend_on_the_grid(pair):
    again = ex.pair_vectors([0.6], DATA, LEARNER, TRAIN, seed=0)
    assert torch.equal(again.t2[0].task_vector.deltas["V"], pair.t2[2].task_vector.deltas["V"])
    assert torch.equal(again.t1.task_vector.deltas["W"], pair.t1.task_vector.deltas["W"])


def test_sweep_pairs_matches_building_each_merge(pair):
    lambdas = np.array([-1.0, 0.0, 1.0])
    sw = ex.sweep_pairs([pair], lambdas, n_test=200)
    assert sw.loss.shape == (1, 2, 3, 3) and sw.error.shape == (1, 2, 3, 3)
    assert sw.reached.all() and sw.cosine.shape == (1, 3)
    X, y = ex.test_set(pair.t2[1].task, 200, 1000 * 0 + 300 + ex.alpha_code(0.0))
    coef = np.stack([np.ones(3), lambdas], axis=1)
    loss, err = evaluate_merges_loop(pair.model0, pair.task_vectors(1), coef, X, y)
    np.testing.assert_allclose(sw.loss[0, 1, 1], loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sw.error[0, 1, 1], err, atol=1e-6)
    # λ = 0 on T1 is Ψ*_T1 itself, which was fine-tuned to a low loss
    assert sw.loss[0, 0, :, 1].max() < 0.3
    # a transform is applied to the task vectors before merging
    zero = ex.sweep_pairs([pair], lambdas, n_test=200, transform=lambda tv: 0.0 * tv)
    assert np.allclose(zero.loss[0, :, :, 0], zero.loss[0, :, :, 2])


def test_subset_keeps_the_chosen_alphas(pair):
    sub = pair.subset([True, False, True])
    assert sub.alphas.tolist() == [-1.0, 0.6] and sub.t2[1] is pair.t2[2]
    with pytest.raises(ValueError):
        pair.subset([True])


def test_success_rules():
    lambdas = np.array([-1.0, 0.0, 2.0])
    loss = np.zeros((2, 1, 3))  # (task, α, λ)
    loss[0] = [[0.12, 0.05, 0.12]]  # T1: 0.12 ≤ 0.1 + |λ|·0.02 only where |λ| ≥ 1
    loss[1] = [[0.9, 0.05, 0.11]]
    add = ex.addition_success(loss, lambdas, eps=0.05, eps_factor=2, beta=0.02)
    assert add.tolist() == [[False, True, False]]  # T2 must be ≤ 0.1 without the |λ|β allowance
    neg = ex.negation_success(loss, lambdas, eps=0.05, eps_factor=2, beta=0.02, forgotten=0.5)
    assert neg.tolist() == [[True, False, False]]
    with_seed_axis = ex.addition_success(loss[None], lambdas, 0.05, 2, 0.02)
    assert with_seed_axis.shape == (1, 1, 3)


def test_lowest_success_and_lower_limit():
    lambdas = np.array([-2.0, -1.0, 0.0, 1.0])
    success = np.array(
        [[False, False, True, True], [False, False, False, False], [True, False, True, True], [True, True, True, False]]
    )
    np.testing.assert_array_equal(ex.lowest_success(success, lambdas), [0.0, np.nan, -2.0, -2.0])
    limit, clipped = ex.lower_limit(success, lambdas, start=0.0)
    np.testing.assert_array_equal(limit, [0.0, np.nan, 0.0, -2.0])
    assert clipped.tolist() == [False, False, False, True]
    with pytest.raises(ValueError):
        ex.lower_limit(success, lambdas, start=0.5)


def test_fits():
    alpha = np.array([0.0, 0.5, 1.0, np.nan])
    slope, intercept = ex.fit_line(alpha, 1 - alpha)
    assert slope == pytest.approx(-1) and intercept == pytest.approx(1)
    assert np.isnan(ex.fit_line([1.0], [2.0])[0])
    a = np.array([-1.0, -0.5, -0.25])
    C, p = ex.fit_power(a, -0.8 / a**2)
    assert C == pytest.approx(0.8) and p == pytest.approx(2)
    # largest C with −C/α² ≥ the observed limit: min |limit|·α², clipped rows skipped
    limit = np.array([-1.0, -2.0, -3.0, -0.5])
    assert ex.largest_constant([-1.0, -0.5, 0.0, -0.2], limit) == pytest.approx(0.02)
    assert ex.largest_constant([-1.0, -0.5], [-1.0, -2.0], clipped=[False, True]) == pytest.approx(1.0)
    assert np.isnan(ex.largest_constant([0.0], [-1.0]))


def test_task_pair_used_for_t1_is_alpha_independent():
    t1_a, _ = task_pair(0.3, DATA)
    t1_b, _ = task_pair(-0.7, DATA)
    assert torch.equal(t1_a.mu, t1_b.mu)
