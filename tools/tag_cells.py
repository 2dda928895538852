#!/usr/bin/env python
"""Store in the notebooks which cells a reader sees: MyST-NB's cell tags, written once by this script.

    python tools/tag_cells.py            # tag (and split) the cells of every notebook in notebooks/
    python tools/tag_cells.py NB.ipynb   # only these
    python tools/tag_cells.py --check    # exit 1 and name the notebooks this script would change

Re-run it after adding or editing a notebook: it only adds what is missing (tags a person set stay), and a
second run changes nothing. ``make book`` renders the tags as they are stored (``tools/book_pages.py`` adds only
what depends on a run: papermill's injected cell, and the scoreboard's cells without a table, which it decides
from their outputs; the scoreboard, ``99_*``, is left to it). The rules:

1. the Colab set-up cell (tag ``colab``, or a cell testing ``"google.colab" in sys.modules``): ``remove-cell``,
   off Colab it does nothing and shows nothing;
2. the ``parameters`` cell: ``hide-input`` (collapsed, one click away);
3. a cell that only imports (``with warnings...:`` blocks holding only imports count): ``hide-input``; a cell
   that starts with imports and goes on is split in two, the imports becoming a cell of their own (id
   ``<id>-imports``, ``hide-input``), the rest staying visible — except a cell that declares a verdict
   (``Verdict(``), which is never touched;
4. a cell that only formats a table: ``hide-input``: it ends in an expression and calls nothing but the table
   methods of ``TABLE_CALLS`` (``.round``, ``.style``, ``.format``, ``.pivot_table``, ...).

Every other code cell (everything that computes a result) stays visible.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE_CALLS = {
    "round", "style", "format", "format_index", "hide", "set_uuid", "set_caption", "set_table_styles",
    "set_properties", "relabel_index", "map", "applymap", "pivot_table", "pivot", "unstack", "stack", "rename",
    "set_index", "reset_index", "sort_values", "sort_index", "infer_objects", "to_frame", "styled",
    "set_option", "isinstance", "str",
}  # fmt: skip
UNTOUCHED = "Verdict("  # a cell declaring a verdict is left exactly as it is


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def add_tag(cell: dict, tag: str) -> None:
    stored = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in stored:
        stored.append(tag)


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
    except SyntaxError:  # IPython magics
        return None


def is_table_formatting(source: str) -> bool:
    tree = _parse(source)
    if tree is None or not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False
    if not all(isinstance(s, ast.Assign | ast.Expr) for s in tree.body):
        return False
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = [c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", None) for c in calls]
    return bool(calls) and all(n in TABLE_CALLS for n in names)


def _lines(text: str) -> list[str]:
    """Notebook JSON stores a cell's source as lines that keep their newline (the last one without)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def split_imports(cell: dict) -> list[dict]:
    """[imports cell (hide-input), rest] where a cell starts with imports and goes on; an import-only cell is
    tagged hide-input; any other cell comes back as it is."""
    source = "".join(cell["source"])
    tree = _parse(source)
    if tree is None or not tree.body or not _is_import(tree.body[0]):
        return [cell]
    n = 0
    while n < len(tree.body) and _is_import(tree.body[n]):
        n += 1
    if n == len(tree.body):
        add_tag(cell, "hide-input")
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
        "source": _lines("".join(lines[:cut]).rstrip("\n")),
    }
    if "id" not in cell:
        del head["id"]
    rest = copy.deepcopy(cell)
    rest["source"] = _lines("".join(lines[cut:]).lstrip("\n"))
    return [head, rest]


def tagged(nb: dict, stem: str) -> dict:
    """A copy of ``nb`` with the reader's tags stored (see the module docstring); the scoreboard as it is."""
    nb = copy.deepcopy(nb)
    if stem.startswith("99_"):
        return nb
    cells = []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or UNTOUCHED in source:
            cells.append(cell)
        elif "colab" in tags(cell) or '"google.colab" in sys.modules' in source:
            add_tag(cell, "remove-cell")
            cells.append(cell)
        elif "parameters" in tags(cell):
            add_tag(cell, "hide-input")
            cells.append(cell)
        elif is_table_formatting(source):
            add_tag(cell, "hide-input")
            cells.append(cell)
        else:
            cells.extend(split_imports(cell))
    nb["cells"] = cells
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook would change")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    stale = []
    for path in paths:
        try:
            text = path.read_text()
            new = dumps(tagged(json.loads(text), path.stem))
        except (OSError, ValueError, KeyError) as exc:
            print(f"tag_cells: {path}: {exc}", file=sys.stderr)
            return 2
        if new == text:
            continue
        stale.append(path)
        if args.check:
            print(f"{path}: its cell tags are not stored; run python tools/tag_cells.py")
        else:
            path.write_text(new)
            print(f"{path}: cell tags stored")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
