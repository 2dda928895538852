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
    assert seeds.setup_test_set(run, 3) == 9_000_000 + 100 * run + 3
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


def test_no_generator_seed_serves_two_purposes_over_twenty_runs():
    """Training, stopping, test and held-out sets never share a seed, for runs 0 … 19 (the full profiles)."""
    roles = [seeds.T1, seeds.T2, seeds.PRUNED_TARGET, seeds.LOW_RANK_TARGET]
    roles += [seeds.ood_target(k) for k in range(4)] + [seeds.pair_t2(a / 10) for a in range(-10, 11)]
    runs = range(20)
    sgd = [seeds.finetune(r, t) for r in runs for t in roles]
    groups = {
        "sgd": sgd,
        "stopping": [seeds.stopping_set(s) for s in sgd],
        "test": [seeds.test_set(r, t) for r in runs for t in roles],
        "ood": [seeds.ood_test(r, k) for r in runs for k in range(3)],
        "setup": [seeds.setup_test_set(r, k) for r in runs for k in range(1, 4)],
    }
    everything = [s for values in groups.values() for s in values]
    assert len(set(everything)) == len(everything)
    assert seeds.stopping_set(seeds.finetune(12, seeds.T1)) == 25_000_000 + 12_001
