#!/usr/bin/env python
"""How long `make book` takes when little or nothing changed (the execution cache of tools/exec_cache.py).

    nice -n 10 .venv/bin/python benchmarks/bench_book.py [--profile default] [--chapter 01_task_addition]
        [--workdir /tmp/bench_book] [--jobs 2]

Works in a copy of the repository (its tracked and untracked, not ignored files) at --workdir, with the
repository's _cache linked in, and runs the book recipe of the Makefile there (run_notebooks.py with the
execution cache, jupyter-book build, the two page checks) three times:

1. as found: from a fresh copy every notebook executes (a cold build with warm data caches); a kept --workdir
   serves what its cache holds;
2. nothing changed: target ≤ 60 s, the render included;
3. one sentence appended to the last markdown cell of --chapter: target ≤ that chapter's own run + 60 s (its
   run is the wall time its cache entry records).

Prints each step's time and exit status and a table row for benchmarks/README.md. The page checks' exit status
is reported, not required: the timing holds whatever they find.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def copy_repo(dest: Path) -> None:
    """The repository's tracked and untracked, not ignored files, and a link to its _cache."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file() and not src.is_symlink():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    (dest / "_cache").symlink_to(ROOT / "_cache")


def book_steps(work: Path, profile: str, jobs: int) -> list[tuple[str, list[str]]]:
    """The Makefile's `book` recipe (without its set-up), run in work."""
    jb = str(Path(PY).with_name("jupyter-book"))
    return [
        ("execute", [PY, "tools/run_notebooks.py", "--profile", profile, "--out", "_build/source", "--jobs",
                     str(jobs), "--copy-book", "--cache", "_build/exec-cache"]),
        ("render", [jb, "build", "_build/source", "--path-output", str(work), "--warningiserror", "--keep-going"]),
        ("offline", [PY, "tools/check_offline_html.py", "_build/html"]),
        ("pages", [PY, "tools/check_pages.py", "_build/html", "_build/source/notebooks"]),
    ]  # fmt: skip


def build(work: Path, profile: str, jobs: int, log: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(work), "TVUTILS_ROOT": str(work), "TVUTILS_PROGRESS": "0"}
    env |= {"OMP_WAIT_POLICY": "PASSIVE", "PYDEVD_DISABLE_FILE_VALIDATION": "1", "HF_HUB_OFFLINE": "1"}
    env |= {"TRANSFORMERS_OFFLINE": "1"}
    times, codes, total = {}, {}, time.perf_counter()
    offset = log.stat().st_size if log.is_file() else 0
    with open(log, "a") as fh:
        for name, cmd in book_steps(work, profile, jobs):
            start = time.perf_counter()
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            codes[name] = subprocess.run(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
            times[name] = time.perf_counter() - start
    with open(log) as fh:
        fh.seek(offset)
        executed = [line.split()[1] for line in fh.read().splitlines() if line.startswith("  ran ")]
    return {"total": time.perf_counter() - total, "times": times, "codes": codes, "executed": executed}


def edit_markdown(nb_path: Path) -> None:
    nb = json.loads(nb_path.read_text())
    cell = [c for c in nb["cells"] if c["cell_type"] == "markdown"][-1]
    text = "".join(cell["source"]).rstrip("\n")
    cell["source"] = text + f"\n\n(Edited by benchmarks/bench_book.py at {datetime.now(UTC):%H:%M:%S}.)\n"
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--chapter", default="01_task_addition", help="the notebook whose markdown is edited")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_book"))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    work = args.workdir.resolve()
    if not (work / "_toc.yml").is_file():
        work.mkdir(parents=True, exist_ok=True)
        copy_repo(work)
    log = work / "bench_book.log"
    load = os.getloadavg()[0]
    print(f"workdir {work}, profile {args.profile!r}, jobs {args.jobs}, load average {load:.1f}; log: {log}")
    rows = []
    for step in ("as found", "nothing changed", f"markdown of {args.chapter} edited"):
        if step.startswith("markdown"):
            edit_markdown(work / "notebooks" / f"{args.chapter}.ipynb")
        r = build(work, args.profile, args.jobs, log)
        parts = ", ".join(f"{k} {v:.1f} s (rc {r['codes'][k]})" for k, v in r["times"].items())
        print(f"{step:32s} {r['total']:7.1f} s  executed {r['executed'] or 'nothing'}; {parts}", flush=True)
        rows.append((step, r))
    entry = json.loads((work / "_build" / "exec-cache" / args.profile / f"{args.chapter}.json").read_text())
    chapter_run = entry["run"]["wall_s"]
    nothing, edited = rows[1][1]["total"], rows[2][1]["total"]
    print(f"\n{args.chapter} ran {chapter_run:.1f} s; load average now {os.getloadavg()[0]:.1f}")
    ok1, ok2 = nothing <= 60, edited <= chapter_run + 60
    print(f"nothing changed: {nothing:.1f} s (target ≤ 60 s) {'✔' if ok1 else '✘'}")
    print(f"one chapter's markdown edited: {edited:.1f} s (target ≤ {chapter_run:.1f} + 60 s) {'✔' if ok2 else '✘'}")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
