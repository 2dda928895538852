#!/usr/bin/env python
"""Which parameter profiles each chapter offers, read from the profiles its notebook passes to ``resolve``.

    python tools/profiles.py            # one line per notebook of _toc.yml: its stem and its profiles

Every chapter has "default" (its DEFAULTS) and the keys of its PROFILES dict. The README's table of `full`
profiles and the stand-in tests (tests/test_full_profiles.py) read this, so neither can go stale.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import run_notebooks  # noqa: E402


def notebook_profiles(path: Path) -> list[str]:
    """["default", *the profile names] of a notebook: the keys of the dict its ``resolve(DEFAULTS, profile,
    PROFILES, overrides)`` call receives (a dict literal, or a name assigned one). An error if it cannot tell."""
    code = "\n".join(
        "".join(c["source"]) for c in json.loads(Path(path).read_text())["cells"] if c["cell_type"] == "code"
    )
    tree = ast.parse(code)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "resolve"]
    if len(calls) != 1 or len(calls[0].args) < 3:
        raise ValueError(f"{path}: expected one call resolve(DEFAULTS, profile, PROFILES, overrides)")
    table = calls[0].args[2]
    if isinstance(table, ast.Name):
        assigned = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == table.id for t in n.targets)
        ]
        table = assigned[0] if len(assigned) == 1 else None
    if not isinstance(table, ast.Dict) or not all(
        isinstance(k, ast.Constant) and isinstance(k.value, str) for k in table.keys
    ):
        raise ValueError(f"{path}: the profiles given to resolve() are not one dict literal with string keys")
    return ["default", *(k.value for k in table.keys)]


def assigned_dict(path: Path, name: str, namespace: dict | None = None) -> dict:
    """The dict a notebook assigns to ``name`` (``DEFAULTS``, ``PROFILES``): a dict literal, or the literal on the
    right of ``SHARED | {...}``, evaluated with ``namespace`` for the names it reads (``models.OFFLINE_MODEL``)."""
    code = "\n".join(
        "".join(c["source"]) for c in json.loads(Path(path).read_text())["cells"] if c["cell_type"] == "code"
    )
    found = [
        n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Assign)
        and any(getattr(t, "id", None) == name for t in n.targets)
    ]  # fmt: skip
    if len(found) != 1:
        raise ValueError(f"{path}: expected one assignment to {name}, found {len(found)}")
    value = found[0].right if isinstance(found[0], ast.BinOp) and isinstance(found[0].op, ast.BitOr) else found[0]
    if not isinstance(value, ast.Dict):
        raise ValueError(f"{path}: {name} is not a dict literal (or X | a dict literal)")
    return eval(compile(ast.Expression(value), str(path), "eval"), dict(namespace or {}))  # a literal of our own


def all_profiles(root: Path = ROOT) -> dict[str, list[str]]:
    """notebook stem → its profiles, for every notebook of _toc.yml."""
    return {p.stem: notebook_profiles(p) for p in run_notebooks.toc_notebooks(root)}


if __name__ == "__main__":
    for stem, names in all_profiles().items():
        print(f"{stem}: {', '.join(names)}")
