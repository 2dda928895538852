import math

import pytest
import torch

from tvutils.taskvec.data import DataConfig, Task, majority_labels, ood_tasks, task_direction, task_pair


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_labels_follow_the_majority_rule():
    cfg = DataConfig(d=32, P=15, M=10, disc_frac=0.4, noise=0.05)
    t1, _ = task_pair(0.3, cfg)
    X, y = t1.sample(500, gen())
    assert X.shape == (500, 15, 32) and y.shape == (500,)
    assert torch.equal(majority_labels(X, t1.mu), y)
    assert set(y.tolist()) == {-1.0, 1.0}


def test_tokens_are_patterns_and_counts_match_the_config():
    cfg = DataConfig(d=32, P=20, M=10, disc_frac=0.3)
    t1, _ = task_pair(0.0, cfg)
    X, _ = t1.sample(200, gen(1))
    proj = X @ t1.mu  # (n, P)
    assert torch.equal((proj.abs() > 0.5).sum(1), torch.full((200,), cfg.n_disc))
    norms = X.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms))


@pytest.mark.parametrize("alpha", [-1.0, -0.8, -0.37, 0.0, 0.5, 1.0])
def test_pair_has_the_requested_correlation(alpha):
    t1, t2 = task_pair(alpha, DataConfig())
    assert abs(float(t1.mu @ t2.mu) - alpha) < 1e-6
    assert abs(float(t2.mu.norm()) - 1) < 1e-6


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="α must lie"):
        task_pair(1.5, DataConfig())
    with pytest.raises(ValueError, match="d ≥ M"):
        DataConfig(d=10, M=10)
    cfg = DataConfig(d=16, M=8)
    with pytest.raises(ValueError, match="unit norm"):
        Task(2 * task_direction(0, cfg), cfg)
    with pytest.raises(ValueError, match="irrelevant"):
        Task(torch.eye(16)[-1], cfg)


def test_ood_task_normalises_and_is_orthogonal():
    cfg = DataConfig()
    ood = ood_tasks((0.792, -0.637), 0.0, cfg)
    g = ood.gammas
    assert math.isclose(g[0] ** 2 + g[1] ** 2, 1.0, rel_tol=1e-9)
    assert abs(float(ood.sources[0].mu @ ood.sources[1].mu)) < 1e-9
    assert abs(float(ood.target.mu @ ood.sources[0].mu) - g[0]) < 1e-6
    with pytest.raises(ValueError, match="≠ 1"):
        ood_tasks((0.792, -0.637), 0.0, cfg, normalize=False)
    kappa = ood_tasks((0.6, 0.6), 0.5, cfg)
    assert kappa.kappa > 0 and abs(float(kappa.target.mu.norm()) - 1) < 1e-6


def test_same_seed_same_samples():
    t1, _ = task_pair(0.2, DataConfig())
    a, b = t1.sample(50, gen(3)), t1.sample(50, gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
