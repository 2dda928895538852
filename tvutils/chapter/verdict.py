"""Verdicts: a chapter's claims, read from the claims ledger before anything is measured, judged by the form of
their statement, and asserted against the ledger's record.

A chapter opens its verdict right after its parameters::

    v = Verdict("01_task_addition", P)   # every claim of this chapter in tvutils/chapter/claims.yaml
    ...
    v.precondition("t2_known", ok, "T2 accuracy at λ = 0: 93 %")   # a premise, checked before scoring
    v.measure("region", values=per_seed)                            # threshold or comparison (over seeds)
    v.measure("rouge_close", interval=(est, lo, hi))                 # comparison on a given interval
    v.measure("cor1_W", f=residuals, g=bound, sizes=Ms)              # upper / lower bound, C fitted held out
    v.measure("exponent", sizes=ms, values=norms)                    # Θ order: two one-sided tests
    v.finish()

Each claim ends **met**, **not met**, **inconclusive** (an interval straddles the rule, or too few seeds for an
interval) or **not tested** (a precondition failed, or the swept size never moved the quantity): for a claim of
the paper, *reproduced*, *not reproduced*, *inconclusive*, *not tested here*. ``finish`` writes
``_build/verdicts/<chapter>.json`` and asserts every outcome against the ledger's ``expect`` for the profile, in
both directions: an outcome that changed, for better or worse, stops the build until the record is updated on
purpose. ``TVUTILS_VERDICT_JUDGE=0`` records without asserting (the ``full`` profiles' stand-in runs, whose
random weights reproduce nothing); the file then says ``"judged": false`` and the scoreboard refuses it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from . import forms
from .forms import fmt as fmt_number
from .ledger import LEDGER_PATH, Entry, chapter_entries, evaluate
from .paths import atomic_write_bytes, build_dir

STATUS = {  # (kind is paper, result) → the word a reader sees
    (True, "met"): "reproduced",
    (True, "not met"): "not reproduced",
    (False, "met"): "holds",
    (False, "not met"): "does not hold",
}


def status_of(kind: str, result: str) -> str:
    """The word for an outcome: reproduced / not reproduced for the paper's claims, holds / does not hold for the
    book's own; inconclusive and not tested here for both."""
    if result == "inconclusive":
        return "inconclusive"
    if result == "not tested":
        return "not tested here"
    return STATUS[kind == "paper", result]


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lower, upper): the 95 % Student-t interval of the mean over seeds (NaN bounds for one value)."""
    return forms.t_interval(values)


@dataclass
class Claim:
    """A ledger entry made concrete for one chapter run, and what was measured."""

    entry: Entry
    id: str
    claim: str
    metric: str
    rule: str
    note: str
    expected: str | None
    each: str = ""  # the instance of a ``for_each`` entry
    measured: bool = False
    result: str = ""
    value: float = float("nan")
    estimate: float = float("nan")
    interval: tuple[float, float] | None = None
    values: list[float] = field(default_factory=list)
    detail: str = ""
    preconditions: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def status(self) -> str:
        return status_of(self.kind, self.result) if self.measured else "not measured"

    @property
    def met(self) -> bool:
        return self.result == "met"

    def outcome(self) -> str:
        return self.status


def _judging() -> bool:
    return os.environ.get("TVUTILS_VERDICT_JUDGE", "1") != "0"


def _rule_text(test: Mapping[str, Any], names: Mapping[str, Any]) -> str:
    family = test["family"]
    if family in ("threshold", "comparison"):
        op, limit = test["rule"]
        where = {"threshold": test.get("applies_to", "worst"), "comparison": "95 % interval"}[family]
        return f"{where} {op} {fmt_number(evaluate(limit, names))}"
    if family in ("upper_bound", "lower_bound"):
        side = "≤" if family == "upper_bound" else "≥"
        return (f"f {side} C·g: C fitted on the {test.get('fit', 1)} smallest size(s); scored within a factor "
                f"{1 + test.get('margin', 0.5):g}; slope of log(f/g) within ±{test.get('slope_margin', 0.1):g}")  # fmt: skip
    return f"exponent within {test['exponent']:g} ± {test['margin']:g} (90 % interval, two one-sided tests)"


class Verdict:
    """The claims of one chapter, from the ledger, and their measurements."""

    def __init__(
        self,
        notebook: str,
        params: SimpleNamespace | Mapping[str, Any] | str,
        *,
        ledger: Path | str = LEDGER_PATH,
        **lists: Sequence[Any],
    ) -> None:
        """``params``: the chapter's resolved parameters (their ``profile``, the names rules and ``for_each`` use);
        ``ledger``: the claims ledger (the book's own by default); ``lists``: further sequences a ``for_each`` may
        name (e.g. ``ranks=[1, 2]``)."""
        if isinstance(params, str):
            params = {"profile": params}
        names = (dict(vars(params)) if isinstance(params, SimpleNamespace) else dict(params)) | lists
        self.notebook, self.profile, self.names = notebook, str(names.get("profile", "default")), names
        entries = chapter_entries(notebook, ledger)
        if not entries:
            raise ValueError(f"the claims ledger has no claim for chapter {notebook!r}")
        self.claims: dict[str, Claim] = {}
        for e in entries:
            if e.when and not self._applies(e):
                continue
            for each in self._instances(e):
                fill = (lambda s, k=each: s.replace("{each}", str(k))) if each is not None else (lambda s: s)
                cid = fill(e.id)
                expected = e.expect.get(self.profile, e.expect.get("*"))
                if isinstance(expected, dict):
                    expected = expected.get(str(each))
                self.claims[cid] = Claim(e, cid, fill(e.claim), fill(e.test["metric"]), _rule_text(e.test, names),
                                         e.note, expected, each="" if each is None else str(each))  # fmt: skip

    def _applies(self, e: Entry) -> bool:
        negate, name = e.when.startswith("not "), e.when.removeprefix("not ").strip()
        if name not in self.names:
            raise ValueError(f"claim {e.id!r} is made when {name!r}, which is not a parameter of the chapter")
        return bool(self.names[name]) != negate

    def _instances(self, e: Entry) -> list:
        if not e.for_each:
            return [None]
        if e.for_each not in self.names:
            raise ValueError(f"claim {e.id!r} is declared for each {e.for_each!r}, not a parameter of the chapter")
        return list(self.names[e.for_each])

    def _claim(self, id: str) -> Claim:
        if id not in self.claims:
            raise KeyError(f"{self.notebook} has no claim {id!r} in the claims ledger (it has {sorted(self.claims)})")
        return self.claims[id]

    def expected(self, id: str) -> bool:
        """Does the ledger's record expect this claim to be met on this profile?"""
        return self._claim(id).expected == "met"

    def precondition(self, name: str, met: bool, detail: str, claims: Sequence[str] | None = None) -> None:
        """Record a premise, checked before scoring, for every claim that lists it (or for ``claims``)."""
        targets = [c for c in self.claims.values() if name in c.entry.preconditions] if claims is None else [
            self._claim(c) for c in claims]  # fmt: skip
        if not targets:
            raise KeyError(f"no claim of {self.notebook} lists the precondition {name!r}")
        for c in targets:
            if c.measured:
                raise ValueError(f"claim {c.id!r}: its precondition {name!r} is recorded after it was scored")
            c.preconditions[name] = (bool(met), detail)

    def measure(
        self,
        id: str,
        *,
        values: Sequence[float] | np.ndarray | None = None,
        value: float | None = None,
        interval: Sequence[float] | None = None,
        f: np.ndarray | None = None,
        g: np.ndarray | None = None,
        sizes: Sequence[float] | None = None,
        censored: np.ndarray | None = None,
        note: str | None = None,
    ) -> Claim:
        """Score a claim by its test family (see the module docstring for what each family takes)."""
        c = self._claim(id)
        if c.measured:
            raise ValueError(f"claim {id!r} is measured twice")
        missing = [p for p in c.entry.preconditions if p not in c.preconditions]
        if missing:
            raise ValueError(f"claim {id!r}: record its preconditions {missing} before scoring it")
        t, names = c.entry.test, self.names
        family = t["family"]
        if family == "threshold":
            if (values is None) == (value is None):
                raise ValueError(f"claim {id!r}: give per-seed values or one value")
            x = [value] if value is not None else values
            out = forms.threshold(x, t["rule"][0], evaluate(t["rule"][1], names), t.get("applies_to", "worst"))
            c.values = [float(v) for v in np.ravel(x)]
        elif family == "comparison":
            if interval is not None and len(interval) == 2:
                base = values if values is not None else [value]
                interval = (float(np.mean(base)), *interval)
            if values is not None and interval is not None:
                c.values = [float(v) for v in np.ravel(values)]
                values = None
            out = forms.comparison(t["rule"][0], evaluate(t["rule"][1], names), values=values, interval=interval)
            c.values = c.values or ([float(v) for v in np.ravel(values)] if values is not None else [])
        elif family in ("upper_bound", "lower_bound"):
            if f is None or g is None or sizes is None:
                raise ValueError(f"claim {id!r}: a bound needs f (seeds × sizes), g and sizes")
            test = forms.upper_bound if family == "upper_bound" else forms.lower_bound
            out = test(f, g, sizes, fit=int(t.get("fit", 1)), margin=float(t.get("margin", 0.5)),
                       slope_margin=float(t.get("slope_margin", 0.1)), floor=float(t.get("floor", 0.0)),
                       censored=censored, min_seeds=int(t.get("min_seeds", forms.MIN_SEEDS_EXPONENT)))  # fmt: skip
            values = f
        else:
            if sizes is None or values is None:
                raise ValueError(f"claim {id!r}: an order test needs sizes and values (seeds × sizes)")
            out = forms.order(sizes, values, float(t["exponent"]), float(t["margin"]), float(t.get("floor", 0.0)),
                              int(t.get("min_seeds", forms.MIN_SEEDS_EXPONENT)))  # fmt: skip
        c.result, c.value, c.estimate, c.interval, c.detail = (
            out.result,
            out.value,
            out.estimate,
            out.interval,
            out.detail,
        )
        if family in ("upper_bound", "lower_bound", "order") and not forms.moves(values):
            c.result, c.detail = "not tested", "the swept size never moved the quantity on any seed; " + c.detail
        failed = [f"{p} ({d})" for p, (ok, d) in c.preconditions.items() if not ok]
        if failed:
            c.result, c.detail = "not tested", "precondition failed: " + "; ".join(failed) + "; measured: " + c.detail
        if note is not None:
            c.note = note
        c.measured = True
        return c

    def rows(self) -> list[dict[str, Any]]:
        """One record per claim: the ledger's fields and the measurement (what the JSON file and tables hold)."""
        out = []
        for c in self.claims.values():
            e = c.entry
            out.append({
                "id": c.id, "ledger_id": e.id, "each": c.each, "kind": e.kind, "form": e.form, "scale": e.scale, "paper": e.paper,
                "claim": c.claim, "statement": e.statement, "where": e.where, "metric": c.metric, "rule": c.rule,
                "value": c.value, "estimate": c.estimate, "interval": c.interval, "values": c.values,
                "detail": c.detail, "result": c.result if c.measured else "", "status": c.status,
                "expected": status_of(e.kind, c.expected) if c.expected else None, "paper_value": e.paper_value,
                "section": e.section, "anchor": e.section, "note": c.note,
                "cause": e.cause, "preconditions": {k: list(v) for k, v in c.preconditions.items()},
            })  # fmt: skip
        return out

    def table(self) -> pd.io.formats.style.Styler:
        """The chapter's verdict as a table, every column in full."""
        rows = [{"kind": r["kind"], "form": r["form"], "claim": r["claim"], "metric": r["metric"], "rule": r["rule"],
                 "ours": r["detail"] or "not measured", "paper": r["paper_value"], "status": r["status"],
                 "note": r["note"]} for r in self.rows()]  # fmt: skip
        return styled(pd.DataFrame(rows), f"verdict-{self.notebook}")

    def declared(self) -> pd.io.formats.style.Styler:
        """The claims as declared, before anything is measured: kind, form, rule, expected outcome."""
        rows = [{"claim": c.claim, "kind": c.kind, "form": c.entry.form, "rule": c.rule,
                 "expected": status_of(c.kind, c.expected) if c.expected else "—"} for c in self.claims.values()]  # fmt: skip
        return styled(pd.DataFrame(rows), f"declared-{self.notebook}")

    def write(self, directory: Path | None = None) -> Path:
        """Write the verdict JSON atomically and return its path."""
        directory = Path(directory) if directory is not None else build_dir() / "verdicts"
        path = directory / f"{self.notebook}.json"
        doc = {"notebook": self.notebook, "profile": self.profile, "judged": _judging(), "claims": self.rows()}
        atomic_write_bytes(path, json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default).encode())
        return path

    def finish(self, directory: Path | None = None) -> pd.io.formats.style.Styler:
        """Write the file, then assert every claim against the ledger's record. Returns the table to display."""
        self.write(directory)
        unmeasured = [c.id for c in self.claims.values() if not c.measured]
        if unmeasured:
            raise AssertionError(f"{self.notebook}: declared in the ledger but never measured: {unmeasured}")
        if not _judging():
            return self.table()
        problems = []
        for c in self.claims.values():
            if c.expected is None:
                problems.append(f"{c.id}: the ledger records no expected outcome for profile {self.profile!r}")
            elif c.result != c.expected:
                problems.append(f"{c.claim} [{c.id}]: expected {status_of(c.kind, c.expected)}, measured {c.status}"
                                f" — {c.metric}: {c.detail}")  # fmt: skip
        if problems:
            raise AssertionError(f"{len(problems)} claim(s) of {self.notebook} ({self.profile}) differ from the "
                                 "ledger's record: " + "; ".join(problems))  # fmt: skip
        return self.table()


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def decimals(values: pd.Series, most: int = 6) -> int:
    """The fewest decimals that show every finite value of a float column as it is (``most`` for unrounded data)."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(float)
    x = x[np.isfinite(x)]
    return next((d for d in range(most) if np.array_equal(x, np.round(x, d))), most)


def styled(df: pd.DataFrame, uuid: str) -> pd.io.formats.style.Styler:
    """A table that wraps long text instead of cutting it, with a stable id (executed outputs compare equal); a
    float column shows as many decimals as its values carry (a column rounded to 3 shows 3, not pandas' 6)."""
    style = df.style.set_uuid(uuid).hide(axis="index")
    for c in df.columns:  # float columns, and the floats of a column that mixes them with text or None
        floats = [x for x in df[c] if isinstance(x, float | np.floating)]
        if floats:
            style = style.format(precision=decimals(pd.Series(floats)), subset=[c], na_rep="—")
    return style.set_properties(**{"text-align": "left", "white-space": "normal", "vertical-align": "top"})
