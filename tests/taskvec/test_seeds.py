"""Tests of tvutils.taskvec.seeds: every role gives the value the chapters used before the roles had names."""

import pytest

from tvutils.taskvec import seeds


@pytest.mark.parametrize("run", [0, 1, 2, 7])
def test_roles_reproduce_the_old_arithmetic(run):
    assert seeds.init(run) == run
    assert seeds.finetune(run, seeds.T1) == 1000 * run + 1
    assert seeds.finetune(run, seeds.T2) == 1000 * run + 2
    for alpha in (-1.0, -0.4, 0.0, 0.6, 1.0):
        assert seeds.finetune(run, seeds.pair_t2(alpha)) == 1000 * run + 300 + int(round(100 * (alpha + 1)))
        assert seeds.test_set(run, seeds.pair_t2(alpha)) == 7_000_000 + 1000 * run + 300 + int(round(100 * (alpha + 1)))
    assert seeds.finetune(run, seeds.ood_target(1)) == 1000 * run + 11
    assert seeds.test_set(run, seeds.T1) == 7_000_000 + 1000 * run + 1
    assert seeds.test_set(run, seeds.LOW_RANK_TARGET) == 7_000_000 + 1000 * run + 999
    assert seeds.stopping_set(seeds.finetune(run, seeds.T1)) == 1000 * run + 1 + 10_000
    assert seeds.ood_test(run, 2) == 8_000_000 + 100 * run + 2
    assert seeds.setup_test_set(run, 3) == 10_000 * (run + 1) + 3
    assert seeds.mask(2, 1) == 2 + 17


def test_roles_are_distinct_within_a_run_and_runs_do_not_share_seeds():
    roles = [seeds.T1, seeds.T2, seeds.PRUNED_TARGET, seeds.LOW_RANK_TARGET, seeds.ood_target(0), seeds.ood_target(1)]
    roles += [seeds.pair_t2(a / 10) for a in range(-10, 11)]
    assert len(set(roles)) == len(roles)
    all_seeds = {seeds.finetune(run, r) for run in range(5) for r in roles}
    assert len(all_seeds) == 5 * len(roles)
    with pytest.raises(ValueError):
        seeds.finetune(0, 1000)
    with pytest.raises(ValueError):
        seeds.ood_test(0, 100)
