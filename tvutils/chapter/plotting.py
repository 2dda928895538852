"""Figures shared by the chapters: heatmaps over a λ grid with a theory region drawn on top."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
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
