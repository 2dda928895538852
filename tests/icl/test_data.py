import math

import pytest
import torch

from tvutils.icl.data import (
    CONSTRUCTIONS,
    DataConfig,
    all_tasks,
    both_ways_cycle_tasks,
    coverage,
    cycle_tasks,
    idr_patterns,
    irrelevant_patterns,
    noncovering_tasks,
    ood_coefficients,
    ood_patterns,
    ood_supports,
    random_tasks,
    sample_prompts,
    training_tasks,
    unseen_tasks,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CFG = DataConfig()


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_prompts_hold_the_stated_fractions(alpha):
    p = sample_prompts(idr_patterns(CFG), cycle_tasks(6), 4000, 20, alpha, CFG, gen(1))
    assert abs(float(p.relevant.float().mean()) - alpha) < 0.01  # a fraction α of the context is task-relevant
    same = (p.pattern[:, :-1] == p.pattern[:, -1:]).float().mean()
    assert abs(float(same) - alpha / 2) < 0.01  # α/2 shares the query's pattern
    assert abs(float((p.z > 0).float().mean()) - 0.5) < 0.02  # the query is μ_a or μ_b with probability 1/2


def test_prompt_columns_are_patterns_plus_kappa_nu_and_labels():
    tasks = cycle_tasks(6)
    p = sample_prompts(idr_patterns(CFG), tasks, 500, 10, 0.6, CFG, gen(2))
    assert p.P.shape == (500, 11, CFG.D) and p.z.shape == (500,)
    x, y = p.P[..., : CFG.d], p.P[..., CFG.d :]
    assert torch.equal(x[..., : CFG.M1].argmax(-1), p.pattern)  # the relevant component is the recorded pattern
    assert torch.allclose(x[..., : CFG.M1].sum(-1), torch.ones(500, 11))
    nu = x[..., CFG.M1 : CFG.M1 + CFG.M2]
    assert torch.allclose(nu.sum(-1), torch.full((500, 11), CFG.kappa))  # one irrelevant pattern, weight κ
    assert torch.equal(y[:, -1], torch.zeros(500, CFG.d_y))  # the query's label embedding is 0
    assert torch.equal(y[:, :-1, 1:], torch.zeros(500, 10, CFG.d_y - 1))  # labels are ±q with q = e_0
    pairs = torch.tensor(tasks)
    for n in range(50):  # the query's pattern is its task's a (z = +1) or b (z = −1); relevant examples agree
        q_pat, z = int(p.pattern[n, -1]), float(p.z[n])
        task = [t for t in tasks if (t[0] == q_pat and z > 0) or (t[1] == q_pat and z < 0)]
        assert task, "the query's label matches a task containing its pattern"
        rel = p.relevant[n]
        lab = y[n, :-1, 0]
        a_like = (p.pattern[n, :-1] == q_pat) & rel
        assert torch.all(lab[a_like] == z)
    assert pairs.shape[1] == 2


def test_prompts_are_deterministic():
    a = sample_prompts(idr_patterns(CFG), cycle_tasks(6), 64, 20, 0.8, CFG, gen(5))
    b = sample_prompts(idr_patterns(CFG), cycle_tasks(6), 64, 20, 0.8, CFG, gen(5))
    c = sample_prompts(idr_patterns(CFG), cycle_tasks(6), 64, 20, 0.8, CFG, gen(6))
    assert torch.equal(a.P, b.P) and torch.equal(a.z, b.z)
    assert not torch.equal(a.P, c.P)


def test_patterns_are_orthonormal():
    pats = torch.cat([idr_patterns(CFG), irrelevant_patterns(CFG)])
    assert torch.allclose(pats @ pats.T, torch.eye(CFG.M1 + CFG.M2))


def test_task_sets_and_coverage():
    assert len(all_tasks(6)) == 30
    assert coverage(cycle_tasks(6), 6) == 1.0 and len(cycle_tasks(6)) == 6
    both = both_ways_cycle_tasks(6)
    assert len(both) == 12 and coverage(both, 6) == 1.0 and all((b, a) in both for a, b in both)
    assert len(both_ways_cycle_tasks(6, (1, 2))) == 24
    non = noncovering_tasks(12, 6, gen(0))
    assert len(set(non)) == 12 and coverage(non, 6) < 1.0 and all(b != 0 for _, b in non)
    rnd = random_tasks(10, 6, gen(1))
    assert len(set(rnd)) == 10 and set(rnd) <= set(all_tasks(6))
    assert set(unseen_tasks(cycle_tasks(6), 6)) == set(all_tasks(6)) - set(cycle_tasks(6))
    assert training_tasks("both-ways cycle", 12, 6, None) == both
    with pytest.raises(ValueError, match="not 7"):
        training_tasks("cycle", 7, 6, None)
    with pytest.raises(ValueError, match="unknown kind"):
        training_tasks("star", 6, 6, gen(0))


@pytest.mark.parametrize("construction", list(CONSTRUCTIONS))
@pytest.mark.parametrize("S1", [0.5, 0.9, 1.3])
def test_ood_patterns_have_coefficient_sum_S1(construction, S1):
    pats = ood_patterns(construction, S1, CFG)
    assert pats.shape == (3, CFG.d)
    assert torch.allclose(pats.sum(1), torch.full((3,), S1))
    assert torch.all(pats[:, CFG.M1 :] == 0)  # combinations of IDR patterns only
    if construction == "unit norm":
        assert torch.allclose(pats.norm(dim=1), torch.ones(3))
    assert math.isclose(sum(ood_coefficients(construction, S1)), S1)


def test_ood_supports_relative_to_the_cycle():
    cycle = set(cycle_tasks(6)) | {(b, a) for a, b in cycle_tasks(6)}
    assert not any(pair in cycle for pair in ood_supports("unpaired", 6))  # never in one training task
    assert all(pair in cycle for pair in ood_supports("opposed", 6))  # the two labels of one task
    with pytest.raises(ValueError, match="even M1"):
        ood_supports("unpaired", 7)
    with pytest.raises(ValueError, match="√2"):
        ood_coefficients("unit norm", 1.5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="d ≥ M1 \\+ M2"):
        DataConfig(d=20)
    with pytest.raises(ValueError, match="α must lie"):
        sample_prompts(idr_patterns(CFG), cycle_tasks(6), 4, 5, 1.5, CFG, gen())
    with pytest.raises(ValueError, match="distinct indices"):
        sample_prompts(idr_patterns(CFG), [(0, 0)], 4, 5, 0.5, CFG, gen())
