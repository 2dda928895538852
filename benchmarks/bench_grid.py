"""Benchmark: a whole λ-grid of merged learners at once vs one merged model per grid point.

The Theorem 3 set-up of chapter 03 (out-of-domain generalization): two orthogonal source tasks fine-tuned from
Ψ⁽⁰⁾, the OOD task T' as the test set, and the grid λ₁ ∈ [−2, 3] × λ₂ ∈ [−2, 2] in steps of 0.2 (26 × 21
points). Side by side in one run:
``evaluate_merges_loop`` (the reference) and ``evaluate_merges`` (tvutils.taskvec.grid), results compared to 1e-5;
then time and peak memory of ``evaluate_merges`` as the grid grows from 11 × 11 to 51 × 51. Wall and CPU
time are both given: on a shared machine the CPU time of a process is the steadier of the two.

The loop allocates fresh (n, P, P) and (n, P, m) tensors for every point; with glibc's default, adaptive
malloc thresholds a process sometimes returns that memory to the system after each point and faults it back in
(millions of minor page faults, the loop up to 3× slower, by chance per process). Run as a script, the benchmark
re-executes itself with the thresholds pinned (``GLIBC_TUNABLES``) so the loop always runs at its best; the
minor page faults of each timed call are printed. ``--default-malloc`` keeps glibc's defaults.

    python benchmarks/bench_grid.py                    # n = 1000 test samples (about a minute)
    python benchmarks/bench_grid.py --n-test 50 --steps 20 --grid 6 5 --sizes 5 --repeats 1   # a tiny run
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tvutils.editing.task_vector import TaskVector  # noqa: E402
from tvutils.taskvec import seeds  # noqa: E402
from tvutils.taskvec.data import DataConfig, ood_tasks  # noqa: E402
from tvutils.taskvec.grid import evaluate_merges, evaluate_merges_loop, grid_points, merged_outputs  # noqa: E402
from tvutils.taskvec.model import LearnerConfig, OneLayerTransformer  # noqa: E402
from tvutils.taskvec.training import TrainConfig, fine_tune  # noqa: E402


def setup(n_test: int, steps: int, noise: float = 0.0, seed: int = 0):
    """Ψ⁽⁰⁾, the two source task vectors, and the T' test set (γ = (0.8, −0.5), κ = 0.3, normalised)."""
    data = DataConfig(noise=noise)
    tasks = ood_tasks([0.8, -0.5], 0.3, data)
    model0 = OneLayerTransformer(LearnerConfig(), seed=seeds.init(seed))
    tvs = []
    for role, task in zip((seeds.T1, seeds.T2), tasks.sources):
        tuned, _ = fine_tune(model0, task, TrainConfig(max_steps=steps, n_test=500), seed=seeds.finetune(seed, role))
        tvs.append(TaskVector.from_models(model0, tuned))
    X, y = tasks.target.sample(n_test, torch.Generator().manual_seed(seeds.ood_test(seed, 0)))
    return model0, tvs, X, y


PINNED_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn, *args, **kwargs):
    """(wall s, CPU s, result), with the minor page faults of the call in ``timed.faults``."""
    faults, wall, cpu = _minor_faults(), time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    out = time.perf_counter() - wall, time.process_time() - cpu, result
    timed.faults = _minor_faults() - faults
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_growth(fn, *args, **kwargs):
    """(peak RSS during fn above the RSS before it, in MB, sampled every millisecond; fn's result)."""
    gc.collect()
    before, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        result = fn(*args, **kwargs)
    finally:
        done.set()
        watcher.join()
    return max(peak[0], _rss_mb()) - before, result


def theorem3_axes(steps_1: int = 26, steps_2: int = 21) -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(-2, 3, steps_1), np.linspace(-2, 2, steps_2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=1000, help="test samples of T'")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning budget per source task")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of loop and grid")
    parser.add_argument("--sizes", type=int, nargs="+", default=[11, 21, 31, 41, 51], help="grid sides to scale to")
    parser.add_argument("--grid", type=int, nargs=2, default=[26, 21], help="points on the λ₁ and λ₂ axes")
    parser.add_argument("--noise", action="store_true", help="also time noisy tokens (the by-position path)")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's adaptive malloc thresholds")
    args = parser.parse_args(argv)
    model0, tvs, X, y = setup(args.n_test, args.steps)
    lam = grid_points(*theorem3_axes(*args.grid))
    print(
        f"Theorem 3 grid: {len(lam)} points, n = {len(X)} test samples, torch threads = {torch.get_num_threads()}, "
        f"GLIBC_TUNABLES = {os.environ.get('GLIBC_TUNABLES', '(unset)')}"
    )
    first = timed(evaluate_merges, model0, tvs, lam[:1], X, y)[0]  # compiles the by-token loop, or loads it
    timed(evaluate_merges_loop, model0, tvs, lam[:1], X, y)
    print(f"first grid call (numba compile, or load from its cache): {first:.2f} s, not counted below")

    rows = []
    for _ in range(args.repeats):  # interleaved, so both see the same load
        loop = timed(evaluate_merges_loop, model0, tvs, lam, X, y)
        loop_faults = timed.faults
        grid = timed(evaluate_merges, model0, tvs, lam, X, y)
        print(f"  pair: loop {loop[0]:.2f} s ({loop_faults} minor faults), grid {grid[0]:.3f} s ({timed.faults})")
        rows.append((loop, grid))
    worst = max(max(np.abs(g[2][0] - lp[2][0]).max(), np.abs(g[2][1] - lp[2][1]).max()) for lp, g in rows)
    wall = [lp[0] / g[0] for lp, g in rows]
    cpu = [lp[1] / g[1] for lp, g in rows]
    print(
        f"loop    wall {np.median([lp[0] for lp, _ in rows]):7.2f} s   cpu {np.median([lp[1] for lp, _ in rows]):7.2f} s"
    )
    print(f"grid    wall {np.median([g[0] for _, g in rows]):7.2f} s   cpu {np.median([g[1] for _, g in rows]):7.2f} s")
    print(f"speed-up (median of {len(rows)} interleaved pairs): wall {np.median(wall):.1f}×, cpu {np.median(cpu):.1f}×")
    print(f"largest |difference| of loss and error vs the loop: {worst:.1e} (must be ≤ 1e-5)")
    out = {"speedup_wall": float(np.median(wall)), "speedup_cpu": float(np.median(cpu)), "max_diff": float(worst)}

    if args.noise:  # noisy tokens: every token distinct, the by-position path
        m0n, tvn, Xn, yn = setup(args.n_test, args.steps, noise=0.05)
        loop = timed(evaluate_merges_loop, m0n, tvn, lam, Xn, yn)
        grid = timed(evaluate_merges, m0n, tvn, lam, Xn, yn)
        diff = np.abs(grid[2][0] - loop[2][0]).max()
        print(
            f"noisy tokens (by position): speed-up wall {loop[0] / grid[0]:.1f}×, cpu {loop[1] / grid[1]:.1f}×, "
            f"|diff| {diff:.1e}"
        )
        out["noisy_speedup_wall"] = loop[0] / grid[0]

    print(
        f"\n{'grid':>7s} {'points':>6s} {'wall s':>7s} {'cpu s':>7s} {'peak MB':>8s}  (peak: RSS above the level before)"
    )
    scaling = []
    for side in args.sizes:
        pts = grid_points(*(np.linspace(-2, 3, side), np.linspace(-2, 2, side)))
        grew, (w, c, _) = peak_rss_growth(timed, merged_outputs, model0, tvs, pts, X)
        print(f"{side:>3d}×{side:<3d} {len(pts):6d} {w:7.2f} {c:7.2f} {grew:8.1f}")
        scaling.append((side, len(pts), w, c, grew))
    out["scaling"] = scaling
    return out


if __name__ == "__main__":
    if "--default-malloc" not in sys.argv and os.environ.get("GLIBC_TUNABLES") != PINNED_MALLOC:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": PINNED_MALLOC})
    main()
