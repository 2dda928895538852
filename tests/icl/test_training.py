import pytest
import torch

from tvutils.icl.data import DataConfig, cycle_tasks, idr_patterns, sample_prompts
from tvutils.icl.model import ICLTransformer, LearnerConfig
from tvutils.icl.training import TrainConfig, evaluate, train

CFG = DataConfig()


def setup(steps=60):
    model = ICLTransformer(LearnerConfig(D=CFG.D, m=16), seed=0)
    val = sample_prompts(idr_patterns(CFG), cycle_tasks(6), 200, 20, 0.8, CFG, torch.Generator().manual_seed(9))
    return model, val, TrainConfig(steps=steps, eval_every=20)


def test_training_is_deterministic_and_leaves_the_start_untouched():
    model, val, cfg = setup()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    a, ha = train(model, cycle_tasks(6), CFG, cfg, seed=1, validation=val)
    b, hb = train(model, cycle_tasks(6), CFG, cfg, seed=1, validation=val)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in start)
    assert all(torch.equal(model.state_dict()[k], start[k]) for k in start)
    assert ha.val_error == hb.val_error and ha.step == [20, 40, 60]


def test_training_lowers_the_loss_and_keeps_snapshots():
    model, val, cfg = setup(steps=200)
    before = evaluate(model, val)[0]
    trained, hist = train(model, cycle_tasks(6), CFG, cfg, seed=0, validation=val, keep_snapshots=True)
    assert hist.val_loss[-1] < before
    assert len(hist.snapshots) == len(hist.step) and set(hist.snapshots[-1]) == set(trained.state_dict())


def test_stop_error_and_steps_to():
    model, val, _ = setup()
    _, hist = train(model, cycle_tasks(6), CFG, TrainConfig(steps=400, eval_every=10, stop_error=1.0), 0, val)
    assert hist.step == [10] and hist.steps_to(1.0) == 10.0
    assert hist.steps_to(-1.0) != hist.steps_to(-1.0)  # NaN: never reached


def test_adam_with_warmup_and_clipping_runs():
    model, val, _ = setup()
    cfg = TrainConfig(steps=20, eval_every=10, optimizer="adam", lr=1e-2, warmup=5, clip=1.0)
    _, hist = train(model, cycle_tasks(6), CFG, cfg, 0, val)
    assert len(hist.step) == 2


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr > 0"):
        TrainConfig(lr=0.0)
