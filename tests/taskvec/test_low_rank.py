"""Tests of tvutils.taskvec.low_rank: spectra, truncation error, alignment, storage and the Corollary 1 bound."""

import math

import numpy as np
import pytest
import torch

from tvutils.editing.task_vector import TaskVector
from tvutils.editing.variants import rank_k
from tvutils.taskvec.low_rank import (
    agreement_within,
    boundary_band,
    direction_alignment,
    irrelevant_span_fraction,
    leading_directions,
    singular_values,
    stored_numbers,
    truncation_error,
)
from tvutils.taskvec.theorems import corollary1_w_bound


def _planted(rows=8, cols=6):
    u, v = torch.zeros(rows), torch.zeros(cols)
    u[0], v[1] = 1.0, 1.0
    u2, v2 = torch.zeros(rows), torch.zeros(cols)
    u2[1], v2[2] = 1.0, 1.0
    return 3.0 * torch.outer(u, v) + 0.5 * torch.outer(u2, v2)


def test_singular_values_and_truncation_error():
    t = _planted()
    s = singular_values(t)
    assert np.allclose(s[:2], [3.0, 0.5]) and np.allclose(s[2:], 0.0, atol=1e-12)
    err = truncation_error(t, [0, 1, 2, 10])
    assert np.allclose(err, [math.hypot(3.0, 0.5), 0.5, 0.0, 0.0], atol=1e-12)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(7, 5, generator=g)
    for k in (1, 2, 3):
        assert truncation_error(r, [k])[0] == pytest.approx(float((r - rank_k(r, k)).norm()), rel=1e-5)
    with pytest.raises(ValueError):
        singular_values(torch.ones(3))


def test_leading_directions_and_alignment():
    t = _planted()
    U, S, Vh = leading_directions(t, 2)
    assert U.shape == (8, 2) and Vh.shape == (2, 6)
    assert np.allclose(S, [3.0, 0.5])
    assert Vh[0, 1] == pytest.approx(1.0) and Vh[1, 2] == pytest.approx(1.0)  # signs fixed positive
    al = direction_alignment(Vh, {"e1": torch.eye(6)[1], "e2": np.eye(6)[2]})
    assert np.allclose(al["e1"], [1.0, 0.0]) and np.allclose(al["e2"], [0.0, 1.0])
    frac = irrelevant_span_fraction(Vh, torch.eye(6)[2:])
    assert np.allclose(frac, [0.0, 1.0])


def test_stored_numbers():
    tv = TaskVector({"W": torch.zeros(64, 64), "V": torch.zeros(128, 64), "b": torch.zeros(5)})
    assert stored_numbers(tv) == 64 * 64 + 128 * 64 + 5
    assert stored_numbers(tv, 1) == (64 + 64) + (128 + 64) + 5
    assert stored_numbers(TaskVector({"A": torch.zeros(3, 3)}), 2) == 9  # factors larger than dense: dense


def test_corollary1_bound():
    assert corollary1_w_bound(20, 0.05) == pytest.approx(1.0 + 1 / math.log(20))
    assert np.allclose(corollary1_w_bound(np.array([2, 4]), 0.0), 1 / np.log([2, 4]))
    with pytest.raises(ValueError):
        corollary1_w_bound(1, 0.1)


def test_boundary_band_and_agreement_within():
    full = np.zeros((4, 5), dtype=bool)
    full[2:, :] = True  # success from row 2 on: the boundary runs between rows 1 and 2
    band = boundary_band(full)
    assert band[1:3].all() and not band[[0, 3]].any()
    assert not boundary_band(np.ones((3, 3), dtype=bool)).any()
    moved = full.copy()
    moved[2, :2] = False  # the boundary moved on two of the band's ten cells
    assert agreement_within(moved, full, band) == pytest.approx(0.8)
    assert agreement_within(moved, full, np.ones_like(full)) == pytest.approx(0.9)  # the whole grid hides it
    assert np.isnan(agreement_within(moved, full, np.zeros_like(full)))
    with pytest.raises(ValueError):
        boundary_band(np.ones(3, dtype=bool))
    with pytest.raises(ValueError):
        agreement_within(moved, full, band[:2])
