"""Seeds of the vision case study by role (tvutils.vision.seeds)."""

from __future__ import annotations

import pytest

from tvutils.vision import seeds


def test_no_seed_serves_two_purposes_over_runs_and_tasks():
    used = []
    for run in range(20):
        used += [seeds.head(run), seeds.halves(run)]
        for task in seeds.TASK_ROLES:
            used += [seeds.finetune(run, task), seeds.train_draws(run, task)]
    assert len(used) == len(set(used))
    with pytest.raises(ValueError, match="unknown task"):
        seeds.finetune(0, "T3")
