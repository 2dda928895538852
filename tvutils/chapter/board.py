"""The scoreboard: every chapter's verdict file as one table, the counts a reader wants first (the papers' claims
by status, by form and by scale; "not reproduced" grouped by root cause; "not tested here" apart), the figure
that shows all of it at a glance, and the claims ledger as a page (statement → form → test → result)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from .ledger import FORMS, LEDGER_PATH, SCALES, load
from .paths import build_dir

ORDER = ["reproduced", "inconclusive", "not tested here", "not reproduced"]  # the papers' claims, best first
OWN = ["holds", "inconclusive", "not tested here", "does not hold"]
COLOURS = {"reproduced": "#4c9a5b", "holds": "#4c9a5b", "inconclusive": "#e0b941", "not tested here": "#a7a7a7",
           "not reproduced": "#c8553d", "does not hold": "#c8553d"}  # fmt: skip
COLUMNS = ["notebook", "profile", "judged", "id", "ledger_id", "kind", "form", "scale", "paper", "claim", "statement",
           "where", "metric", "rule", "detail", "status", "expected", "paper_value", "anchor", "note", "cause"]  # fmt: skip


def load_verdicts(directory: Path | None = None, ledger: Path | str = LEDGER_PATH) -> pd.DataFrame:
    """Every verdict file in a folder as one table, one row per claim; a file of a chapter the ledger does not
    know (an old chapter number, say) is an error, not a silent extra row."""
    directory = Path(directory) if directory is not None else build_dir() / "verdicts"
    chapters = {e.chapter for e in load(ledger)}
    rows = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            if doc["notebook"] not in chapters:
                raise ValueError(
                    f"{path}: the verdict of {doc['notebook']!r}, which is not a chapter of this version of the book"
                    " (the chapters were renumbered to the reading order); delete the file"
                )
            claims = doc["claims"]
            for d in claims:
                missing = [k for k in ("id", "kind", "form", "status") if k not in d]
                if missing:
                    raise KeyError(f"fields {missing}")
                rows.append({"notebook": doc["notebook"], "profile": doc["profile"], "judged": doc.get("judged", True)}
                            | {k: d.get(k, "") for k in COLUMNS[3:]})  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a verdict file of this version of the book ({exc}); re-run its chapter"
            ) from None
    return pd.DataFrame(rows, columns=COLUMNS)


def with_links(board: pd.DataFrame) -> pd.DataFrame:
    """The board with its chapter and claim as HTML links to the chapter's page and the section that shows it."""
    out = board.copy()
    page = out["notebook"] + ".html"
    out["chapter"] = [f'<a href="{p}">{nb}</a>' for p, nb in zip(page, out["notebook"])]
    out["claim"] = [f'<a href="{p}#{a}">{c}</a>' if a else c for p, a, c in zip(page, out["anchor"], out["claim"])]
    return out


def tally(board: pd.DataFrame) -> dict[str, int]:
    """The headline counts: the papers' claims by status, the book's own questions and checks."""
    paper, own = board[board["kind"] == "paper"], board[board["kind"] != "paper"]
    counts = {"chapters": int(board["notebook"].nunique()), "paper claims": len(paper)}
    counts |= {s: int((paper["status"] == s).sum()) for s in ORDER}
    counts |= {"book's own": len(own), "book's own holding": int((own["status"] == "holds").sum()),
               "differing from the record": int((board["status"] != board["expected"]).sum())}  # fmt: skip
    return counts


def by(board: pd.DataFrame, column: str) -> pd.DataFrame:
    """The papers' claims counted by ``column`` (form or scale) × status."""
    paper = board[board["kind"] == "paper"]
    table = pd.crosstab(paper[column], paper["status"]).reindex(columns=ORDER, fill_value=0)
    labels = FORMS if column == "form" else SCALES
    table.index = [f"{k}: {labels.get(k, k)}" if column == "scale" else k for k in table.index]
    table["total"] = table.sum(axis=1)
    return table


def by_cause(board: pd.DataFrame) -> pd.DataFrame:
    """The papers' claims not reproduced or not tested here, one row per root cause (one cause counted once)."""
    paper = board[(board["kind"] == "paper") & board["status"].isin(["not reproduced", "not tested here"])]
    if paper.empty:
        return pd.DataFrame(columns=["status", "cause", "claims", "chapters"])
    rows = []
    for (status, cause), group in paper.groupby(["status", paper["cause"].replace("", "(no cause recorded)")]):
        rows.append({"status": status, "cause": cause, "claims": "; ".join(group["claim"]),
                     "chapters": ", ".join(sorted(set(group["notebook"])))})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["status", "chapters"], kind="stable")


def glance(board: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Figure:
    """One square per claim of the papers, chapters down, forms across, coloured by status."""
    paper = board[board["kind"] == "paper"]
    chapters = list(dict.fromkeys(paper["notebook"]))
    forms = [f for f in FORMS if f in set(paper["form"])]
    width = max(1, int(paper.groupby(["notebook", "form"]).size().max()))
    codes = np.full((len(chapters), len(forms) * (width + 1)), np.nan)
    for i, nb in enumerate(chapters):
        for j, form in enumerate(forms):
            statuses = paper[(paper["notebook"] == nb) & (paper["form"] == form)]["status"]
            for k, s in enumerate(sorted(statuses, key=ORDER.index)):
                codes[i, j * (width + 1) + k] = ORDER.index(s)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(11, 3.5 + 0.17 * codes.shape[1]), 1.4 + 0.3 * len(chapters)))
    ax.imshow(np.ma.masked_invalid(codes), cmap=ListedColormap([COLOURS[s] for s in ORDER]), vmin=-0.5,
              vmax=len(ORDER) - 0.5, aspect="equal")  # fmt: skip
    ax.set_yticks(range(len(chapters)), chapters, fontsize=9)
    ax.set_xticks([j * (width + 1) + (width - 1) / 2 for j in range(len(forms))], forms, rotation=20, ha="right",
                  fontsize=9)  # fmt: skip
    ax.tick_params(which="both", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks(np.arange(-0.5, codes.shape[1], 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(chapters), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    counts = paper["status"].value_counts()
    ax.legend(handles=[Patch(color=COLOURS[s], label=f"{s} ({counts.get(s, 0)})") for s in ORDER],
              loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)  # fmt: skip
    ax.set_title("The papers' claims: one square each, by chapter and logical form", fontsize=10)
    return ax.figure


def ledger_table(board: pd.DataFrame) -> pd.DataFrame:
    """The ledger as a page: statement → form → premises → test → result, for every entry, linked to its chapter."""
    linked = with_links(board).drop_duplicates("id", keep="first").set_index(["notebook", "ledger_id"])
    rows = []
    for e in load():
        key = (e.chapter, e.id)
        found = linked.loc[[key]] if key in linked.index else None
        result = "; ".join(f"{s}" for s in found["status"]) if found is not None else "not run on this profile"
        where = found["chapter"].iloc[0] if found is not None else e.chapter
        claim = found["claim"].iloc[0] if found is not None and len(found) == 1 else e.claim  # linked to its section
        rows.append({"chapter": where, "kind": e.kind, "claim": claim,
                     "statement (source)": f"“{e.statement}” ({e.where})" if e.statement else "—",
                     "form": e.form, "scale": e.scale, "premises": "; ".join(e.premises) or "—",
                     "test": f"{e.test['metric']} — {found['rule'].iloc[0] if found is not None else e.test['family']}"
                     + (f"; held out: {e.test['held_out']}" if e.test.get("held_out") else ""),
                     "preconditions": ", ".join(e.preconditions) or "—", "result": result})  # fmt: skip
    return pd.DataFrame(rows)
