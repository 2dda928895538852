"""One tiny run of each benchmark in benchmarks/, so that they keep working (the full runs are not in make test)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_grid_tiny(monkeypatch):
    monkeypatch.setenv("TVUTILS_PROGRESS", "0")
    out = _load("bench_grid").main(
        ["--n-test", "40", "--steps", "10", "--grid", "4", "3", "--sizes", "3", "--repeats", "1"]
    )
    assert out["max_diff"] <= 1e-5 and len(out["scaling"]) == 1


def test_bench_merge_tiny(tmp_path):
    methods = ["io", "stream", "memory", "stream-one", "stream-adapter"]  # mergekit: an optional extra, ~10 s to start
    out = _load("bench_merge").main(
        [
            "--hidden",
            "32",
            "--intermediate",
            "48",
            "--layers",
            "1",
            "--vocab",
            "64",
            "--workdir",
            str(tmp_path / "bench"),
            "--methods",
            *methods,
            "--repeats",
            "1",
            "--settle",
            "0",
        ]
    )
    assert set(out["results"]) == set(methods)
    assert out["errors"]["stream"] < 1e-6
    assert not (tmp_path / "bench").exists()


def test_bench_merge_settle_waits_for_page_reporting(tmp_path, monkeypatch):
    """settle() waits until the reported count has been still for `quiet` seconds, and returns what moved."""
    import threading
    import time

    bench = _load("bench_merge")
    counter = tmp_path / "reported_kib"
    counter.write_text("100")
    monkeypatch.setattr(bench, "REPORTED_KIB", counter)
    start = time.perf_counter()
    threading.Timer(0.3, lambda: counter.write_text("612")).start()  # a pass hands back 512 KiB after 0.3 s
    assert bench.settle(5.0, quiet=0.5) == 512.0
    assert 0.8 <= time.perf_counter() - start < 3.0  # 0.3 s, then 0.5 s of quiet
    assert bench.settle(0.0) == 0.0  # no wait at all
    monkeypatch.setattr(bench, "REPORTED_KIB", tmp_path / "absent")  # no counter: a plain sleep
    start = time.perf_counter()
    assert bench.settle(0.2) == 0.0 and time.perf_counter() - start >= 0.2


def test_bench_cost_tiny(monkeypatch):
    """The per-op timing of bench_cost.py on a few SGD steps: a positive cost and the ops a step dispatches."""
    monkeypatch.setenv("TVUTILS_PROGRESS", "0")
    from types import SimpleNamespace

    from tvutils.icl.config import ICL_DEFAULTS, setting
    from tvutils.icl.data import both_ways_cycle_tasks
    from tvutils.icl.experiments import pretrained

    bench = _load("bench_cost")
    data_cfg, learner_cfg, train_cfg = setting(SimpleNamespace(**ICL_DEFAULTS))
    seconds, ops = bench.per_op(pretrained(learner_cfg, 0), both_ways_cycle_tasks(4), data_cfg, train_cfg, 3, 1)
    assert 0 < seconds < 1e-2 and ops > 10
