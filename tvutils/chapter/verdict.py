"""Verdicts: what a notebook claims, what it measured, and whether they agree.

Each checking notebook ends with a verdict cell that writes ``_build/verdicts/<notebook>.json``:
``{"notebook", "profile", "claims": [{"claim", "metric", "value", "threshold", "passed", "note", "paper",
"asserted"}]}`` and then asserts every claim recorded with ``asserted=True``, so CI fails when the science
breaks. A claim of the paper that did not reproduce after an honest investigation is recorded with
``asserted=False`` (its ``passed`` is still computed from the measurement) and a note saying what was measured
and tried; the book shows it, CI does not hide it behind a loosened threshold.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .paths import atomic_write_bytes, build_dir

COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass
class Claim:
    claim: str
    metric: str
    value: float
    threshold: float
    comparison: str
    passed: bool
    asserted: bool
    note: str = ""
    paper: str = ""  # the paper's number or statement, as a labelled reference


@dataclass
class Verdict:
    notebook: str
    profile: str
    claims: list[Claim] = field(default_factory=list)

    def check(
        self,
        claim: str,
        metric: str,
        value: float,
        threshold: float,
        comparison: str = ">=",
        *,
        asserted: bool = True,
        note: str = "",
        paper: str = "",
    ) -> Claim:
        """Record a claim: passed = value <comparison> threshold (NaN never passes)."""
        if comparison not in COMPARISONS:
            raise ValueError(f"unknown comparison {comparison!r}; use one of {list(COMPARISONS)}")
        value = float(value)
        passed = (not math.isnan(value)) and bool(COMPARISONS[comparison](value, threshold))
        if not asserted and not note:
            raise ValueError(f"claim {claim!r} is not asserted: say in a note what was measured and tried")
        entry = Claim(claim, metric, value, float(threshold), comparison, passed, asserted, note, paper)
        self.claims.append(entry)
        return entry

    def table(self) -> pd.DataFrame:
        rows = [
            {
                "claim": c.claim,
                "metric": c.metric,
                "ours": c.value,
                "rule": f"{c.comparison} {c.threshold:g}",
                "paper": c.paper,
                "status": status(c),
            }
            for c in self.claims
        ]
        return pd.DataFrame(rows)

    def write(self, directory: Path | None = None) -> Path:
        """Write the verdict JSON atomically and return its path."""
        directory = Path(directory) if directory is not None else build_dir() / "verdicts"
        path = directory / f"{self.notebook}.json"
        doc = {"notebook": self.notebook, "profile": self.profile, "claims": [asdict(c) for c in self.claims]}
        atomic_write_bytes(path, json.dumps(doc, indent=2, ensure_ascii=False).encode())
        return path

    def finish(self, directory: Path | None = None) -> pd.DataFrame:
        """Write the file, then assert every asserted claim passed. Returns the table to display."""
        if not self.claims:
            raise ValueError("a verdict needs at least one claim")
        self.write(directory)
        failed = [c for c in self.claims if c.asserted and not c.passed]
        if failed:
            lines = "; ".join(
                f"{c.claim}: {c.metric} = {c.value:.4g}, needs {c.comparison} {c.threshold:g}" for c in failed
            )
            raise AssertionError(f"{len(failed)} claim(s) failed in {self.notebook} ({self.profile}): {lines}")
        return self.table()


def status(c: Claim) -> str:
    if c.passed:
        return "reproduced"
    return "FAILED" if c.asserted else "not reproduced"


def load_verdicts(directory: Path | None = None) -> pd.DataFrame:
    """Every verdict file in a folder as one table: notebook, profile, claim, paper, ours, status."""
    directory = Path(directory) if directory is not None else build_dir() / "verdicts"
    rows = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        for c in doc["claims"]:
            rows.append(
                {
                    "notebook": doc["notebook"],
                    "profile": doc["profile"],
                    "claim": c["claim"],
                    "metric": c["metric"],
                    "paper": c.get("paper", ""),
                    "ours": c["value"],
                    "rule": f"{c['comparison']} {c['threshold']:g}",
                    "status": status(Claim(**c)),
                    "note": c.get("note", ""),
                }
            )
    return pd.DataFrame(
        rows, columns=["notebook", "profile", "claim", "metric", "paper", "ours", "rule", "status", "note"]
    )
