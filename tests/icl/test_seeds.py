import pytest

from tvutils.icl import seeds


def test_roles_never_share_a_seed():
    values = [
        f(r, k) for f in (seeds.task_set, seeds.test, seeds.ood_test, seeds.mask) for r in range(5) for k in range(60)
    ]
    values += [f(r) for f in (seeds.init, seeds.training, seeds.validation) for r in range(5)]
    assert len(values) == len(set(values))
    assert seeds.init(3) == seeds.init(3)


def test_out_of_range_raises():
    with pytest.raises(ValueError, match="k in"):
        seeds.test(0, 10_000)
    with pytest.raises(ValueError, match="run must be"):
        seeds.training(-1)
