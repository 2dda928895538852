#!/usr/bin/env python
"""Execute every notebook in _toc.yml with papermill, in table-of-contents order, on one parameter profile.

    python tools/run_notebooks.py --profile ci --out _build/executed/ci [--jobs 2] [--only 01_task_addition]
    python tools/run_notebooks.py --profile default --out _build/source --copy-book --cache _build/exec-cache

Notebooks named 99_* (the scoreboard) run after all the others, because they read the others' verdicts.
With --jobs N, N notebooks execute at once, never two that write the same cache (tools/exec_cache.py says which).
With --cache DIR a notebook is executed only when something it depends on changed since its entry in DIR was
written (tools/exec_cache.py); otherwise its executed copy and verdict file are served from the entry. --force
executes everything and rewrites the entries.
With --copy-book the book's sources (_config.yml, _toc.yml, book/, _static/) are copied beside the executed
notebooks, and each executed copy shows a reader what tools/book_pages.py says (plumbing cells hidden, the
run's time and machine), so that ``jupyter-book build OUT`` renders them without executing anything again.
The commit the book is built from is recorded in the copies: in each notebook's Colab cell (which checks it
out in Colab) and metadata (``tvbook``), in each page's run note, as the launch buttons' branch in the copied
_config.yml (a launch button opens the notebook as it is at that commit), and in ``_static/build.json``.
Files whose content did not change are not rewritten, so that Sphinx re-reads only the pages that changed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import papermill as pm
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_pages  # noqa: E402
import exec_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIRS = ("book", "_static")


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


def build_record(root: Path) -> dict:
    """What the book is built from: ``commit`` (``git rev-parse HEAD``; None outside a git checkout), ``dirty``
    (the working tree differs from it) and the package ``version`` (pyproject.toml)."""
    import tomllib

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    pyproject = root / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"] if pyproject.is_file() else None
    return {"commit": commit, "dirty": bool(status), "version": version}


def config_at_commit(text: str, commit: str | None) -> str:
    """_config.yml's text with ``repository: branch:`` set to ``commit`` (the launch buttons open that commit)."""
    if not commit:
        return text
    new, n = re.subn(r"(?m)^(repository:\n(?:[ \t]+.*\n)*?[ \t]+branch:[ \t]*)\S+", rf"\g<1>{commit}", text, count=1)
    if n != 1:
        raise SystemExit("_config.yml has no 'repository: branch:' to set to the commit the book is built from")
    return new


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


def execute(nb: Path, target: Path, profile: str) -> tuple[float, str | None]:
    """Run one notebook with papermill into target; (seconds, None) or (seconds, the error)."""
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
        return time.time() - start, None
    except Exception as exc:  # report every failure, after all notebooks ran
        return time.time() - start, f"{type(exc).__name__}: {str(exc)[-3000:]}"


def write_if_changed(path: Path, data: bytes) -> None:
    """Write (atomically) only when the content differs, so that unchanged pages keep their time stamp."""
    if path.is_file() and path.read_bytes() == data:
        return
    from tvutils.chapter.paths import atomic_write_bytes

    atomic_write_bytes(path, data)


def notebook_bytes(nb: dict) -> bytes:
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


class Build:
    """One run over a list of notebooks: serve what the cache holds, execute the rest, write the copies."""

    def __init__(self, root, out_dir, profile, cache=None, force=False, copy_book=False, jobs=1, run=execute):
        self.root, self.out_dir, self.profile = root, out_dir, profile
        self.cache, self.force, self.copy_book, self.jobs, self.run = cache, force, copy_book, jobs, run
        self.verdicts = root / "_build" / "verdicts"
        self.env = exec_cache.environment() if cache else None
        self.machine = exec_cache.machine()
        self.status: dict[str, str] = {}  # stem -> "cached" | "ran" | "FAIL"
        self.built = build_record(root) if copy_book else None

    def parts(self, nb: Path) -> dict:
        params = {"profile": self.profile}
        return exec_cache.key_parts(nb, self.root, self.profile, params, self.env, self.verdicts)

    def serve(self, nb: Path) -> tuple[dict | None, str]:
        """The cache entry to serve for nb, or (None, why it must run)."""
        if not self.cache:
            return None, ""
        if self.force:
            return None, "FORCE"
        return exec_cache.load(exec_cache.entry_path(self.cache, self.profile, nb.stem), self.parts(nb))

    def finish(self, nb: Path, executed: dict, verdict: str | None, run: dict) -> None:
        """Put the verdict file in place and write the executed copy (with the reader's tags for the book)."""
        if verdict is not None:
            write_if_changed(self.verdicts / f"{nb.stem}.json", verdict.encode())
        if self.copy_book:
            when = run["date"][:10]
            note = book_pages.run_note(self.profile, run["wall_s"], run["machine"], when, run["jobs"], self.built)
            executed = book_pages.with_run_note(book_pages.reader_cells(executed, nb.stem), note)
            if self.built["commit"]:
                executed = book_pages.with_commit(executed, self.built["commit"])
                executed.setdefault("metadata", {})["tvbook"] = self.built
        write_if_changed(self.out_dir / nb.relative_to(self.root), notebook_bytes(executed))

    def execute_one(self, nb: Path) -> tuple[float, str | None]:
        parts = self.parts(nb) if self.cache else None  # before the run: the inputs it runs on
        (self.verdicts / f"{nb.stem}.json").unlink(missing_ok=True)  # a stale verdict
        target = self.out_dir / nb.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{nb.stem}.") as tmp:
            tmp_nb = Path(tmp) / nb.name
            secs, err = self.run(nb, tmp_nb, self.profile)
            if err is not None:
                if tmp_nb.is_file():
                    shutil.copyfile(tmp_nb, target)  # the failed run, to read
                return secs, err
            executed = json.loads(tmp_nb.read_text())
        if isinstance(executed.get("metadata", {}).get("papermill"), dict):  # where it lives, not the temporary
            executed["metadata"]["papermill"]["output_path"] = str(target)
        verdict_file = self.verdicts / f"{nb.stem}.json"
        verdict = verdict_file.read_text() if verdict_file.is_file() else None
        date = datetime.now(UTC).isoformat(timespec="seconds")
        run = {"wall_s": round(secs, 1), "machine": self.machine, "date": date, "jobs": self.jobs}
        if self.cache:
            path = exec_cache.entry_path(self.cache, self.profile, nb.stem)
            exec_cache.store(path, parts, executed, verdict, run)
        self.finish(nb, executed, verdict, run)
        return secs, None

    def report(self, nb: Path, how: str, secs: float, why: str = "") -> None:
        self.status[nb.stem] = how
        print(f"  {how:6s} {nb.name:40s} {secs:7.1f} s{'  (' + why + ')' if why else ''}", flush=True)

    def one(self, nb: Path) -> str | None:
        """Serve or execute one notebook; the error, if it failed."""
        entry, why = self.serve(nb)
        if entry is not None:
            self.finish(nb, entry["notebook"], entry["verdict"], entry["run"])
            self.report(nb, "cached", 0.0)
            return None
        secs, err = self.execute_one(nb)
        self.report(nb, "ran" if err is None else "FAIL", secs, why)
        return err

    def all(self, notebooks: list[Path]) -> list[tuple[Path, str]]:
        """Every notebook, jobs at a time (never two that write the same cache), the scoreboard last."""
        first = [nb for nb in notebooks if not nb.stem.startswith("99_")]
        last = [nb for nb in notebooks if nb.stem.startswith("99_")]
        failed = []
        to_run = []
        for nb in first:  # cached entries first: they cost nothing
            entry, why = self.serve(nb)
            if entry is None:
                to_run.append((nb, why))
                continue
            self.finish(nb, entry["notebook"], entry["verdict"], entry["run"])
            self.report(nb, "cached", 0.0)
        caches = {nb: exec_cache.writes_caches(nb, self.root) for nb, _ in to_run}
        running: dict[Future, tuple[Path, str]] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
            while to_run or running:
                busy = set().union(*(caches[nb] for nb, _ in running.values()))
                ready = [item for item in to_run if not caches[item[0]] & busy]
                if ready and len(running) < max(1, self.jobs):
                    item = ready[0]
                    to_run.remove(item)
                    running[pool.submit(self.execute_one, item[0])] = item
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    nb, why = running.pop(fut)
                    secs, err = fut.result()
                    self.report(nb, "ran" if err is None else "FAIL", secs, why)
                    if err:
                        failed.append((nb, err))
        for nb in last:
            err = self.one(nb)
            if err:
                failed.append((nb, err))
        return failed


def copy_book_sources(root: Path, out_dir: Path, built: dict | None = None) -> None:
    """The book's sources into out_dir; with ``built`` (build_record), _config.yml's launch buttons at its commit
    and the record in _static/build.json (read by the Colab cell of a notebook opened from the repository)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = built["commit"] if built else None
    for name in BOOK_FILES:
        text = (root / name).read_text()
        write_if_changed(out_dir / name, (config_at_commit(text, commit) if name == "_config.yml" else text).encode())
    for folder in BOOK_DIRS:
        for path in sorted((root / folder).rglob("*")) if (root / folder).is_dir() else []:
            if path.is_file():
                write_if_changed(out_dir / path.relative_to(root), path.read_bytes())
    if commit:
        write_if_changed(out_dir / "_static" / "build.json", (json.dumps(built, indent=1) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="parameter profile passed to every notebook")
    ap.add_argument("--out", required=True, type=Path, help="folder for the executed notebooks")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks executed at once")
    ap.add_argument("--only", nargs="*", default=None, help="notebook names (stems) to run, default all")
    ap.add_argument("--copy-book", action="store_true", help="copy _config.yml, _toc.yml, book/ to --out")
    ap.add_argument("--cache", type=Path, default=None, help="execution cache folder (default: none)")
    ap.add_argument("--force", action="store_true", help="execute every notebook even if its entry matches")
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # the tests' stand-in books
    args = ap.parse_args(argv)

    root = args.root.resolve()
    os.environ.setdefault("TVUTILS_ROOT", str(root))
    notebooks = toc_notebooks(root)
    if args.only:
        unknown = set(args.only) - {nb.stem for nb in notebooks}
        if unknown:
            raise SystemExit(f"--only names notebooks not in _toc.yml: {sorted(unknown)}")
        notebooks = [nb for nb in notebooks if nb.stem in args.only]
    out_dir = args.out if args.out.is_absolute() else root / args.out
    cache = None if args.cache is None else (args.cache if args.cache.is_absolute() else root / args.cache)
    t0 = time.time()
    print(f"{len(notebooks)} notebook(s), profile {args.profile!r}, {args.jobs} at a time", flush=True)
    build = Build(root, out_dir, args.profile, cache, args.force, args.copy_book, args.jobs)
    if args.copy_book:
        copy_book_sources(root, out_dir, build.built)
        print(
            f"built from commit {build.built['commit']}{' (with uncommitted changes)' if build.built['dirty'] else ''}"
        )
    failed = build.all(notebooks)
    for nb, err in failed:
        print(f"\n--- {nb.name} failed ---\n{err}", file=sys.stderr)
    ran = sum(s == "ran" for s in build.status.values())
    cached = sum(s == "cached" for s in build.status.values())
    print(f"{ran} executed, {cached} from the cache, {len(failed)} failed in {time.time() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
