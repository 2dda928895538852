"""Benchmark: what one torch operation of the book's small models costs on this CPU (``tvutils.chapter.cost``).

The chapters' time estimates (``tvutils.chapter.cost``) bound a stage of tiny-model work by its sequential calls
× the torch operations each dispatches × a per-operation cost. On the CPU that cost can be measured: this script
times SGD steps of Part II's one-layer learner (chapter 10's setting) and Adam steps of its GPT-2 (chapter 11's),
counts the operations one step dispatches (``count_ops``), and prints the seconds per operation. The constant
``CPU_CORE.op_overhead`` comes from a run of this script (benchmarks/README.md, §4).

    TVUTILS_PROGRESS=0 .venv/bin/python benchmarks/bench_cost.py        # about half a minute
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tvutils.chapter.cost import CPU_CORE  # noqa: E402
from tvutils.icl import work  # noqa: E402
from tvutils.icl.config import GPT2_DEFAULTS, ICL_DEFAULTS, gpt2_setting, setting  # noqa: E402
from tvutils.icl.data import both_ways_cycle_tasks, idr_patterns, sample_prompts  # noqa: E402
from tvutils.icl.experiments import pretrained  # noqa: E402
from tvutils.icl.gpt2 import GPT2Learner  # noqa: E402
from tvutils.icl.training import train  # noqa: E402


def per_op(model: torch.nn.Module, tasks: list, data_cfg, cfg, steps: int, repeats: int = 3) -> tuple[float, int]:
    """(median seconds per op over ``repeats`` trainings of ``steps`` steps, ops per step)."""
    val = sample_prompts(idr_patterns(data_cfg), tasks, 8, 4, 0.8, data_cfg, torch.Generator().manual_seed(0))
    ops = work.ops_per_step(model, tasks, data_cfg, cfg)
    run = replace(cfg, steps=steps, eval_every=steps, stop_error=None)
    train(model, tasks, data_cfg, replace(run, steps=5, eval_every=5), 0, val)  # warm-up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        train(model, tasks, data_cfg, run, r, val)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / (steps * ops), ops


def main() -> None:
    torch.set_num_threads(1)
    P = SimpleNamespace(**(ICL_DEFAULTS | GPT2_DEFAULTS | {"device": "cpu"}))
    data_cfg, learner_cfg, train_cfg = setting(P)
    tasks = both_ways_cycle_tasks(P.M1)
    s1, n1 = per_op(pretrained(learner_cfg, 0), tasks, data_cfg, train_cfg, 300)
    gcfg, gtrain = gpt2_setting(P)
    s2, n2 = per_op(GPT2Learner(gcfg, seed=0), both_ways_cycle_tasks(P.M1, [1, 2]), data_cfg, gtrain, 30)
    print(f"one-layer learner (chapter 10): {n1} ops per SGD step of {train_cfg.batch_size}, {s1 * 1e6:.1f} µs per op")
    print(f"GPT-2 learner (chapter 11): {n2} ops per Adam step of {gtrain.batch_size}, {s2 * 1e6:.1f} µs per op")
    print(f"tvutils.chapter.cost.CPU_CORE.op_overhead = {CPU_CORE.op_overhead * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
