import time

import torch

from tvutils.taskvec.data import DataConfig, task_pair
from tvutils.taskvec.model import LearnerConfig, OneLayerTransformer
from tvutils.taskvec.training import TrainConfig, evaluate, fine_tune


def setup():
    dc = DataConfig()
    t1, _ = task_pair(0.0, dc)
    return t1, OneLayerTransformer(LearnerConfig(d=dc.d, P=dc.P), seed=0)


def test_fine_tuning_reaches_99_percent_within_budget_in_under_30s():
    t1, model0 = setup()
    start = time.perf_counter()
    tuned, hist = fine_tune(model0, t1, TrainConfig(), seed=1)
    elapsed = time.perf_counter() - start
    X, y = t1.sample(4000, torch.Generator().manual_seed(99))  # a fresh test set
    loss, err = evaluate(tuned, X, y)
    assert hist.reached and hist.steps <= TrainConfig().max_steps
    assert 1 - err >= 0.99
    assert loss <= 0.1
    assert elapsed < 30, f"fine-tuning took {elapsed:.1f} s"


def test_same_seed_gives_identical_weights_and_base_untouched():
    t1, model0 = setup()
    before = {k: v.clone() for k, v in model0.state_dict().items()}
    cfg = TrainConfig(max_steps=60, target_error=0.0, target_loss=0.0)
    a, ha = fine_tune(model0, t1, cfg, seed=4)
    b, hb = fine_tune(model0, t1, cfg, seed=4)
    c, _ = fine_tune(model0, t1, cfg, seed=5)
    for key in a.state_dict():
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
        assert torch.equal(model0.state_dict()[key], before[key])
    assert ha.test_loss == hb.test_loss
    assert not torch.equal(a.V, c.V)
    assert not ha.reached and ha.steps == 60


def test_device_argument_trains_the_same_weights_on_the_cpu():
    t1, model0 = setup()
    cfg = TrainConfig(max_steps=40, target_error=0.0, target_loss=0.0)
    a, ha = fine_tune(model0, t1, cfg, seed=4)
    b, hb = fine_tune(model0, t1, cfg, seed=4, device="cpu")
    assert b.V.device.type == "cpu" and torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
    assert ha.test_loss == hb.test_loss
