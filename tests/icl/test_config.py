import pytest

from tvutils.icl.config import GPT2_DEFAULTS, ICL_DEFAULTS, gpt2_setting, setting


def test_setting_builds_consistent_configs():
    data, learner, train = setting(ICL_DEFAULTS)
    assert learner.D == data.D == ICL_DEFAULTS["d"] + ICL_DEFAULTS["d_y"]
    assert train.alpha == ICL_DEFAULTS["alpha"] and train.optimizer == "sgd"
    assert setting(ICL_DEFAULTS, alpha=0.3).train.alpha == 0.3


def test_gpt2_setting():
    learner, train = gpt2_setting(ICL_DEFAULTS | GPT2_DEFAULTS, gpt2_steps=40)
    assert (learner.n_layer, learner.n_head, learner.n_embd) == (3, 2, 64)
    assert train.optimizer == "adam" and train.steps == 40 and train.eval_every == 2


def test_unknown_and_missing_keys_raise():
    with pytest.raises(ValueError, match="unknown setting"):
        setting(ICL_DEFAULTS, width=3)
    with pytest.raises(ValueError, match="lack the key"):
        setting({"M1": 6})
