"""Tables the chapters print in the layout of the paper's own tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def lambda_table(
    metric: str,
    rows: Mapping[str, np.ndarray],
    lambdas: Sequence[float],
    change_from: int,
    change_to: int,
    fmt: str,
    row_label: str = "row",
) -> pd.DataFrame:
    """One row per series of values over λ (columns "λ = …"), indexed by (metric, ``row_label``); the cell at
    index ``change_to`` also shows the relative change from the cell at ``change_from``, as the paper prints it."""
    out = {}
    for name, v in rows.items():
        cells = [format(x, fmt) for x in v]
        cells[change_to] += f" ({100 * (v[change_to] / v[change_from] - 1):+.2f}%)"
        out[(metric, name)] = cells
    table = pd.DataFrame.from_dict(out, orient="index", columns=[f"λ = {lam:g}" for lam in lambdas])
    table.index = pd.MultiIndex.from_tuples(table.index, names=["metric", row_label])
    return table
