import numpy as np
import pytest
import torch

from tvutils.taskvec import experiments as ex
from tvutils.taskvec import seeds
from tvutils.taskvec.data import DataConfig, task_pair
from tvutils.taskvec.grid import evaluate_merges_loop
from tvutils.taskvec.model import LearnerConfig
from tvutils.taskvec.training import TrainConfig

torch.set_num_threads(1)

DATA = DataConfig(d=16, P=8, M=6, disc_frac=0.5)
LEARNER = LearnerConfig(d=DATA.d, P=DATA.P, m=16)
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
    X, y = ex.fresh_set(pair.t2[1].task, 200, seeds.test_set(0, seeds.pair_t2(0.0)))
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


def test_task_pair_used_for_t1_is_alpha_independent():
    t1_a, _ = task_pair(0.3, DATA)
    t1_b, _ = task_pair(-0.7, DATA)
    assert torch.equal(t1_a.mu, t1_b.mu)


def test_setup_run_measures_on_held_out_sets_and_rebuilds_exactly():
    run = ex.setup_run(0, DATA, LEARNER, TRAIN, 200, 1.2)
    assert run.rebuild_error() <= 1e-6
    scores = run.losses(run.merged)
    assert set(scores) == {"T1 loss", "T1 accuracy", "T2 loss", "T2 accuracy"}
    assert all(0 <= scores[k] <= 1 for k in ("T1 accuracy", "T2 accuracy"))
    stop = torch.Generator().manual_seed(seeds.stopping_set(seeds.finetune(0, seeds.T1)))
    X_stop, _ = run.t1.task.sample(200, stop)
    assert not torch.equal(X_stop, run.test1[0])  # the held-out set is not the stopping set
    again = ex.setup_run(0, DATA, LEARNER, TRAIN, 200, 1.2)
    assert again.losses(again.merged) == scores  # deterministic
