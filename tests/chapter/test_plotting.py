"""tvutils.chapter.plotting: a scaling law's panel (points, fit, predicted exponent), a mean over seeds with its band."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tvutils.chapter.plotting import exponent_panel, seed_band  # noqa: E402


def test_exponent_panel_draws_points_fit_and_prediction():
    sizes = np.array([32.0, 64.0, 128.0, 256.0])
    values = np.vstack([2.0 / sizes, 2.2 / sizes, 1.8 / sizes])
    values[0, 0] = 0.0  # a non-positive value is left out, not drawn at −inf
    fig, ax = plt.subplots()
    exponent_panel(ax, sizes, values, (-1.0, -1.1, -0.9), -1.0, "$d$", "offset", title="t")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "each seed" and len(ax.get_lines()[0].get_xdata()) == 11
    assert any("exponent -1.00 [-1.10, -0.90]" in lab for lab in labels)
    assert any(lab.startswith("theorem: exponent -1") for lab in labels)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_title() == "t"
    fig2, ax2 = plt.subplots()
    exponent_panel(ax2, sizes, -values, (np.nan, np.nan, np.nan), None, "$d$", "y")
    assert ax2.texts and not ax2.get_lines()
    plt.close("all")


def test_seed_band_draws_the_mean_and_the_range_over_seeds():
    x = np.array([0.0, 0.5, 1.0])
    values = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0], [2.0, 8.0, 4.0]])  # 3 seeds
    fig, ax = plt.subplots()
    ax.set_xlabel("λ")
    colour = seed_band(ax, x, values, label="mean", color="tab:red", marker="o")
    (line,) = ax.get_lines()
    assert np.allclose(line.get_xdata(), x) and np.allclose(line.get_ydata(), values.mean(0))
    assert line.get_label() == "mean" and line.get_marker() == "o" and colour == "tab:red"
    band = ax.collections[0].get_paths()[0].vertices
    for k, xk in enumerate(x):  # the band spans min..max over seeds at every x
        ys = band[np.isclose(band[:, 0], xk), 1]
        assert np.isclose(ys.min(), values[:, k].min()) and np.isclose(ys.max(), values[:, k].max())
    assert ax.get_xlabel() == "λ" and ax.get_ylabel() == "", "the caller's labels are kept"
    long_x, long_y = np.tile(x, 3), values.ravel()  # the same data in long form
    fig2, ax2 = plt.subplots()
    seed_band(ax2, long_x, long_y)
    assert np.allclose(ax2.get_lines()[0].get_ydata(), values.mean(0))
    with pytest.raises(ValueError, match="shape"):
        seed_band(ax2, x[:2], values)
    plt.close("all")
