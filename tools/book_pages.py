"""What the book's copy of an executed notebook shows a reader, beyond the tags stored in the notebook.

Which cells a reader sees is stored in the notebooks, as MyST-NB's cell tags (``remove-cell``, ``hide-input``,
``remove-input``), written by ``tools/tag_cells.py``. Applied by ``tools/run_notebooks.py --copy-book`` to the
executed copies only, this module adds what depends on the run:

1. papermill's injected parameters cell (tag ``injected-parameters``) is removed (``remove-cell``);
2. in the scoreboard (``99_*``) every code cell's input is removed (``remove-input``), and a cell that displays
   no table or figure (only printed text, such as its CI checks) is removed whole: tables and prose only;
3. a note after the title says how long the run took, on what machine, and from which commit the book was built;
4. the Colab cell's ``COMMIT = None`` is set to that commit (``with_commit``).
"""

from __future__ import annotations

import copy
import json

COMMIT_LINE = "COMMIT = None"  # the line of the Colab cell (tools/colab_cell.py) that with_commit fills in


def _tag(cell: dict, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def reader_cells(nb: dict, stem: str) -> dict:
    """A copy of an executed notebook with the run's own cells tagged (see the module docstring)."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            _tag(cell, "remove-cell")
        elif stem.startswith("99_"):
            shown = any(o.get("output_type") in ("execute_result", "display_data") for o in cell.get("outputs", []))
            _tag(cell, "remove-input" if shown else "remove-cell")
    return nb


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def run_note(profile: str, wall_s: float, machine: str, when: str, jobs: int, built: dict | None = None) -> str:
    """The note after a page's title: how long its run took and where; ``built``: what the book was built from
    (``{"commit", "dirty", "version"}``, see tools/run_notebooks.py's build_record)."""
    beside = f", beside {jobs - 1} other chapter(s) executing at the same time" if jobs > 1 else ""
    source = ""
    if built and built.get("commit"):
        changed = " with uncommitted changes" if built.get("dirty") else ""
        source = f" Built from commit `{built['commit'][:12]}`{changed} (tvutils {built['version']})."
    return (
        f"```{{note}}\nThis page was executed with the `{profile}` profile on {when} in {duration(wall_s)}, "
        f"on {machine}{beside}.{source}\n```"
    )


def with_commit(nb: dict, commit: str) -> dict:
    """A copy of ``nb`` whose Colab cell (tag ``colab``) checks out ``commit``: its ``COMMIT = None`` line filled in."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "colab" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            if COMMIT_LINE not in source:
                raise ValueError(f"the Colab cell has no line {COMMIT_LINE!r}: run tools/colab_cell.py --write")
            cell["source"] = source.replace(COMMIT_LINE, f"COMMIT = {json.dumps(commit)}", 1)
    return nb


def with_run_note(nb: dict, note: str) -> dict:
    """The notebook with a markdown cell holding ``note`` after its first markdown cell (the title)."""
    nb = copy.deepcopy(nb)
    cell = {"cell_type": "markdown", "id": "book-run-note", "metadata": {"tags": ["book-run-note"]}, "source": note}
    first = next((i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"), -1)
    nb["cells"].insert(first + 1, cell)
    return nb
