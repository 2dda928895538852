import json

import pytest

from tvutils.chapter.params import resolve
from tvutils.chapter.paths import atomic_write_bytes
from tvutils.chapter.verdict import Verdict, load_verdicts


def test_verdict_writes_json_and_asserts(tmp_path):
    v = Verdict("nb", "ci")
    v.check("acc high", "accuracy", 0.995, 0.99, ">=", paper="—")
    v.check("a claim that did not reproduce", "loss", 0.8, 0.5, "<=", asserted=False, note="measured 0.8; tried X")
    table = v.finish(tmp_path)
    doc = json.loads((tmp_path / "nb.json").read_text())
    assert doc["notebook"] == "nb" and doc["profile"] == "ci"
    assert [c["passed"] for c in doc["claims"]] == [True, False]
    assert set(doc["claims"][0]) >= {"claim", "metric", "value", "threshold", "passed", "note"}
    assert list(table["status"]) == ["reproduced", "not reproduced"]
    board = load_verdicts(tmp_path)
    assert len(board) == 2 and board["status"].tolist() == ["reproduced", "not reproduced"]


def test_failed_asserted_claim_raises_after_writing(tmp_path):
    v = Verdict("bad", "default")
    v.check("must hold", "accuracy", 0.5, 0.99)
    with pytest.raises(AssertionError, match="must hold"):
        v.finish(tmp_path)
    assert json.loads((tmp_path / "bad.json").read_text())["claims"][0]["passed"] is False


def test_nan_never_passes_and_unasserted_needs_a_note():
    v = Verdict("x", "ci")
    assert not v.check("nan", "m", float("nan"), 0.0, ">=").passed
    with pytest.raises(ValueError, match="note"):
        v.check("silent", "m", 1.0, 2.0, asserted=False)
    with pytest.raises(ValueError, match="comparison"):
        v.check("odd", "m", 1.0, 2.0, "=>")


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
