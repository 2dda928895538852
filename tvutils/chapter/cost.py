"""What a chapter's run will compute, and how long that takes on a T4, an A100 and one CPU core: model-agnostic.

A chapter lists its run as ``Stage``s (counted from its resolved parameters before anything is trained):
samples (or tokens) through the model forward only and through forward + backward, the FLOPs of that, and the
number of sequential calls (SGD steps, evaluation calls) with the torch operations each dispatches. A stage's
time on a device is the larger of two bounds (``seconds``)::

    max(FLOPs / FLOP/s,  bytes / (bytes/s),  calls × ops per call × seconds per op)

The first two are the throughput bounds (large products, weight reads); the third is the overhead bound: the
book's theory models are so small (one-layer transformers, d and m below ~1000, a 3-layer GPT-2 of width 64)
that on a GPU each step is a few dozen tiny kernels, each costing its launch and Python's dispatch whatever its
size. Taking the larger (not the sum) assumes the two overlap (CUDA runs asynchronously); it is a lower estimate
where they do not.

The GPUs' constants below are ASSUMED, not measured (no GPU was available where the book was written): the
fp32 FLOP/s and bandwidth are fractions of the data sheets' peaks, and the per-op overhead is the usual order of
PyTorch eager dispatch plus a CUDA launch on the host CPUs Colab pairs with those GPUs. One CPU core's per-op
cost is measured (``benchmarks/bench_cost.py``); each ``Device`` says which (``op_source``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Device:
    """Sustained throughput assumed for a device: FLOP/s of large fp32 matrix products, bytes/s of memory, and
    the seconds one torch operation costs however small (dispatch, and on a GPU its kernel launch)."""

    name: str
    flops: float
    bandwidth: float
    op_overhead: float = 0.0
    op_source: str = "assumed"  # where op_overhead comes from

    @property
    def short(self) -> str:
        """The device's name without its assumptions, e.g. 'T4'."""
        return self.name.split(" (")[0]


# 40 % of the data-sheet fp32 peak (PyTorch's default fp32 matmul, no TF32) and 70 % of the memory bandwidth;
# per op: 10 µs on a T4 (ASSUMED: Colab's 2-vCPU host), 6 µs on an A100 (ASSUMED: a faster host), and 15 µs on a
# CPU core, MEASURED: benchmarks/bench_cost.py times SGD steps of chapter 10's learner on the CI machine (2-core
# EPYC, 2026-12-02): 14.4 µs per op (138 ops a step; an Adam step of chapter 11's GPT-2: 39.7 µs per op, where
# the arithmetic counts too). A bare op's dispatch is about 3 µs; autograd and the batch's own work make the rest.
T4 = Device("T4 (fp32: 40 % of 8.1 TFLOP/s, 70 % of 320 GB/s)", 0.4 * 8.1e12, 0.7 * 320e9, 10e-6)
A100 = Device("A100 (fp32: 40 % of 19.5 TFLOP/s, 70 % of 1.56 TB/s)", 0.4 * 19.5e12, 0.7 * 1555e9, 6e-6)
CPU_CORE = Device("1 CPU core (30 GFLOP/s, 10 GB/s)", 30e9, 10e9, 15e-6, "measured, benchmarks/bench_cost.py")
DEVICES = (T4, A100, CPU_CORE)
TRAINING_FACTOR = 3  # a training pass (forward + backward) ≈ 3 forward passes of arithmetic


@dataclass(frozen=True)
class Stage:
    """One stage of a run: what it computes and in how many sequential calls.

    ``forward``/``training``: samples (or tokens) through the model forward only / forward + backward;
    ``flops``: the arithmetic of both; ``calls``: sequential calls (SGD steps, evaluation calls), each
    dispatching ``ops_per_call`` torch operations; ``where``: "device" (the accelerator the run is given) or
    "cpu" (stays on the host's CPU whatever the device); ``bytes``: memory traffic, where it bounds the time.
    """

    stage: str
    what: str
    forward: float = 0.0
    training: float = 0.0
    flops: float = 0.0
    calls: int = 0
    ops_per_call: float = 0.0
    where: str = "device"
    bytes: float = 0.0

    def __post_init__(self) -> None:
        if self.where not in ("device", "cpu"):
            raise ValueError(f"stage {self.stage!r}: where must be 'device' or 'cpu', got {self.where!r}")
        if min(self.forward, self.training, self.flops, self.calls, self.ops_per_call, self.bytes) < 0:
            raise ValueError(f"stage {self.stage!r}: counts must be ≥ 0, got {self}")


def evaluations(steps: int, every: int) -> int:
    """How many evaluations a training of ``steps`` steps makes, one every ``every`` steps and one at the end."""
    return steps // every + (steps % every != 0)


def seconds(stage: Stage, device: Device, host: Device = CPU_CORE) -> float:
    """The stage's time on ``device`` (``host`` for a stage that stays on the CPU): the larger of its FLOP,
    memory and per-op overhead bounds (see the module docstring)."""
    d = device if stage.where == "device" else host
    return max(stage.flops / d.flops, stage.bytes / d.bandwidth, stage.calls * stage.ops_per_call * d.op_overhead)


def bound(stage: Stage, device: Device, host: Device = CPU_CORE) -> str:
    """Which bound sets the stage's time on ``device``: 'FLOPs', 'memory' or 'overhead'."""
    d = device if stage.where == "device" else host
    times = {"FLOPs": stage.flops / d.flops, "memory": stage.bytes / d.bandwidth,
             "overhead": stage.calls * stage.ops_per_call * d.op_overhead}  # fmt: skip
    return max(times, key=times.get)


def plan_table(
    stages: Sequence[Stage], devices: Sequence[Device] = DEVICES, unit: str = "samples", device_name: str = "GPU"
) -> pd.DataFrame:
    """The plan as a table, one row a stage plus a total: what it runs on, its counts, minutes per device, and
    which bound (``bound``) sets each stage's time on the first device.

    ``device_name`` names where a "device" stage runs ("cpu" when the run is given no accelerator)."""
    if not stages:
        raise ValueError("a plan needs at least one stage")
    rows = []
    for s in stages:
        row = {"stage": s.stage, "what": s.what, "runs on": device_name if s.where == "device" else "CPU",
               f"forward ({unit})": s.forward, f"training ({unit}, fwd + bwd)": s.training, "GFLOP": s.flops / 1e9,
               "sequential calls": s.calls, "ops per call": s.ops_per_call}  # fmt: skip
        for d in devices:
            row[f"minutes on {d.short}"] = seconds(s, d) / 60
        row[f"bound on {devices[0].short}"] = bound(s, devices[0])
        rows.append(row)
    table = pd.DataFrame(rows)
    bound_col = f"bound on {devices[0].short}"
    sums = table.drop(columns=["stage", "what", "runs on", "ops per call", bound_col]).sum()
    table.loc[len(table)] = {"stage": "total", "what": "", "runs on": "", "ops per call": math.nan, bound_col: "",
                             **sums.to_dict()}  # fmt: skip
    counts = [f"forward ({unit})", f"training ({unit}, fwd + bwd)", "sequential calls"]
    table[counts] = table[counts].round().astype("int64")
    return table.set_index("stage")


def styled_plan(table: pd.DataFrame, uuid: str) -> Any:
    """A plan table for the page (``tvutils.chapter.verdict.styled``): counts with thousands separators, GFLOP to
    one decimal, minutes to two, and room for the "what" column (it wraps into a narrow column otherwise)."""
    from .verdict import styled

    minutes = [c for c in table.columns if c.startswith("minutes on")]
    counts = [c for c in table.columns if c.startswith(("forward", "training")) or c == "sequential calls"]
    formats = {"GFLOP": "{:,.1f}", "ops per call": "{:,.0f}"} | dict.fromkeys(minutes, "{:,.2f}")
    formats |= dict.fromkeys(counts, "{:,}")
    return (
        styled(table.reset_index(), uuid)
        .format(formats, na_rep="")
        .set_properties(subset=["what"], **{"min-width": "18em"})
    )


def minutes_text(minutes: float) -> str:
    """A duration for the reader: '45 s', '12.3 min', '2.1 h'."""
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def estimate_line(table: pd.DataFrame, devices: Sequence[Device] = DEVICES) -> str:
    """One line with the total time per device, e.g. 'estimated (GPU throughputs assumed, not measured): 12.3 min on
    a T4, 5.0 min on an A100, 2.1 h on 1 CPU core'."""
    total = table.loc["total"]

    def where(d: Device) -> str:
        return d.short if d.short[0].isdigit() else f"{'an' if d.short[0] in 'AEIOU' else 'a'} {d.short}"

    parts = [f"{minutes_text(total[f'minutes on {d.short}'])} on {where(d)}" for d in devices]
    return "estimated (GPU throughputs assumed, not measured): " + ", ".join(parts)


def overhead_line(devices: Sequence[Device] = DEVICES) -> str:
    """The per-operation costs the estimate uses and where each comes from, e.g. 'per torch operation: 10 µs on
    a T4 (assumed), …, 15 µs on 1 CPU core (measured, benchmarks/bench_cost.py)'."""
    parts = [f"{d.op_overhead * 1e6:g} µs on {d.short} ({d.op_source})" for d in devices]
    return "per torch operation: " + ", ".join(parts)


def count_ops(fn: Callable[[], Any]) -> int:
    """The number of torch (ATen) operations ``fn()`` dispatches: each costs one op's overhead (``Device``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            self.n += 1
            return func(*args, **(kwargs or {}))

    with _Count() as counter:
        fn()
    return counter.n


def totals(stages: Iterable[Stage]) -> dict[str, float]:
    """Summed counts of stages: forward, training, flops, calls."""
    stages = list(stages)
    return {k: float(sum(getattr(s, k) for s in stages)) for k in ("forward", "training", "flops", "calls")}
