import pytest

from tvutils.icl.theorems import (
    pattern_reader_error,
    theorem1_min_length,
    theorem2_predicts_success,
)


def test_predictions():
    assert theorem1_min_length(0.25) == 4.0
    assert theorem2_predicts_success(1.0) and not theorem2_predicts_success(0.9)
    assert pattern_reader_error(0.8, 0) == 0.5 and pattern_reader_error(0.8, 3) == pytest.approx(0.5 * 0.6**3)
    with pytest.raises(ValueError, match="α'"):
        theorem1_min_length(0.0)
