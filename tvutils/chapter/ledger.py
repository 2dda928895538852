"""The claims ledger: every claim of the two papers that the book tests, and the book's own questions beside
them, as data (``claims.yaml`` beside this module). Chapters declare their claims from it; the scoreboard and
the ledger page render it. No claim's text is written anywhere else.

Each entry holds the statement as the sources give it (quoted, with where it is said), its logical form, the
premises and how the chapter meets each, the test (family, metric, rule, margins, seeds, held-out split, all
fixed before measuring), the preconditions checked before scoring, the scale, and the outcome the record
expects on each profile. An entry with ``for_each: NAME`` stands for one claim per key of the chapter's
parameter ``NAME`` (its id, claim and metric take ``{each}``); one with ``when: NAME`` (or ``when: not NAME``) is
made only by the runs whose parameter ``NAME`` is true (false). ``section`` is the MyST label written as
``(label)=`` above the heading of the section that shows the claim; the scoreboard links the claim there.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LEDGER_PATH = Path(__file__).with_name("claims.yaml")
KINDS = {
    "paper": "a claim of the paper",
    "exploratory": "the book's own question (shown, not counted as a claim of the paper)",
    "machinery": "a check of the book's own machinery",
}
FORMS = {
    "sufficient": "sufficient condition: success inside the region",
    "upper bound": "upper bound f ≤ C·g, C unknown",
    "lower bound": "lower bound f ≥ C·g (a guaranteed extent), C unknown",
    "order": "order Θ(g): two one-sided tests",
    "existence": "existence: some choice succeeds",
    "comparison": "comparison: one quantity beats another",
    "mechanism": "mechanism or structure of the trained model",
    "check": "a check of the book's own machinery or data",
}
FAMILIES = ("threshold", "comparison", "upper_bound", "lower_bound", "order")
SCALES = {
    "theory": "the paper's theory model, as constructed",
    "substitute": "a substitute at small scale (the pattern, not the paper's numbers)",
    "paper": "the paper's scale",
}
RESULTS = ("met", "not met", "inconclusive", "not tested")
PAPERS = {"ICLR 2025": "task vectors (Li et al., ICLR 2025)", "ICML 2024": "in-context learning (Li et al., ICML 2024)"}
_FIELDS = {"id", "chapter", "paper", "kind", "claim", "statement", "where", "form", "scale", "premises", "test",
           "preconditions", "section", "paper_value", "expect", "note", "for_each", "cause", "when"}  # fmt: skip
_TEST_FIELDS = {"family", "metric", "rule", "applies_to", "seeds", "held_out", "margin", "slope_margin", "fit",
                "floor", "exponent", "min_seeds"}  # fmt: skip
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One claim of the ledger, as written there (templates not yet expanded)."""

    id: str
    chapter: str
    kind: str
    claim: str
    form: str
    scale: str
    test: dict[str, Any]
    statement: str = ""
    where: str = ""
    paper: str = ""
    premises: tuple[str, ...] = ()
    preconditions: tuple[str, ...] = ()
    section: str = ""  # the MyST label of the section that shows it, ``(label)=`` above the heading
    paper_value: str = ""
    expect: dict[str, str | dict[str, str]] = field(default_factory=dict)  # per profile; per instance if it differs
    note: str = ""
    for_each: str = ""
    cause: str = ""  # the root cause, where the record expects a paper claim not to reproduce
    when: str = ""  # a parameter (or "not NAME") that decides whether the chapter run makes this claim


def evaluate(expression: Any, names: dict[str, Any]) -> float:
    """A rule's threshold: a number, or arithmetic over the chapter's parameters (``"eps_factor * epsilon"``)."""
    if isinstance(expression, (int, float)):
        return float(expression)

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"the rule names {node.id!r}, which is not a parameter of the chapter")
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"a rule's threshold is a number or arithmetic over parameters, not {expression!r}")

    return ev(ast.parse(str(expression), mode="eval").body)


LABEL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # a section's MyST label, ``(label)=`` above its heading


def _check(raw: dict, where: str) -> Entry:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    for name in ("id", "chapter", "kind", "claim", "form", "scale", "test"):
        if name not in raw:
            raise ValueError(f"{where}: the field {name!r} is missing")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where}: kind {raw['kind']!r} is not one of {list(KINDS)}")
    if raw.get("section") and not LABEL.fullmatch(str(raw["section"])):
        raise ValueError(f"{where}: section {raw['section']!r} is not a MyST label (lower case words joined by '-')")
    if raw["form"] not in FORMS:
        raise ValueError(f"{where}: form {raw['form']!r} is not one of {list(FORMS)}")
    if raw["scale"] not in SCALES:
        raise ValueError(f"{where}: scale {raw['scale']!r} is not one of {list(SCALES)}")
    test = dict(raw["test"])
    if set(test) - _TEST_FIELDS:
        raise ValueError(f"{where}: unknown test field(s) {sorted(set(test) - _TEST_FIELDS)}")
    if test.get("family") not in FAMILIES:
        raise ValueError(f"{where}: test family {test.get('family')!r} is not one of {list(FAMILIES)}")
    if "metric" not in test:
        raise ValueError(f"{where}: the test has no metric")
    if test["family"] in ("threshold", "comparison") and "rule" not in test:
        raise ValueError(f"{where}: a {test['family']} test needs a rule [comparison, threshold]")
    expect = dict(raw.get("expect") or {})
    bad = {p: r for p, r in expect.items()
           if (r not in RESULTS if not isinstance(r, dict) else any(x not in RESULTS for x in r.values()))}  # fmt: skip
    if bad:
        raise ValueError(f"{where}: expected outcomes must be one of {list(RESULTS)}, not {bad}")
    if raw["kind"] == "paper":
        for name in ("statement", "where", "paper"):
            if not raw.get(name):
                raise ValueError(f"{where}: a claim of the paper needs {name!r} (the source, quoted)")
        if raw["paper"] not in PAPERS:
            raise ValueError(f"{where}: paper {raw['paper']!r} is not one of {list(PAPERS)}")
        outcomes = [x for r in expect.values() for x in (r.values() if isinstance(r, dict) else [r])]
        if any(r != "met" for r in outcomes) and not raw.get("note"):
            raise ValueError(f"{where}: a claim expected not to reproduce needs a note with the evidence")
    return Entry(**{k: v for k, v in raw.items() if k not in ("premises", "preconditions", "test", "expect")},
                 premises=tuple(raw.get("premises") or ()), preconditions=tuple(raw.get("preconditions") or ()),
                 test=test, expect=expect)  # fmt: skip


@functools.lru_cache(maxsize=4)
def load(path: Path | str = LEDGER_PATH) -> tuple[Entry, ...]:
    """Every entry of the ledger, checked: known fields, forms, families, scales and outcomes; unique ids."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: the ledger is a list of claims")
    entries = tuple(_check(item, f"{path.name} entry {i} ({item.get('id', '?')})") for i, item in enumerate(raw))
    seen: set[tuple[str, str]] = set()
    for e in entries:
        if (e.chapter, e.id) in seen:
            raise ValueError(f"{path.name}: the id {e.id!r} appears twice in chapter {e.chapter}")
        seen.add((e.chapter, e.id))
    return entries


def chapter_entries(chapter: str, path: Path | str = LEDGER_PATH) -> list[Entry]:
    """The ledger's entries for one chapter, in the ledger's order."""
    return [e for e in load(path) if e.chapter == chapter]
