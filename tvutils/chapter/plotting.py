"""Figures shared by the chapters: heatmaps over a λ grid with a theory region drawn on top, a mean over seeds
with its band (seaborn), and scaling-law panels.

The heatmaps stay matplotlib's ``pcolormesh`` on numeric axes (not ``seaborn.heatmap``, whose cells sit at
categorical positions), so that the theorems' boundaries are drawn on them in the data's own coordinates.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import patheffects
from matplotlib.axes import Axes


def heatmap(
    ax: Axes,
    values: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    row_label: str,
    col_label: str,
    cbar_label: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> None:
    """values[i, j] at (cols[j], rows[i]) as cells, rows on the y axis, with a labelled colour bar."""
    values = np.asarray(values)
    if values.shape != (len(rows), len(cols)):
        raise ValueError(f"values have shape {values.shape}, axes give ({len(rows)}, {len(cols)})")
    mesh = ax.pcolormesh(_edges(cols), _edges(rows), values, cmap=cmap, vmin=vmin, vmax=vmax, shading="flat")
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    plt.colorbar(mesh, ax=ax, label=cbar_label)


def seed_band(
    ax: Axes,
    x: np.ndarray,
    values: np.ndarray,
    label: str | None = None,
    color: str | None = None,
    band: tuple[str, float] = ("pi", 100),
    alpha: float = 0.2,
    **line_kwargs,
) -> str:
    """The mean over seeds as a line and a band around it (seaborn's ``lineplot``); returns the line's colour.

    ``values`` is (S, K) for S seeds at the K points ``x``, or 1-D beside a 1-D ``x`` of the same length (one row
    per observation). ``band`` is seaborn's ``errorbar``: ``("pi", 100)``, the default, spans the range over seeds
    (min to max); ``("ci", 95)`` a bootstrap interval of the mean. ``line_kwargs`` go to the line (``marker``,
    ``linestyle``, ``lw``, ...). The axes' labels are left as they were."""
    values, x = np.asarray(values, dtype=float), np.asarray(x, dtype=float)
    if values.ndim == 2:
        if values.shape[1] != len(x):
            raise ValueError(f"values have shape {values.shape}, x has {len(x)} points")
        x = np.tile(x, values.shape[0])
    if values.ravel().shape != x.shape:
        raise ValueError(f"{values.size} values for {x.size} x positions")
    labels = ax.get_xlabel(), ax.get_ylabel()
    before = len(ax.get_lines())
    frame = pd.DataFrame({"x": x, "y": values.ravel()})
    sns.lineplot(frame, x="x", y="y", ax=ax, estimator="mean", errorbar=band, color=color, label=label,
                 err_kws={"alpha": alpha, "linewidth": 0}, legend=False, **line_kwargs)  # fmt: skip
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return ax.get_lines()[before].get_color()


def region_outline(
    ax: Axes,
    mask: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    label: str | None = None,
    color: str = "white",
    linestyle: str = "-",
) -> None:
    """Outline the cells where mask is True (a boolean grid of shape (len(rows), len(cols)))."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(rows), len(cols)):
        raise ValueError(f"mask has shape {mask.shape}, axes give ({len(rows)}, {len(cols)})")
    xe, ye = _edges(cols), _edges(rows)
    segments = []
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not mask[i, j]:
                continue
            if i == 0 or not mask[i - 1, j]:
                segments.append(((xe[j], xe[j + 1]), (ye[i], ye[i])))
            if i == len(rows) - 1 or not mask[i + 1, j]:
                segments.append(((xe[j], xe[j + 1]), (ye[i + 1], ye[i + 1])))
            if j == 0 or not mask[i, j - 1]:
                segments.append(((xe[j], xe[j]), (ye[i], ye[i + 1])))
            if j == len(cols) - 1 or not mask[i, j + 1]:
                segments.append(((xe[j + 1], xe[j + 1]), (ye[i], ye[i + 1])))
    halo = [
        patheffects.Stroke(linewidth=3.6, foreground="black" if color == "white" else "white"),
        patheffects.Normal(),
    ]
    for k, (xs, ys) in enumerate(segments):  # a contrasting halo keeps the outline visible on light and dark cells
        ax.plot(xs, ys, color=color, linestyle=linestyle, linewidth=1.8, label=label if k == 0 else None,
                path_effects=halo)  # fmt: skip


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around equally or unequally spaced centres."""
    c = np.asarray(centers, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def exponent_panel(
    ax: Axes,
    sizes: np.ndarray,
    values: np.ndarray,
    fit: tuple[float, float, float],
    predicted: float | None,
    xlabel: str,
    ylabel: str,
    title: str = "",
    predicted_label: str = "theorem",
) -> None:
    """A log-log panel of a scaling law: every seed's points (S, K) at ``sizes`` ((K,) or (S, K)), their geometric
    mean per size, the fitted power law with its exponent and 95 % interval ``fit = (p, lo, hi)``, and the
    theorem's exponent ``predicted`` drawn through the same centre (None: the theorem gives none)."""
    y = np.asarray(values, dtype=float)
    x = np.broadcast_to(np.asarray(sizes, dtype=float), y.shape)
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():
        ax.text(0.5, 0.5, "no positive values to draw", transform=ax.transAxes, ha="center")
        return
    ax.loglog(x[ok], y[ok], "o", color="tab:blue", alpha=0.3, ms=4, label="each seed")
    xs = np.exp(np.array([np.log(x[:, k][ok[:, k]]).mean() if ok[:, k].any() else np.nan for k in range(y.shape[1])]))
    ys = np.exp(np.array([np.log(y[:, k][ok[:, k]]).mean() if ok[:, k].any() else np.nan for k in range(y.shape[1])]))
    ax.loglog(xs, ys, "s", color="tab:blue", ms=6, label="geometric mean over seeds")
    cx, cy = np.exp(np.log(x[ok]).mean()), np.exp(np.log(y[ok]).mean())
    line = np.geomspace(x[ok].min(), x[ok].max(), 50)
    p, lo, hi = fit
    ax.loglog(line, cy * (line / cx) ** p, "-", color="tab:red", label=f"fit: exponent {p:.2f} [{lo:.2f}, {hi:.2f}]")
    if predicted is not None:
        ax.loglog(line, cy * (line / cx) ** predicted, "k--", label=f"{predicted_label}: exponent {predicted:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
