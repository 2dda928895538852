#!/usr/bin/env python
"""Print pip constraints that pin packages at the lower bound pyproject.toml declares for them.

    python tools/lowest_constraints.py transformers accelerate peft gguf > lowest.txt
    pip install -c constraints.txt -c lowest.txt -e '.[case-studies,test]'

``make test-lowest`` runs the case studies' unit tests in such an environment, so that the lower bounds are the
versions actually tested. A named package must appear in pyproject.toml with exactly one ``>=`` bound.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Every requirement string of the project, its extras included."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bound(name: str, reqs: list[str]) -> str:
    """The version in ``name>=X`` (one requirement naming the package, one ``>=`` clause)."""
    found = [r for r in reqs if canonical(re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0]) == canonical(name)]
    if len(found) != 1:
        raise SystemExit(f"lowest_constraints: {name} appears {len(found)} times in pyproject.toml (need once)")
    bounds = re.findall(r">=\s*([0-9][0-9A-Za-z.]*)", found[0])
    if len(bounds) != 1:
        raise SystemExit(f"lowest_constraints: {found[0]!r} has no single '>=' lower bound")
    return bounds[0]


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: lowest_constraints.py PACKAGE...")
    reqs = requirements()
    for name in argv:
        print(f"{name}=={lower_bound(name, reqs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
