"""Verdicts: what a chapter claims, declared before it measures, and whether the measurement agrees.

A chapter declares each claim near its top, before any experiment runs::

    v = Verdict("01_task_addition", P.profile)
    v.declare(
        "region",                      # an id, used again when the value is measured
        kind="paper",                  # "paper": a claim of the paper; "machinery": a check of the book's own
                                       # code (e.g. Ψ⁽⁰⁾ + ΔΨ = Ψ*); "exploratory": a fit or an observation
        claim="Theorem 1: addition succeeds inside the predicted region",
        metric="fraction of region cells where both tasks are learned",
        rule=(">=", 0.9),              # or ("contains", 2.0): the value's interval contains 2.0
        applies_to="worst",            # "worst" seed, the "mean", the "interval" (its least favourable end),
                                       # or "value" (one number, e.g. a fit pooled over seeds)
        expect={"default": True, "ci": True},  # per profile: is the rule expected to be met?
        source="Theorem 1",            # where the paper says it
        paper_value="",                # the paper's number, only where it measures the same thing
        section="Addition succeeds inside the region",  # the heading of the chapter section showing it
    )

and, after measuring, ``v.measure("region", values=per_seed)`` (or ``value=…, interval=(lo, hi)``). The last
cell calls ``v.finish()``, which writes ``_build/verdicts/<chapter>.json`` and asserts every claim against its
record **in both directions**: a claim expected to be met that is not fails, and so does a claim expected not
to be met that now is (the science changed: look, and update the record on purpose). A claim of the paper that
did not reproduce after an honest investigation is declared ``expect=False`` with a note giving the evidence;
the book shows it. Every declared claim must be measured; nothing is left unasserted.

Setting the environment variable ``TVUTILS_VERDICT_JUDGE=0`` records the verdict without asserting it (the
stand-in runs of the ``full`` profiles, whose random weights cannot reproduce any science); the file then says
``"judged": false`` and the scoreboard refuses it.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .paths import atomic_write_bytes, build_dir

COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
KINDS = {
    "paper": "a claim of the paper",
    "machinery": "a check of the book's own machinery",
    "exploratory": "an exploratory fit or observation",
}
APPLIES_TO = ("worst", "mean", "interval", "value")
# two-sided 95 % Student t quantiles, t_{0.975, df} for df = 1 … 30 (then the normal 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lower, upper): the 95 % Student-t interval of the mean over seeds (NaN bounds for one value)."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size == 1:
        return m, float("nan"), float("nan")
    t = _T975[x.size - 2] if x.size - 1 <= len(_T975) else 1.96
    half = t * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - half, m + half


def slug(heading: str) -> str:
    """The HTML id Sphinx gives a section heading (lower case, ASCII, runs of other characters → '-')."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclass
class Claim:
    id: str
    claim: str
    kind: str
    metric: str
    comparison: str
    threshold: float
    applies_to: str
    expected: dict[str, bool]
    source: str = ""
    paper_value: str = ""
    section: str = ""
    note: str = ""
    measured: bool = False
    value: float = float("nan")  # the number the rule is applied to
    estimate: float = float("nan")  # the mean (or the single value) shown beside it
    interval: tuple[float, float] | None = None  # 95 % interval of the estimate
    spread: tuple[float, float] | None = None  # (min, max) over seeds
    values: list[float] = field(default_factory=list)  # per seed, where measured over seeds
    met: bool = False

    def outcome(self, met: bool | None = None) -> str:
        met = self.met if met is None else met
        if self.kind == "paper":
            return "reproduced" if met else "not reproduced"
        return "holds" if met else "does not hold"

    def rule_text(self) -> str:
        if self.comparison == "contains":
            return f"95 % interval contains {self.threshold:g}"
        return f"{self.applies_to}: {self.comparison} {self.threshold:g}"


def _judging() -> bool:
    return os.environ.get("TVUTILS_VERDICT_JUDGE", "1") != "0"


def fmt_number(x: float) -> str:
    """A value as a reader wants it: 4 significant digits, no exponent for ordinary magnitudes."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"
    return f"{x:.3e}"


def value_text(c: Claim) -> str:
    """The estimate with its interval and spread, e.g. '0.95 [0.93, 0.97] (min 0.92, 5 seeds)'."""
    text = fmt_number(c.estimate)
    if c.interval is not None and not any(math.isnan(b) for b in c.interval):
        text += f" [{fmt_number(c.interval[0])}, {fmt_number(c.interval[1])}]"
    if c.values:
        text += f" (range {fmt_number(c.spread[0])} to {fmt_number(c.spread[1])}, {len(c.values)} seeds)"
    if c.applies_to == "worst" and c.values:
        text += f"; worst {fmt_number(c.value)}"
    return text


@dataclass
class Verdict:
    notebook: str
    profile: str
    claims: dict[str, Claim] = field(default_factory=dict)

    def declare(
        self,
        id: str,
        *,
        kind: str,
        claim: str,
        metric: str,
        rule: tuple[str, float],
        applies_to: str,
        expect: bool | Mapping[str, bool],
        source: str = "",
        paper_value: str = "",
        section: str = "",
        note: str = "",
    ) -> Claim:
        """Declare a claim before measuring it: its kind, rule, what the rule applies to, expected outcome."""
        if id in self.claims:
            raise ValueError(f"claim {id!r} is declared twice")
        if kind not in KINDS:
            raise ValueError(f"claim {id!r}: unknown kind {kind!r}; use one of {list(KINDS)}")
        comparison, threshold = rule
        if comparison not in (*COMPARISONS, "contains"):
            raise ValueError(
                f"claim {id!r}: unknown comparison {comparison!r}; use one of {[*COMPARISONS, 'contains']}"
            )
        if applies_to not in APPLIES_TO:
            raise ValueError(f"claim {id!r}: applies_to must be one of {APPLIES_TO}, not {applies_to!r}")
        expected = dict(expect) if isinstance(expect, Mapping) else {"*": bool(expect)}
        if any(not isinstance(e, bool) for e in expected.values()):
            raise ValueError(f"claim {id!r}: expected outcomes must be True (met) or False (not met)")
        if not any(e for e in expected.values()) and not note and kind == "paper":
            raise ValueError(f"claim {id!r} is expected not to reproduce: say in a note what was measured and tried")
        entry = Claim(id, claim, kind, metric, comparison, float(threshold), applies_to, expected, source,
                      paper_value, section, note)  # fmt: skip
        self.claims[id] = entry
        return entry

    def expected(self, id: str) -> bool:
        """The outcome the record expects for this claim on this notebook's profile."""
        c = self.claims[id]
        if self.profile in c.expected:
            return c.expected[self.profile]
        if "*" in c.expected:
            return c.expected["*"]
        raise ValueError(
            f"claim {id!r} has no expected outcome for profile {self.profile!r} (it has {sorted(c.expected)})"
        )

    def measure(
        self,
        id: str,
        *,
        values: Sequence[float] | None = None,
        value: float | None = None,
        interval: tuple[float, float] | None = None,
        note: str | None = None,
    ) -> Claim:
        """Record the measurement: per-seed ``values`` (for worst / mean / interval) or one ``value``."""
        if id not in self.claims:
            raise KeyError(f"claim {id!r} was not declared; declare every claim before measuring it")
        c = self.claims[id]
        if c.measured:
            raise ValueError(f"claim {id!r} is measured twice")
        if (values is None) == (value is None):
            raise ValueError(f"claim {id!r}: give either per-seed values or one value")
        if values is not None:
            if c.applies_to == "value":
                raise ValueError(f"claim {id!r} applies to one value; pass value=, not values=")
            x = [float(v) for v in np.asarray(values, dtype=float).ravel()]
            if not x:
                raise ValueError(f"claim {id!r}: no values")
            c.values = x
            c.spread = (min(x), max(x))
            c.estimate, lo, hi = mean_interval(x)
            c.interval = (lo, hi) if interval is None else (float(interval[0]), float(interval[1]))
            lower_is_better = c.comparison in ("<=", "<")
            if c.applies_to == "worst":
                c.value = max(x) if lower_is_better else min(x)
            elif c.applies_to == "mean":
                c.value = c.estimate
            elif c.applies_to == "interval":
                c.value = c.interval[1] if lower_is_better else c.interval[0]
        else:
            if c.applies_to != "value" and c.comparison != "contains":
                raise ValueError(f"claim {id!r} applies to the {c.applies_to} over seeds; pass values=")
            c.value = c.estimate = float(value)
            c.interval = None if interval is None else (float(interval[0]), float(interval[1]))
        if c.comparison == "contains":
            if c.interval is None or any(math.isnan(b) for b in c.interval):
                raise ValueError(f"claim {id!r}: a 'contains' rule needs an interval")
            c.met = c.interval[0] <= c.threshold <= c.interval[1]
        else:
            c.met = (not math.isnan(c.value)) and bool(COMPARISONS[c.comparison](c.value, c.threshold))
        if note is not None:
            c.note = note
        c.measured = True
        return c

    def table(self) -> pd.io.formats.style.Styler:
        """The chapter's verdict as a table, every column in full."""
        rows = [
            {
                "kind": c.kind,
                "claim": c.claim,
                "metric": c.metric,
                "ours": value_text(c) if c.measured else "not measured",
                "rule": c.rule_text(),
                "paper": c.paper_value,
                "expected": c.outcome(self.expected(c.id)) if self.profile_known(c) else "—",
                "status": c.outcome() if c.measured else "—",
                "note": c.note,
            }
            for c in self.claims.values()
        ]
        return styled(pd.DataFrame(rows), f"verdict-{self.notebook}")

    def profile_known(self, c: Claim) -> bool:
        return self.profile in c.expected or "*" in c.expected

    def write(self, directory: Path | None = None) -> Path:
        """Write the verdict JSON atomically and return its path."""
        directory = Path(directory) if directory is not None else build_dir() / "verdicts"
        path = directory / f"{self.notebook}.json"
        claims = []
        for c in self.claims.values():
            d = asdict(c)
            d["expected_met"] = self.expected(c.id) if self.profile_known(c) else None
            d["expected_outcome"] = c.outcome(d["expected_met"]) if d["expected_met"] is not None else None
            d["status"] = c.outcome() if c.measured else "not measured"
            d["anchor"] = slug(c.section) if c.section else ""
            claims.append(d)
        doc = {"notebook": self.notebook, "profile": self.profile, "judged": _judging(), "claims": claims}
        text = json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default)
        atomic_write_bytes(path, text.encode())
        return path

    def finish(self, directory: Path | None = None) -> pd.io.formats.style.Styler:
        """Write the file, then assert every claim against its expected outcome. Returns the table to display."""
        if not self.claims:
            raise ValueError("a verdict needs at least one claim")
        self.write(directory)
        unmeasured = [c.id for c in self.claims.values() if not c.measured]
        if unmeasured:
            raise AssertionError(f"{self.notebook}: declared but never measured: {unmeasured}")
        if not _judging():
            return self.table()
        problems = []
        for c in self.claims.values():
            expected = self.expected(c.id)
            if c.met != expected:
                direction = "stopped holding" if expected else "now holds (the science changed: update the record)"
                problems.append(
                    f"{c.claim} [{c.id}]: expected {c.outcome(expected)}, measured {c.outcome()} — {direction}; "
                    f"{c.metric} = {value_text(c)}, rule {c.rule_text()}"
                )
        if problems:
            raise AssertionError(
                f"{len(problems)} claim(s) of {self.notebook} ({self.profile}) differ from the record: "
                + "; ".join(problems)
            )
        return self.table()


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def styled(df: pd.DataFrame, uuid: str) -> pd.io.formats.style.Styler:
    """A table that wraps long text instead of cutting it, with a stable id (executed outputs compare equal)."""
    return (
        df.style.set_uuid(uuid)
        .hide(axis="index")
        .set_properties(**{"text-align": "left", "white-space": "normal", "vertical-align": "top"})
    )


def load_verdicts(directory: Path | None = None) -> pd.DataFrame:
    """Every verdict file in a folder as one table, one row per claim, with the fields the files record."""
    directory = Path(directory) if directory is not None else build_dir() / "verdicts"
    rows = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            claims = doc["claims"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a verdict file ({exc})") from None
        for d in claims:
            try:
                c = Claim(**{k: v for k, v in d.items() if k in Claim.__dataclass_fields__})
            except TypeError as exc:
                raise ValueError(
                    f"{path}: a verdict file of another version of the book ({exc}); re-run its chapter"
                ) from None
            c.interval = tuple(c.interval) if c.interval is not None else None
            c.spread = tuple(c.spread) if c.spread is not None else None
            rows.append(
                {
                    "notebook": doc["notebook"],
                    "profile": doc["profile"],
                    "judged": doc.get("judged", True),
                    "id": c.id,
                    "kind": c.kind,
                    "claim": c.claim,
                    "metric": c.metric,
                    "source": c.source,
                    "paper": c.paper_value,
                    "ours": value_text(c),
                    "value": c.value,
                    "interval": c.interval,
                    "rule": c.rule_text(),
                    "expected": d.get("expected_outcome"),
                    "status": d.get("status", c.outcome()),
                    "section": d.get("anchor", ""),
                    "note": c.note,
                }
            )
    columns = ["notebook", "profile", "judged", "id", "kind", "claim", "metric", "source", "paper", "ours", "value",
               "interval", "rule", "expected", "status", "section", "note"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def with_links(board: pd.DataFrame) -> pd.DataFrame:
    """The board with its chapter and claim as HTML links to the chapter's page and the section that shows it."""
    out = board.copy()
    page = out["notebook"] + ".html"
    out["chapter"] = [f'<a href="{p}">{nb}</a>' for p, nb in zip(page, out["notebook"])]
    out["claim"] = [
        f'<a href="{p}#{anchor}">{claim}</a>' if anchor else claim
        for p, anchor, claim in zip(page, out["section"], out["claim"])
    ]
    return out


def tally(board: pd.DataFrame) -> dict[str, int]:
    """Counts the scoreboard reports: the paper's claims reproduced / not, and the book's own checks."""
    paper, own = board[board["kind"] == "paper"], board[board["kind"] != "paper"]
    return {
        "chapters": int(board["notebook"].nunique()),
        "paper claims": len(paper),
        "reproduced": int((paper["status"] == "reproduced").sum()),
        "not reproduced": int((paper["status"] == "not reproduced").sum()),
        "book checks": len(own),
        "book checks holding": int((own["status"] == "holds").sum()),
        "differing from the record": int((board["status"] != board["expected"]).sum()),
    }
