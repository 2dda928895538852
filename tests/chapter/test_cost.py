"""Tests of tvutils.chapter.cost: the max rule, the plan table, the op counter, the devices."""

import pytest
import torch

from tvutils.chapter.cost import (
    A100,
    CPU_CORE,
    DEVICES,
    T4,
    Device,
    Stage,
    bound,
    count_ops,
    estimate_line,
    minutes_text,
    plan_table,
    seconds,
    totals,
)


def test_the_max_rule_picks_overhead_for_tiny_work_and_flops_for_large():
    tiny = Stage("tiny", "", flops=1e6, calls=1000, ops_per_call=50)
    large = Stage("large", "", flops=1e15, calls=10, ops_per_call=50)
    assert bound(tiny, T4) == "overhead" and bound(large, T4) == "FLOPs"
    assert seconds(tiny, T4) == pytest.approx(1000 * 50 * T4.op_overhead)
    assert seconds(large, T4) == pytest.approx(1e15 / T4.flops)
    assert seconds(large, A100) < seconds(large, T4)  # the A100 is faster at both bounds
    assert seconds(tiny, A100) < seconds(tiny, T4)


def test_memory_bound_and_cpu_stages_use_the_host():
    reads = Stage("reads", "", bytes=1e12)
    assert bound(reads, T4) == "memory" and seconds(reads, T4) == pytest.approx(1e12 / T4.bandwidth)
    on_cpu = Stage("cpu", "", flops=3e10, where="cpu")
    assert seconds(on_cpu, T4) == seconds(on_cpu, A100) == pytest.approx(1.0)  # 30 GFLOP/s host core
    host = Device("fast host", 3e11, 1e10, 0.0)
    assert seconds(on_cpu, T4, host) == pytest.approx(0.1)


def test_stage_checks_its_fields():
    with pytest.raises(ValueError, match="where"):
        Stage("x", "", where="gpu")
    with pytest.raises(ValueError, match="≥ 0"):
        Stage("x", "", calls=-1)


def test_plan_table_sums_and_doubles():
    stages = [Stage("a", "", forward=10, training=4, flops=1e9, calls=100, ops_per_call=20),
              Stage("b", "", forward=5, flops=3e9, calls=10, ops_per_call=80, where="cpu")]  # fmt: skip
    table = plan_table(stages, unit="prompts")
    assert list(table.index) == ["a", "b", "total"]
    assert table.loc["total", "forward (prompts)"] == 15 and table.loc["total", "sequential calls"] == 110
    assert table.loc["total", "GFLOP"] == pytest.approx(4.0)
    assert table.loc["a", "runs on"] == "GPU" and table.loc["b", "runs on"] == "CPU"
    assert table.loc["a", "bound on T4"] == bound(stages[0], T4) and table.loc["total", "bound on T4"] == ""
    for d in DEVICES:
        col = f"minutes on {d.short}"
        assert table.loc["total", col] == pytest.approx((seconds(stages[0], d) + seconds(stages[1], d)) / 60)
    doubled = plan_table([Stage(s.stage, s.what, s.forward, s.training, 2 * s.flops, 2 * s.calls, s.ops_per_call,
                                s.where) for s in stages])  # fmt: skip
    assert doubled.loc["total", "minutes on T4"] == pytest.approx(2 * table.loc["total", "minutes on T4"])
    assert totals(stages)["calls"] == 110
    with pytest.raises(ValueError, match="at least one stage"):
        plan_table([])


def test_estimate_line_and_minutes_text():
    table = plan_table([Stage("a", "", calls=600_000, ops_per_call=10)])  # 60 s on a T4, 36 s on an A100
    line = estimate_line(table)
    assert line.startswith("estimated (GPU throughputs assumed, not measured): ")
    assert "1.0 min on a T4" in line and "36 s on an A100" in line and "on 1 CPU core" in line
    assert minutes_text(0.5) == "30 s" and minutes_text(12.34) == "12.3 min" and minutes_text(150) == "2.5 h"


def test_count_ops_counts_dispatched_operations():
    x = torch.ones(4, requires_grad=True)
    one = count_ops(lambda: x * 2)
    two = count_ops(lambda: (x * 2, x * 3))
    assert one >= 1 and two == 2 * one
    assert count_ops(lambda: (x * 2).sum().backward()) > count_ops(lambda: (x * 2).sum())  # backward counted


def test_devices_are_the_assumed_constants():
    # the printed estimates of chapters 06 and 10-12 depend on these (40 % of the fp32 peaks, 70 % of the bandwidths)
    assert T4.flops == 0.4 * 8.1e12 and A100.flops == 0.4 * 19.5e12 and CPU_CORE.flops == 30e9
    assert T4.bandwidth == 0.7 * 320e9 and A100.bandwidth == 0.7 * 1555e9
    assert T4.short == "T4" and A100.short == "A100" and CPU_CORE.short == "1 CPU core"
    assert all(d.op_overhead > 0 for d in DEVICES) and T4.op_overhead > A100.op_overhead


def test_overhead_line_says_which_costs_are_measured():
    from tvutils.chapter.cost import overhead_line

    line = overhead_line()
    assert line.startswith("per torch operation: ")
    assert "T4 (assumed)" in line and "A100 (assumed)" in line
    assert f"{CPU_CORE.op_overhead * 1e6:g} µs on 1 CPU core (measured, benchmarks/bench_cost.py)" in line


def test_styled_plan_formats_counts_and_minutes():
    from tvutils.chapter.cost import styled_plan

    table = plan_table([Stage("a", "a long description", forward=1_234_567, calls=600_000, ops_per_call=10.4)])
    html = styled_plan(table, "plan-test").to_html()
    assert "1,234,567" in html and "600,000" in html and ">10<" in html  # counts separated, ops per call whole
    assert f"{600_000 * 10.4 * T4.op_overhead / 60:.2f}" in html  # minutes on a T4, to two decimals
    assert "min-width: 18em" in html and "plan-test" in html
