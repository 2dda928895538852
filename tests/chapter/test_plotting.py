"""tvutils.chapter.plotting.exponent_panel: a scaling law's points, fit and predicted exponent on log-log axes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tvutils.chapter.plotting import exponent_panel  # noqa: E402


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
