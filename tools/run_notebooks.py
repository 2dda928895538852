#!/usr/bin/env python
"""Execute every notebook in _toc.yml with papermill, in table-of-contents order, on one parameter profile.

    python tools/run_notebooks.py --profile ci --out _build/executed/ci [--jobs 2] [--only 01_task_addition]
    python tools/run_notebooks.py --profile default --out _build/source --copy-book

Notebooks named 99_* (the scoreboard) run after all the others, because they read the others' verdicts.
With --copy-book the book's sources (_config.yml, _toc.yml, book/) are copied beside the executed notebooks,
so that ``jupyter-book build OUT`` renders them without executing anything again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import papermill as pm
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(toc_path: Path) -> list[str]:
    """Every 'file' entry of a Jupyter Book _toc.yml, in order (root first)."""
    toc = yaml.safe_load(toc_path.read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key, []))
    return files


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks the table of contents names (entries with an .ipynb file)."""
    out = []
    for entry in toc_files(root / "_toc.yml"):
        path = root / (entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if path.is_file():
            out.append(path)
        elif not (root / (entry + ".md")).is_file() and not (root / entry).is_file():
            raise SystemExit(f"_toc.yml names {entry!r}, which is neither a notebook nor a page")
    return out


def execute(nb: Path, out_dir: Path, profile: str) -> tuple[Path, float, str | None]:
    target = out_dir / nb.relative_to(ROOT)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    try:
        pm.execute_notebook(
            str(nb),
            str(target),
            parameters={"profile": profile},
            cwd=str(nb.parent),
            kernel_name="python3",
            language="python",
            progress_bar=False,
            log_output=False,
        )
        return nb, time.time() - start, None
    except Exception as exc:  # report every failure, after all notebooks ran
        return nb, time.time() - start, f"{type(exc).__name__}: {str(exc)[-3000:]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="parameter profile passed to every notebook")
    ap.add_argument("--out", required=True, type=Path, help="folder for the executed notebooks")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks executed at once")
    ap.add_argument("--only", nargs="*", default=None, help="notebook names (stems) to run, default all")
    ap.add_argument("--copy-book", action="store_true", help="copy _config.yml, _toc.yml and book/ to --out")
    args = ap.parse_args()

    os.environ.setdefault("TVUTILS_ROOT", str(ROOT))
    notebooks = toc_notebooks()
    if args.only:
        unknown = set(args.only) - {nb.stem for nb in notebooks}
        if unknown:
            raise SystemExit(f"--only names notebooks not in _toc.yml: {sorted(unknown)}")
        notebooks = [nb for nb in notebooks if nb.stem in args.only]
    out_dir = args.out if args.out.is_absolute() else ROOT / args.out
    if args.copy_book:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("_config.yml", "_toc.yml"):
            shutil.copy2(ROOT / name, out_dir / name)
        shutil.copytree(ROOT / "book", out_dir / "book", dirs_exist_ok=True)
    for nb in notebooks:  # stale verdicts of the notebooks about to run
        (ROOT / "_build" / "verdicts" / f"{nb.stem}.json").unlink(missing_ok=True)

    first = [nb for nb in notebooks if not nb.stem.startswith("99_")]
    last = [nb for nb in notebooks if nb.stem.startswith("99_")]
    results = []
    t0 = time.time()
    print(f"executing {len(notebooks)} notebook(s), profile {args.profile!r}, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for nb, secs, err in pool.map(lambda p: execute(p, out_dir, args.profile), first):
            print(f"  {'ok  ' if err is None else 'FAIL'} {nb.name:40s} {secs:7.1f} s", flush=True)
            results.append((nb, err))
    for nb in last:
        nb, secs, err = execute(nb, out_dir, args.profile)
        print(f"  {'ok  ' if err is None else 'FAIL'} {nb.name:40s} {secs:7.1f} s", flush=True)
        results.append((nb, err))
    failed = [(nb, err) for nb, err in results if err]
    for nb, err in failed:
        print(f"\n--- {nb.name} failed ---\n{err}", file=sys.stderr)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed in {time.time() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
