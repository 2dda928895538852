"""tvutils.taskvec.grid: the batched λ-grid equals one merged model per point, by token and by position."""

import os

import numpy as np
import pytest
import torch

import tvutils.taskvec.grid as grid
from tvutils.editing.task_vector import TaskVector
from tvutils.taskvec.data import DataConfig, ood_tasks
from tvutils.taskvec.grid import distinct_rows, evaluate_merges, evaluate_merges_loop, grid_points, merged_outputs
from tvutils.taskvec.model import LearnerConfig, OneLayerTransformer


def _setup(noise=0.0, a_per_position=False, scale=1.0, n=60):
    data = DataConfig(d=16, P=8, M=6, noise=noise)
    tasks = ood_tasks([0.8, -0.5], 0.3, data)
    model0 = OneLayerTransformer(LearnerConfig(d=16, m=8, P=8, a_per_position=a_per_position), seed=0)
    g = torch.Generator().manual_seed(1)
    tvs = [
        TaskVector({"W": scale * torch.randn(16, 16, generator=g), "V": 0.1 * torch.randn(8, 16, generator=g)})
        for _ in range(2)
    ]
    X, y = tasks.target.sample(n, torch.Generator().manual_seed(2))
    return model0, tvs, X, y


LAM = grid_points(np.linspace(-2, 3, 6), np.linspace(-2, 2, 5))


@pytest.mark.parametrize("noise,a_per_position", [(0.0, False), (0.0, True), (0.1, False), (0.1, True)])
def test_grid_equals_loop(noise, a_per_position):
    model0, tvs, X, y = _setup(noise, a_per_position)
    ref = evaluate_merges_loop(model0, tvs, LAM, X, y)
    for chunk in (1, 7, 64):
        loss, err = evaluate_merges(model0, tvs, LAM, X, y, chunk=chunk)
        assert np.abs(loss - ref[0]).max() < 1e-5 and np.abs(err - ref[1]).max() < 1e-5


def test_both_methods_agree_on_outputs():
    model0, tvs, X, _ = _setup()
    by_token = merged_outputs(model0, tvs, LAM, X, method="token")
    by_position = merged_outputs(model0, tvs, LAM, X, method="position")
    torch.testing.assert_close(by_token, by_position, atol=1e-5, rtol=1e-5)


def test_wide_score_spread_falls_back_exactly():
    model0, tvs, X, y = _setup(scale=30.0)  # scores spread far beyond the by-token limit at large |λ|
    ref = evaluate_merges_loop(model0, tvs, LAM, X, y)
    loss, err = evaluate_merges(model0, tvs, LAM, X, y)
    assert np.abs(loss - ref[0]).max() < 1e-5 and np.abs(err - ref[1]).max() < 1e-5


def test_by_token_same_for_any_thread_count_and_batch(monkeypatch):
    import numba

    import tvutils.taskvec._token_kernel  # noqa: F401  (sets the threading layer, as the grid does, before numba starts threads)

    model0, tvs, X, _ = _setup(n=90)
    before, torch_threads = numba.get_num_threads(), torch.get_num_threads()
    outs = []
    try:
        for threads, per_call in ((1, 1024), (2, 1024), (2, 7)):  # 7: the grid reaches the compiled loop in parts
            monkeypatch.setattr(grid, "_POINTS_PER_CALL", per_call)
            torch.set_num_threads(threads)
            outs.append(merged_outputs(model0, tvs, LAM, X, method="token"))
    finally:
        torch.set_num_threads(torch_threads)  # other tests in this process keep torch's setting
    assert numba.get_num_threads() == before  # restored after each call
    if "NUMBA_THREADING_LAYER" not in os.environ:  # threads that sleep when idle (see tvutils/taskvec/_token_kernel.py)
        assert numba.threading_layer() == "workqueue"
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])  # bit for bit: one thread per point


def test_distinct_rows_is_exact(monkeypatch):
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    tokens, index = distinct_rows(rows)
    assert len(tokens) == 3 and torch.equal(tokens[index], rows)
    assert len(set(index.tolist())) == 3 and index[0] == index[2] and index[1] == index[4]
    # If different rows shared a projection, the check catches it and torch.unique groups them instead.
    monkeypatch.setattr(torch, "randn", lambda *args, **kwargs: torch.zeros(2, dtype=torch.float64))
    tokens, index = distinct_rows(rows)
    assert len(tokens) == 3 and torch.equal(tokens[index], rows)
    tokens, index = distinct_rows(torch.zeros(0, 2))
    assert tokens.shape == (0, 2) and index.shape == (0,)


def test_bad_lambdas_and_inputs():
    model0, tvs, X, y = _setup()
    with pytest.raises(ValueError, match="shape"):
        evaluate_merges(model0, tvs, np.zeros((3, 3)), X, y)
    with pytest.raises(ValueError, match="lacks"):
        evaluate_merges(model0, [TaskVector({"W": torch.zeros(16, 16)})], np.zeros((1, 1)), X, y)
    with pytest.raises(ValueError, match="expected X"):
        evaluate_merges(model0, tvs, LAM, X[:, :3], y)
    with pytest.raises(ValueError, match="method"):
        merged_outputs(model0, tvs, LAM, X, method="magic")


def test_grid_points_order():
    pts = grid_points(np.array([0.0, 1.0]), np.array([5.0, 6.0, 7.0]))
    assert pts.shape == (6, 2) and pts[:3, 0].tolist() == [0, 0, 0] and pts[:3, 1].tolist() == [5, 6, 7]


def test_merged_outputs_on_a_device_equals_merged_outputs():
    from tvutils.taskvec.grid import merged_outputs_on

    model0, tvs, X, _ = _setup(noise=0.1, a_per_position=True)
    ref = merged_outputs(model0, tvs, LAM, X)
    out = merged_outputs_on(model0, tvs, LAM, X, "cpu", chunk=7)
    assert out.device.type == "cpu" and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        merged_outputs_on(model0, tvs, np.zeros((3, 3)), X, "cpu")
    with pytest.raises(ValueError, match="expected X"):
        merged_outputs_on(model0, tvs, LAM, X[:, :3], "cpu")
