"""Tests of tvutils.chapter.tables."""

import numpy as np

from tvutils.chapter.tables import lambda_table


def test_lambda_table_shows_the_relative_change_where_asked():
    t = lambda_table("Rouge-L", {"A": np.array([0.5, 0.4, 0.25])}, [0.0, -0.5, -1.0], 0, 2, ".2f", "book")
    assert list(t.columns) == ["λ = 0", "λ = -0.5", "λ = -1"]
    assert t.index.names == ["metric", "book"] and t.index[0] == ("Rouge-L", "A")
    assert t.iloc[0].tolist() == ["0.50", "0.40", "0.25 (-50.00%)"]
