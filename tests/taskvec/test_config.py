"""Tests of tvutils.taskvec.config: one builder of the theory chapters' configs."""

import pytest

from tvutils.chapter.params import resolve
from tvutils.taskvec.config import THEORY_DEFAULTS, setting


def test_setting_builds_the_three_configs_from_the_parameters():
    P = resolve(THEORY_DEFAULTS | {"seeds": [0]}, "default")
    data, learner, train = setting(P)
    assert (data.d, data.P, data.M, data.disc_frac, data.noise) == (64, 20, 20, 0.3, 0.0)
    assert (learner.d, learner.m, learner.P, learner.v_init, learner.a_per_position) == (64, 128, 20, 0.01, False)
    assert (train.lr, train.lr_W, train.batch_size, train.max_steps) == (1.0, None, 64, 3000)
    assert (train.target_error, train.target_loss) == (0.01, 0.05)
    other = setting(P, d=128, M=40, a_per_position=True, epsilon=0.01)
    assert other.data.d == other.learner.d == 128 and other.data.M == 40 and other.learner.a_per_position
    assert other.train.target_loss == 0.01
    assert setting(THEORY_DEFAULTS) == setting(P)


def test_setting_refuses_unknown_and_missing_names():
    with pytest.raises(ValueError, match="unknown setting"):
        setting(THEORY_DEFAULTS, depth=3)
    with pytest.raises(ValueError, match="lack"):
        setting({"d": 64})
