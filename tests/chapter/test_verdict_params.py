import json

import numpy as np
import pytest

from tvutils.chapter.params import resolve
from tvutils.chapter.paths import atomic_write_bytes
from tvutils.chapter.verdict import Verdict, fmt_number, load_verdicts, mean_interval, slug


def _declare(v, id="acc", *, expect=True, applies_to="worst", rule=(">=", 0.9), kind="paper", note=""):
    return v.declare(id, kind=kind, claim=f"claim {id}", metric="accuracy", rule=rule, applies_to=applies_to,
                     expect=expect, section="Accuracy after merging", note=note)  # fmt: skip


def test_verdict_writes_json_with_kind_expectation_and_interval(tmp_path):
    v = Verdict("nb", "ci")
    _declare(v, "acc", expect={"ci": True, "default": True})
    _declare(v, "miss", expect=False, rule=("<=", 0.5), applies_to="mean", note="measured 0.8 over 3 seeds; tried X")
    _declare(v, "fit", kind="exploratory", rule=("contains", 2.0), applies_to="value")
    v.measure("acc", values=[0.95, 0.93, 0.97])
    v.measure("miss", values=[0.8, 0.7, 0.9])
    v.measure("fit", value=1.9, interval=(1.7, 2.1))
    v.finish(tmp_path)
    doc = json.loads((tmp_path / "nb.json").read_text())
    assert doc["notebook"] == "nb" and doc["profile"] == "ci" and doc["judged"] is True
    acc, miss, fit = doc["claims"]
    assert acc["kind"] == "paper" and acc["expected_met"] is True and acc["met"] is True
    assert acc["value"] == 0.93 and acc["spread"] == [0.93, 0.97] and acc["status"] == "reproduced"
    lo, hi = acc["interval"]
    assert lo < 0.95 < hi and hi - lo == pytest.approx(2 * 4.303 * 0.02 / 3**0.5, rel=1e-3)
    assert miss["expected_outcome"] == "not reproduced" and miss["met"] is False
    assert fit["status"] == "holds" and fit["anchor"] == "accuracy-after-merging"
    board = load_verdicts(tmp_path)
    assert board["status"].tolist() == ["reproduced", "not reproduced", "holds"]
    assert board["kind"].tolist() == ["paper", "paper", "exploratory"]


@pytest.mark.parametrize("expect,values", [(True, [0.95, 0.5, 0.97]), (False, [0.95, 0.93, 0.97])])
def test_a_claim_that_differs_from_its_record_fails_in_both_directions(tmp_path, expect, values):
    v = Verdict("bad", "default")
    _declare(v, expect=expect, note="evidence")
    v.measure("acc", values=values)
    with pytest.raises(AssertionError, match="differ from the record"):
        v.finish(tmp_path)
    assert (tmp_path / "bad.json").is_file()  # written before the assertion, for the scoreboard to show


def test_applies_to_worst_mean_and_interval():
    v = Verdict("x", "ci")
    for how in ("worst", "mean", "interval"):
        _declare(v, how, applies_to=how, rule=(">=", 0.9))
        v.measure(how, values=[0.85, 0.95, 0.99])
    assert not v.claims["worst"].met and v.claims["worst"].value == 0.85
    assert v.claims["mean"].met and v.claims["mean"].value == pytest.approx(0.93)
    assert not v.claims["interval"].met and v.claims["interval"].value < 0.9  # lower end of the t interval


def test_declaration_rules_are_enforced(tmp_path):
    v = Verdict("x", "ci")
    with pytest.raises(ValueError, match="kind"):
        _declare(v, kind="claim")
    with pytest.raises(ValueError, match="note"):
        _declare(v, "silent", expect=False)
    with pytest.raises(ValueError, match="comparison"):
        _declare(v, "odd", rule=("=>", 1.0))
    _declare(v, "acc")
    with pytest.raises(ValueError, match="twice"):
        _declare(v, "acc")
    with pytest.raises(KeyError, match="not declared"):
        v.measure("other", value=1.0)
    with pytest.raises(ValueError, match="pass values="):
        v.measure("acc", value=1.0)
    assert not v.measure("acc", values=[float("nan"), 1.0]).met  # NaN never passes
    _declare(v, "never")
    with pytest.raises(AssertionError, match="never measured"):
        v.finish(tmp_path)


def test_a_profile_without_a_record_is_an_error_and_judging_can_be_switched_off(tmp_path, monkeypatch):
    v = Verdict("x", "full")
    _declare(v, expect={"ci": True, "default": True})
    v.measure("acc", values=[0.1, 0.2])
    with pytest.raises(ValueError, match="no expected outcome for profile 'full'"):
        v.finish(tmp_path)
    monkeypatch.setenv("TVUTILS_VERDICT_JUDGE", "0")
    v.finish(tmp_path)
    assert json.loads((tmp_path / "x.json").read_text())["judged"] is False


def test_mean_interval_and_number_format():
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and (lo, hi) == pytest.approx((2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5), rel=1e-4)
    assert np.isnan(mean_interval([1.0])[1])
    assert fmt_number(1.0) == "1" and fmt_number(0.0515) == "0.0515" and fmt_number(2.5e-6) == "2.500e-06"
    assert slug("Theorem 1: the region") == "theorem-1-the-region"


def test_resolve_profiles_and_unknown_names():
    defaults = {"seeds": [0, 1, 2], "steps": 100}
    p = resolve(defaults, "ci", {"ci": {"seeds": [0]}}, {"steps": 5})
    assert p.seeds == [0] and p.steps == 5 and p.profile == "ci"
    assert resolve(defaults, "default").seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown parameter"):
        resolve(defaults, "default", overrides={"stepz": 1})
    with pytest.raises(ValueError, match="unknown profile"):
        resolve(defaults, "fast")


def test_atomic_write_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_scoreboard_links_and_tally(tmp_path):
    from tvutils.chapter.verdict import tally, with_links

    v = Verdict("01_x", "ci")
    _declare(v, "a")
    _declare(v, "b", kind="machinery")
    _declare(v, "c", expect=False, note="evidence")
    for k, vals in (("a", [0.95, 0.99]), ("b", [1.0, 1.0]), ("c", [0.1, 0.2])):
        v.measure(k, values=vals)
    v.finish(tmp_path)
    board = load_verdicts(tmp_path)
    linked = with_links(board)
    assert linked["claim"][0] == '<a href="01_x.html#accuracy-after-merging">claim a</a>'
    assert linked["chapter"][0] == '<a href="01_x.html">01_x</a>'
    counts = tally(board)
    assert counts["paper claims"] == 2 and counts["reproduced"] == 1 and counts["not reproduced"] == 1
    assert counts["book checks"] == 1 and counts["book checks holding"] == 1
    assert counts["differing from the record"] == 0
