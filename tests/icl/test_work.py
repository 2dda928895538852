"""Tests of tvutils.icl.work: the counted work of chapters 10-12 scales with their parameters."""

from types import SimpleNamespace

import pytest

from tvutils.chapter.cost import plan_table
from tvutils.icl import work
from tvutils.icl.config import GPT2_DEFAULTS, ICL_DEFAULTS
from tvutils.icl.model import LearnerConfig

SMALL = ICL_DEFAULTS | GPT2_DEFAULTS | {"steps": 20, "gpt2_steps": 4, "gpt2_warmup": 1, "seeds": [0, 1]}
P09 = SMALL | {
    "task_sets": [["cycle", 6], ["both-ways cycle", 12]],
    "n_test": 50,
    "test_length": 20,
    "alphas_test": [0.4, 0.8],
    "lengths": [2, 8],
    "alphas_train": [0.4, 0.8],
    "max_steps": 40,
}
P10 = SMALL | {
    "device": "cpu",
    "gpt2_distances": [1, 2],
    "S1s": [0.5, 1.3],
    "n_test": 50,
    "test_length": 20,
    "alphas_test": [0.4, 0.8],
    "lengths": [2, 8],
    "gpt2_n_test": 10,
    "gpt2_lengths": [4, 16],
}
P11 = SMALL | {"device": "cpu", "gpt2_distances": [1, 2], "n_test": 50, "test_length": 20, "fractions": [0.0, 0.5],
               "alphas_prune": [0.8], "draws": 2, "gpt2_fractions": [0.0, 0.9], "gpt2_n_test": 10, "gpt2_draws": 1}  # fmt: skip


def ns(base, **changes):
    return SimpleNamespace(**(base | changes))


def by_stage(stages):
    return {s.stage: s for s in stages}


def test_learner_flops_formula_and_gpt2_flops_grow_with_length():
    cfg = LearnerConfig(D=36, m=64)
    assert work.learner_flops(cfg, 20) == 6 * 36 * 36 + 4 * 20 * 36 + 2 * 64 * 36 + 2 * 64
    assert work.gpt2_flops(50_000, 3, 64, 36, 40) > 2 * work.gpt2_flops(50_000, 3, 64, 36, 20)  # T and T² terms


def test_ops_per_step_exceed_an_evaluation():
    from tvutils.icl.config import setting
    from tvutils.icl.data import both_ways_cycle_tasks
    from tvutils.icl.experiments import pretrained

    data, learner, train = setting(SMALL)
    model, tasks = pretrained(learner, 0), both_ways_cycle_tasks(SMALL["M1"])
    step, evaluation = work.ops_per_step(model, tasks, data, train), work.ops_per_evaluation(model, data, tasks)
    assert step > evaluation > 10  # a step also runs backward and the update


def test_in_domain_counts_scale_with_seeds_and_steps():
    one = by_stage(work.in_domain(ns(P09)))
    seeds = by_stage(work.in_domain(ns(P09, seeds=[0, 1, 2, 3])))
    steps = by_stage(work.in_domain(ns(P09, steps=40)))
    sets = one["training sets"]
    assert sets.training == 2 * 2 * 20 * 64  # sets × seeds × steps × batch
    assert seeds["training sets"].training == 2 * sets.training and steps["training sets"].training == 2 * sets.training
    assert seeds["prompt length"].forward == 2 * one["prompt length"].forward == 2 * 2 * 2 * 2 * 50
    assert one["iterations (at most)"].training == 2 * 2 * 40 * 64
    assert all(s.where == "cpu" for s in one.values())  # chapter 10 has no device


def test_out_of_domain_gpt2_runs_on_the_device_only_when_given():
    cpu = by_stage(work.out_of_domain(ns(P10)))
    cuda = by_stage(work.out_of_domain(ns(P10, device="cuda")))
    assert cpu["GPT-2 training"].where == "cpu" and cuda["GPT-2 training"].where == "device"
    assert cuda["GPT-2 S₁ cells"].where == "cpu"  # evaluated on the CPU after training
    assert cpu["GPT-2 training"].training == 2 * 4 * SMALL["gpt2_batch_size"]
    assert cpu["S₁ cells"].calls == 3 * 2 * 2  # constructions × seeds × S₁
    longer = by_stage(work.out_of_domain(ns(P10, gpt2_steps=8)))
    assert longer["GPT-2 training"].training == 2 * cpu["GPT-2 training"].training
    table = plan_table(list(cuda.values()))
    assert table.loc["total", "minutes on T4"] < table.loc["total", "minutes on 1 CPU core"]


def test_mechanism_pruning_counts_scale_with_draws_and_seeds():
    one = by_stage(work.mechanism_pruning(ns(P11)))
    more = by_stage(work.mechanism_pruning(ns(P11, draws=4)))
    # per seed and set: smallest- and largest-first once, random `draws` times, per fraction
    assert one["pruning curves"].calls == 2 * 2 * (2 * 2 + 2 * 2)
    assert more["pruning curves"].calls == 2 * 2 * (2 * 2 + 2 * 4)
    seeds = by_stage(work.mechanism_pruning(ns(P11, seeds=[0, 1, 2, 3])))
    assert seeds["snapshots"].forward == pytest.approx(2 * one["snapshots"].forward)
    assert one["snapshots"].calls == 2 * 2 * 2  # seeds × (20 steps / 10) snapshots × 2 sets
