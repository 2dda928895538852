"""Tests of tvutils.editing.variants: rank-k truncation, row and entry masks, DARE, and their one convention."""

import math

import numpy as np
import pytest
import torch

from tvutils.editing import fast, variants
from tvutils.editing.task_vector import TaskVector


def _tv(rows=10, cols=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(rows, cols, generator=g) * torch.arange(1, rows + 1, dtype=torch.float32)[:, None]
    return TaskVector({"W": torch.randn(3, 3, generator=g), "V": V, "b": torch.ones(2)})


@pytest.mark.parametrize("n", [1, 7, 10, 64, 128, 1000])
def test_keep_is_one_minus_the_fraction_pruned(n):
    """keep = 1 − p keeps exactly n − ⌊p·n⌋ items for every p of a fine grid (no float drift either way)."""
    for p in np.round(np.linspace(0, 1, 101), 10):
        assert variants.kept_count(1 - p, n) == n - math.floor(p * n + 1e-9)
    assert variants.kept_count(0.0, n) == 0 and variants.kept_count(1.0, n) == n
    with pytest.raises(ValueError, match="fraction to keep"):
        variants.kept_count(1.5, n)


def test_rank_k_error_equals_the_dropped_singular_values():
    g = torch.Generator().manual_seed(0)
    tv = TaskVector({"m": torch.randn(12, 7, generator=g, dtype=torch.float64), "v": torch.randn(5, generator=g)})
    s = torch.linalg.svdvals(tv.deltas["m"])
    for k in (1, 2, 4):
        low = variants.low_rank(tv, k)
        err = float((tv.deltas["m"] - low.deltas["m"]).norm())
        assert err == pytest.approx(float(s[k:].norm()), rel=1e-9)
        assert torch.linalg.matrix_rank(low.deltas["m"]) == k
        assert torch.equal(low.deltas["v"], tv.deltas["v"])  # vectors have no rank: kept
    conv = torch.randn(4, 3, 2, 2, generator=g)
    assert variants.rank_k(conv, 1).shape == conv.shape
    with pytest.raises(ValueError, match="rank k"):
        variants.low_rank(tv, 0)
    with pytest.raises(ValueError, match="no rows"):
        variants.low_rank(tv, 1, keys=["v"])


def test_keep_rows_and_entries_on_a_small_matrix():
    m = torch.tensor([[3.0, 0.0], [0.1, 0.1], [0.0, -2.0], [0.5, 0.5]])
    tv = TaskVector({"m": m, "b": torch.ones(2)})
    rows = variants.keep_rows(tv, 0.5)
    assert torch.equal(rows.deltas["m"], torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, -2.0], [0.0, 0.0]]))
    assert torch.equal(rows.deltas["b"], tv.deltas["b"])  # vectors have no rows: kept
    entries = variants.keep_entries(tv, 0.25, keys=["m"])
    assert torch.equal(entries.deltas["m"], torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, -2.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="fraction"):
        variants.keep_rows(tv, 1.5)
    with pytest.raises(ValueError, match="not in the task vector"):
        variants.keep_entries(tv, 0.5, keys=["nope"])


def test_keep_rows_largest_and_random():
    tv = _tv()
    kept = variants.keep_rows(tv, 0.7, keys=["V"])
    zero = (kept.deltas["V"].norm(dim=1) == 0).numpy()
    assert zero.sum() == 3 and set(np.flatnonzero(zero)) == set(np.argsort(tv.deltas["V"].norm(dim=1).numpy())[:3])
    assert torch.equal(kept.deltas["W"], tv.deltas["W"]) and torch.equal(kept.deltas["b"], tv.deltas["b"])
    rand = variants.keep_rows(tv, 0.5, keys=["V"], how="random", seed=3)
    assert int((rand.deltas["V"].norm(dim=1) == 0).sum()) == 5
    assert torch.equal(rand.deltas["V"], variants.keep_rows(tv, 0.5, keys=["V"], how="random", seed=3).deltas["V"])
    fewer = variants.keep_rows(tv, 0.3, keys=["V"], how="random", seed=3)  # the rows pruned at 0.5 stay pruned
    assert set(np.flatnonzero((rand.deltas["V"].norm(dim=1) == 0).numpy())) <= set(
        np.flatnonzero((fewer.deltas["V"].norm(dim=1) == 0).numpy())
    )
    assert torch.equal(variants.keep_rows(tv, 1.0, keys=["V"]).deltas["V"], tv.deltas["V"])
    with pytest.raises(ValueError, match="how"):
        variants.keep_rows(tv, 0.2, how="smallest")
    with pytest.raises(ValueError, match="no rows"):
        variants.keep_rows(tv, 0.5, keys=["b"])


def test_keep_entries_keeps_the_largest():
    tv = _tv()
    trimmed = variants.keep_entries(tv, 0.25, keys=["V"])
    V, T = tv.deltas["V"], trimmed.deltas["V"]
    assert int((T != 0).sum()) == 10
    assert float(T.abs().max()) == float(V.abs().max())
    assert float(V[T == 0].abs().max()) <= float(T[T != 0].abs().min())
    assert torch.equal(trimmed.deltas["W"], tv.deltas["W"])


def test_dare_rescales_and_is_unbiased():
    tv = TaskVector({"V": torch.ones(200, 50)})
    vals = variants.dare(tv, 0.2, seed=0).deltas["V"]
    assert set(torch.unique(vals).tolist()) <= {0.0, 5.0}
    assert abs(float(vals.mean()) - 1.0) < 0.05
    assert torch.equal(vals, variants.dare(tv, 0.2, seed=0).deltas["V"])
    assert float(variants.dare(tv, 0.0, seed=0).deltas["V"].abs().sum()) == 0.0
    assert torch.equal(variants.dare(tv, 1.0, seed=1).deltas["V"], tv.deltas["V"])


# ---- the fast versions that python -m tvutils merge uses -----------------------------------------------------------
@pytest.mark.parametrize("n,decimals", [(1000, 1), (300_000, 2), (300_000, None)])
def test_entry_mask_fast_equals_entry_mask(n, decimals):
    """Equal masks, ties (rounded values) included, on both sides of the sampling size and for every keep."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    if decimals is not None:
        x = x.round(decimals=decimals)
    for keep in (0.0, 1e-4, 0.1, 0.5, 0.97, 1.0):
        assert torch.equal(variants.entry_mask_fast(x, keep), variants.entry_mask(x, keep)), keep
    assert torch.equal(variants.entry_mask_fast(x.reshape(-1, 10), 0.3), variants.entry_mask(x.reshape(-1, 10), 0.3))


def test_kth_largest_magnitude_is_exact_when_the_sample_misses():
    """A layout the strided sample cannot see (the large entries off its stride) falls back to exact selection."""
    n = 400_000
    x = torch.zeros(n)
    stride = n // fast.SAMPLE
    off = [i for i in range(n) if i % stride != stride // 2][:5000]
    x[off] = torch.arange(1, 5001, dtype=torch.float32)
    for k in (1, 100, 4999, 5000, 5001, n):
        thr, above = variants.kth_largest_magnitude(x, k)
        ref = x.abs().sort(descending=True).values[k - 1]
        assert thr == float(ref) and above == int((x.abs() > ref).sum()), k


def test_rank_k_fast_exact_when_small_close_when_large():
    g = torch.Generator().manual_seed(1)
    small = torch.randn(15, 9, generator=g)
    torch.testing.assert_close(variants.rank_k_fast(small, 2), variants.rank_k(small, 2), rtol=1e-6, atol=1e-6)
    flat = torch.randn(600, 300, generator=g)  # a flat (Gaussian) spectrum: the hard case for a randomized method
    for m in (flat, flat.T.contiguous()):
        ratio = float((m - variants.rank_k_fast(m, 8)).norm() / (m - variants.rank_k(m, 8)).norm())
        assert 1.0 - 1e-6 <= ratio < 1.01, ratio
    u, _ = torch.linalg.qr(torch.randn(600, 40, generator=g))
    v, _ = torch.linalg.qr(torch.randn(300, 40, generator=g))
    decaying = (u * 0.5 ** torch.arange(40.0)) @ v.T  # singular values 1, 1/2, 1/4, …
    torch.testing.assert_close(variants.rank_k_fast(decaying, 8), variants.rank_k(decaying, 8), rtol=0, atol=1e-5)
    left, right = fast.rank_k_factors(decaying.numpy(), 8)
    assert left.shape == (600, 8) and right.shape == (8, 300)
    assert torch.equal(variants.rank_k_fast(flat, 8), variants.rank_k_fast(flat, 8))  # seeded: deterministic
