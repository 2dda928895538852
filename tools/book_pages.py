"""What the book's copy of an executed notebook shows a reader: plumbing cells hidden by tags, the run's time.

Applied by ``tools/run_notebooks.py --copy-book`` to the executed copies only (the notebooks in git are not
touched). The rules, in order:

1. papermill's injected parameters cell (tag ``injected-parameters``) and the Colab set-up cell (tag ``colab``,
   or a cell that tests ``"google.colab" in sys.modules``) are removed (``remove-cell``): off Colab they do
   nothing and show nothing;
2. the ``parameters`` cell is collapsed (``hide-input``);
3. a cell that starts with imports is split in two: the imports (with ``with warnings...:`` blocks holding only
   imports) become a cell of their own, collapsed (``hide-input``); the rest stays visible with the outputs;
4. a table-formatting cell is collapsed (``hide-input``): a cell that ends in an expression and calls nothing
   but the table methods of ``TABLE_CALLS`` (``.round``, ``.style``, ``.format``, ``.pivot_table``, ...), so
   it only reshapes or formats a table computed before;
5. in the scoreboard (``99_*``) every code cell's input is removed (``remove-input``), and a cell that displays
   no table or figure (only printed text, such as its CI checks) is removed whole: tables and prose only.

Every other code cell (everything that computes a result) stays visible. A note after the title says how long
the run took and on what machine.
"""

from __future__ import annotations

import ast
import copy
import json

TABLE_CALLS = {
    "round", "style", "format", "format_index", "hide", "set_uuid", "set_caption", "set_table_styles",
    "set_properties", "relabel_index", "map", "applymap", "pivot_table", "pivot", "unstack", "stack", "rename",
    "set_index", "reset_index", "sort_values", "sort_index", "infer_objects", "to_frame", "styled",
    "set_option", "isinstance", "str",
}  # fmt: skip


COMMIT_LINE = "COMMIT = None"  # the line of the Colab cell (tools/colab_cell.py) that with_commit fills in


def _tags(cell: dict) -> list[str]:
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def _tag(cell: dict, tag: str) -> None:
    if tag not in _tags(cell):
        _tags(cell).append(tag)


def _is_import(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return True
    if isinstance(stmt, ast.With):
        return all(_is_import(s) or _is_warnings_call(s) for s in stmt.body)
    return False


def _is_warnings_call(stmt: ast.stmt) -> bool:
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    func = call.func if isinstance(call, ast.Call) else None
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "warnings"


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def _is_table_formatting(tree: ast.Module) -> bool:
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False
    if not all(isinstance(s, ast.Assign | ast.Expr) for s in tree.body):
        return False
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = [c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", None) for c in calls]
    return bool(calls) and all(n in TABLE_CALLS for n in names)


def _split_imports(cell: dict) -> list[dict]:
    """[imports cell, rest] where a cell starts with imports and goes on, else [cell]."""
    source = "".join(cell["source"])
    tree = _parse(source)
    if tree is None or not tree.body or not _is_import(tree.body[0]):
        return [cell]
    n = 0
    while n < len(tree.body) and _is_import(tree.body[n]):
        n += 1
    if n == len(tree.body):
        _tag(cell, "hide-input")
        return [cell]
    lines = source.splitlines(keepends=True)
    cut = tree.body[n].lineno - 1
    while cut > 0 and (not lines[cut - 1].strip() or lines[cut - 1].lstrip().startswith("#")):
        cut -= 1  # comments and blank lines before the first statement stay with it
    head = {
        "cell_type": "code",
        "execution_count": None,
        "id": f"{cell.get('id', 'cell')}-imports",
        "metadata": {"tags": ["hide-input"]},
        "outputs": [],
        "source": "".join(lines[:cut]).rstrip("\n"),
    }
    rest = copy.deepcopy(cell)
    rest["source"] = "".join(lines[cut:]).lstrip("\n")
    return [head, rest]


def reader_cells(nb: dict, stem: str) -> dict:
    """A copy of an executed notebook with the plumbing cells tagged (see the module docstring)."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            cells.append(cell)
            continue
        source = "".join(cell["source"])
        tags = _tags(cell)
        if stem.startswith("99_"):
            shown = any(o.get("output_type") in ("execute_result", "display_data") for o in cell.get("outputs", []))
            _tag(cell, "remove-input" if shown else "remove-cell")
            cells.append(cell)
        elif "injected-parameters" in tags or "colab" in tags or '"google.colab" in sys.modules' in source:
            _tag(cell, "remove-cell")
            cells.append(cell)
        elif "parameters" in tags:
            _tag(cell, "hide-input")
            cells.append(cell)
        else:
            tree = _parse(source)
            if tree is not None and _is_table_formatting(tree):
                _tag(cell, "hide-input")
            cells.extend(_split_imports(cell))
    nb["cells"] = cells
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
