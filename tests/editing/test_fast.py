"""Tests of tvutils.editing.fast: the variants' kernels on numpy arrays (no torch) that the merge applies."""

import numpy as np
import pytest

from tvutils.editing import fast


@pytest.mark.parametrize("decimals", [None, 2, 0])
def test_kth_largest_selection_ties_are_the_stable_sorts_and_a_given_sample_changes_nothing(decimals):
    x = np.random.default_rng(3).standard_normal(200_000).astype(np.float32)
    if decimals is not None:
        x = x.round(decimals)  # decimals=0: a handful of distinct values, huge ties
    sample = x[fast.sample_positions(x.size)].copy()
    for k in (1, 17, 20_000, 199_999):
        thr, above, ties = fast.kth_largest_selection(x, k)
        again = fast.kth_largest_selection(x, k, sample=sample)
        assert (thr, above) == again[:2] and np.array_equal(ties, again[2])
        mask = np.zeros(x.size, dtype=bool)
        mask[np.argsort(-np.abs(x), kind="stable")[:k]] = True  # the stable sort's k largest
        kept = np.abs(x) > thr
        kept[ties] = True
        assert np.array_equal(kept, mask) and int(kept.sum()) == k


def test_bracket_reports_an_overflowing_room_and_the_kept_sum_adds_ties():
    from tvutils.editing._select_kernel import accumulate_kept, bracket

    x = np.array([0.5, -2.0, 1.0, -1.0, 3.0, 1.0], dtype=np.float32)
    idx, val = np.empty(8, np.int64), np.empty(8, np.float32)
    assert bracket(x, 0.9, 2.5, idx, val) == (1, 4)
    assert idx[:4].tolist() == [1, 2, 3, 5] and val[:4].tolist() == [2.0, 1.0, 1.0, 1.0]
    above, n_cand = bracket(x, 0.9, 2.5, idx[:2], val[:2])  # room for 2 of 4: reported as more than the room
    assert above == 1 and n_cand > 2
    acc = np.full(6, 10.0, np.float32)
    accumulate_kept(x, 1.0, np.array([3]), 2.0, acc, False)  # |x| > 1 and the tie at index 3
    assert acc.tolist() == [10.0, 6.0, 10.0, 8.0, 16.0, 10.0]
    accumulate_kept(x, 1.0, np.array([2]), 2.0, acc, True)
    assert acc.tolist() == [0.0, -4.0, 2.0, 0.0, 6.0, 0.0]


def test_rank_k_factors_from_a_given_sketch_equal_its_own():
    rng = np.random.default_rng(4)
    for m in (rng.standard_normal((300, 120), dtype=np.float32), rng.standard_normal((80, 500), dtype=np.float32)):
        test = fast.sketch_matrix(*m.shape, 6)
        sketch = m @ test if m.shape[0] >= m.shape[1] else m.T @ test
        own = fast.rank_k_factors(m, 6)
        given = fast.rank_k_factors(m, 6, sketch=sketch)
        np.testing.assert_allclose(given[0] @ given[1], own[0] @ own[1], rtol=0, atol=1e-5)
        assert own[0].dtype == np.float32 and fast.rank_k_factors(m.astype(np.float64), 6)[0].dtype == np.float64
    assert fast.sketch_matrix(20, 10, 6) is None  # k + 10 ≥ the smaller side: the exact SVD
    with pytest.raises(ValueError, match="rank k"):
        fast.rank_k_factors(np.ones((3, 3)), 0)


def test_largest_rows_keeps_the_first_of_equal_norms():
    norms = np.array([1.0, 3.0, 2.0, 3.0, 2.0])
    assert fast.largest_rows(norms, 0.4).tolist() == [False, True, False, True, False]
    assert fast.largest_rows(norms, 0.6).tolist() == [False, True, True, True, False]
    assert fast.largest_rows(norms, 0.0).sum() == 0 and fast.largest_rows(norms, 1.0).all()
