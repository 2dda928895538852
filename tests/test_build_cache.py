"""The execution cache of `make book` (tools/run_notebooks.py, tools/exec_cache.py) on tiny stand-in books.

Most tests replace papermill by a stand-in executor that records which notebooks ran, so they take well under
a second; one test executes real notebooks with papermill.
"""

import json
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import exec_cache  # noqa: E402
import run_notebooks  # noqa: E402

TOC = """format: jb-book
root: intro
chapters:
  - file: notebooks/a
  - file: notebooks/b
  - file: notebooks/c
  - file: notebooks/99_board
"""


def notebook(*cells):
    """cells: ("md", text) or ("code", text)."""
    return {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": text, "id": f"c{i}"}
            if kind == "md"
            else {
                "cell_type": "code",
                "metadata": {},
                "source": text,
                "outputs": [],
                "execution_count": None,
                "id": f"c{i}",
            }
            for i, (kind, text) in enumerate(cells)
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_nb(path, *cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook(*cells), indent=1) + "\n")


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A stand-in book: three chapters over a small package `tvutils` and a scoreboard."""
    root = tmp_path / "book"
    (root / "tvutils" / "sub").mkdir(parents=True)
    (root / "_toc.yml").write_text(TOC)
    (root / "intro.md").write_text("# intro\n")
    (root / "tvutils" / "__init__.py").write_text("")
    (root / "tvutils" / "base.py").write_text("X = 1\n")
    (root / "tvutils" / "sub" / "__init__.py").write_text("")
    (root / "tvutils" / "sub" / "alpha.py").write_text("from ..base import X\n")
    (root / "tvutils" / "beta.py").write_text("def f():\n    import tvutils.gamma\n")
    (root / "tvutils" / "gamma.py").write_text("Y = 2\n")
    (root / "tvutils" / "unused.py").write_text("Z = 3\n")
    write_nb(root / "notebooks" / "a.ipynb", ("md", "# A"), ("code", "from tvutils.sub import alpha"))
    write_nb(root / "notebooks" / "b.ipynb", ("md", "# B"), ("code", "import tvutils.beta as b\n%time 1"))
    write_nb(root / "notebooks" / "c.ipynb", ("md", "# C"), ("code", "import numpy"))
    write_nb(root / "notebooks" / "99_board.ipynb", ("md", "# Board"), ("code", "board = 1"))
    monkeypatch.setenv("TVUTILS_ROOT", str(root))
    monkeypatch.delenv("TVUTILS_CACHE", raising=False)
    return root


class StandIn:
    """Executes nothing: copies the notebook with one output per code cell and writes a verdict from its code."""

    def __init__(self, root, delay=0.0):
        self.root, self.delay, self.ran, self.lock = root, delay, [], threading.Lock()
        self.active, self.overlaps = set(), []

    def __call__(self, nb, target, profile):
        with self.lock:
            self.overlaps += [(nb.stem, other) for other in self.active]
            self.active.add(nb.stem)
            self.ran.append(nb.stem)
        time.sleep(self.delay)
        doc = json.loads(nb.read_text())
        for cell in doc["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
        target.write_text(json.dumps(doc))
        if not nb.stem.startswith("99_"):
            verdicts = self.root / "_build" / "verdicts"
            verdicts.mkdir(parents=True, exist_ok=True)
            (verdicts / f"{nb.stem}.json").write_text(json.dumps({"code": exec_cache.code_of_notebook(doc)}))
        with self.lock:
            self.active.discard(nb.stem)
        return 0.01, None


def build(root, force=False, jobs=1, copy_book=True, delay=0.0):
    runner = StandIn(root, delay)
    b = run_notebooks.Build(
        root, root / "_build" / "source", "default", root / "_build" / "exec-cache", force, copy_book, jobs, runner
    )
    failed = b.all(run_notebooks.toc_notebooks(root))
    assert not failed
    return sorted(runner.ran)


def test_a_first_build_runs_everything_and_a_second_nothing(book):
    assert build(book) == ["99_board", "a", "b", "c"]
    assert build(book) == []
    out = json.loads((book / "_build" / "source" / "notebooks" / "a.ipynb").read_text())
    assert any(c["cell_type"] == "code" and c["outputs"] for c in out["cells"]), "served with its outputs"
    assert (book / "_build" / "verdicts" / "a.json").is_file()


def test_editing_a_notebook_runs_it_and_the_scoreboard_only(book):
    build(book)
    write_nb(book / "notebooks" / "c.ipynb", ("md", "# C"), ("code", "import numpy as np"))
    assert build(book) == ["99_board", "c"]


def test_a_markdown_edit_that_leaves_the_verdict_alone_does_not_rerun_the_scoreboard(book):
    build(book)
    write_nb(book / "notebooks" / "c.ipynb", ("md", "# C, retitled"), ("code", "import numpy"))
    assert build(book) == ["c"]


def test_touching_a_module_runs_its_dependents_only(book):
    build(book)
    (book / "tvutils" / "gamma.py").write_text("Y = 3\n")  # imported inside a function of beta: b only
    assert build(book) == ["b"]
    (book / "tvutils" / "base.py").write_text("X = 2\n")  # imported relatively by sub.alpha: a only
    assert build(book) == ["a"]
    (book / "tvutils" / "sub" / "__init__.py").write_text("# the package above alpha\n")
    assert build(book) == ["a"]
    (book / "tvutils" / "unused.py").write_text("Z = 4\n")  # nobody imports it
    assert build(book) == []
    (book / "tvutils" / "sub" / "table.json").write_text("{}")  # a file beside a package that a imports
    assert build(book) == ["a"]


def test_a_changed_verdict_reruns_the_scoreboard(book):
    build(book)
    (book / "_build" / "verdicts" / "zz_other.json").write_text("{}")
    assert build(book) == ["99_board"]


def test_force_runs_everything(book):
    build(book)
    assert build(book, force=True) == ["99_board", "a", "b", "c"]


@pytest.mark.parametrize("damage", ["edit", "truncate", "version", "garbage"])
def test_a_damaged_entry_is_never_served(book, damage):
    build(book)
    path = exec_cache.entry_path(book / "_build" / "exec-cache", "default", "a")
    entry = json.loads(path.read_text())
    if damage == "edit":  # hand-edited: a changed output, the digest no longer matches
        entry["notebook"]["cells"][1]["outputs"][0]["text"] = "forged\n"
        path.write_text(json.dumps(entry))
    elif damage == "truncate":  # half written
        path.write_text(path.read_text()[:100])
    elif damage == "version":  # another version's entry, self-consistent
        entry["format"] = "tvutils-exec-cache/0"
        entry["digest"] = exec_cache._digest(entry)
        path.write_text(json.dumps(entry))
    else:
        path.write_bytes(b"\xff\xfe")
    assert build(book) == ["a"]
    out = json.loads((book / "_build" / "source" / "notebooks" / "a.ipynb").read_text())
    assert "forged" not in json.dumps(out)


def test_profile_environment_and_data_are_part_of_the_key(book, monkeypatch):
    nb = book / "notebooks" / "a.ipynb"
    env = exec_cache.environment()
    verdicts = book / "_build" / "verdicts"
    parts = exec_cache.key_parts(nb, book, "default", {"profile": "default"}, env, verdicts)
    assert exec_cache.key_of(parts) != exec_cache.key_of(
        exec_cache.key_parts(nb, book, "ci", {"profile": "ci"}, env, verdicts)
    )
    monkeypatch.setenv("TVUTILS_PROGRESS", "1")
    other = exec_cache.environment()
    assert exec_cache.changed(parts, exec_cache.key_parts(nb, book, "default", {"profile": "default"}, other, verdicts))
    assert sorted(parts["modules"]) == ["tvutils/__init__.py", "tvutils/base.py", "tvutils/sub/__init__.py",
                                        "tvutils/sub/alpha.py"]  # fmt: skip
    # a module that reads a data cache (by cache_dir or the registry's locate): the data's listing and the
    # registry join the key
    (book / "tvutils" / "base.py").write_text(
        'from .paths import cache_dir\nD = cache_dir("data", "digits")\nE = locate("texts")\n'
    )
    data = book / "_cache" / "data" / "digits"
    data.mkdir(parents=True)
    (data / "x.bin").write_bytes(b"12")
    before = exec_cache.key_parts(nb, book, "default", {}, env, verdicts)
    assert set(before["data"]["folders"]) == {"digits", "texts"} and before["data"]["registry"] == "missing"
    (data / "x.bin").write_bytes(b"123")
    assert exec_cache.changed(before, exec_cache.key_parts(nb, book, "default", {}, env, verdicts)) == ["data"]
    (book / exec_cache.DATA_REGISTRY).parent.mkdir(parents=True, exist_ok=True)
    (book / exec_cache.DATA_REGISTRY).write_text("REGISTRY = {}\n")
    after = exec_cache.key_parts(nb, book, "default", {}, env, verdicts)
    assert after["data"]["registry"] != "missing"


def test_notebooks_that_write_the_same_cache_never_run_at_once(book):
    (book / "tvutils" / "gamma.py").write_text('from .paths import cache_dir\nM = cache_dir("models")\n')
    (book / "tvutils" / "base.py").write_text(
        'from .paths import cache_dir\nM = cache_dir("models", "x")\nD = cache_dir("downloads")\nE = cache_dir("data", "y")\n'
    )
    assert exec_cache.writes_caches(book / "notebooks" / "a.ipynb", book) == {"models"}
    runner_ran = build(book, jobs=2, delay=0.2)
    assert runner_ran == ["99_board", "a", "b", "c"]


def test_jobs_two_overlaps_only_notebooks_without_a_shared_cache(book):
    (book / "tvutils" / "gamma.py").write_text('from .paths import cache_dir\nM = cache_dir("models")\n')
    (book / "tvutils" / "base.py").write_text('from .paths import cache_dir\nM = cache_dir("models", "x")\n')
    runner = StandIn(book, delay=0.3)
    b = run_notebooks.Build(book, book / "out", "default", book / "cache", False, False, 2, runner)
    assert not b.all(run_notebooks.toc_notebooks(book))
    pairs = {frozenset(p) for p in runner.overlaps}
    assert frozenset({"a", "b"}) not in pairs, "a and b both write the 'models' cache"
    assert pairs & {frozenset({"a", "c"}), frozenset({"b", "c"})}, "c shares no cache: it runs beside another"
    assert not any("99_board" in p for p in pairs), "the scoreboard runs alone, last"


def test_unchanged_copies_are_not_rewritten(book):
    build(book)
    out = book / "_build" / "source" / "notebooks" / "a.ipynb"
    stamp = out.stat().st_mtime_ns
    time.sleep(0.01)
    build(book)
    assert out.stat().st_mtime_ns == stamp, "an unchanged page keeps its time stamp (Sphinx re-reads it otherwise)"


def test_the_book_copy_says_how_long_the_run_took(book):
    build(book)
    out = json.loads((book / "_build" / "source" / "notebooks" / "a.ipynb").read_text())
    assert (
        out["cells"][1]["cell_type"] == "markdown"
        and "executed with the `default` profile" in out["cells"][1]["source"]
    )
    assert exec_cache.machine() in out["cells"][1]["source"]


def test_real_notebooks_with_papermill(book, tmp_path):
    """End to end with papermill and a kernel: executed once, then served; FORCE executes again."""
    for stem in ("a", "b", "99_board"):
        (book / "notebooks" / f"{stem}.ipynb").unlink()
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/c\n")
    nb = notebook(("md", "# C"), ("code", 'profile = "default"\noverrides = {}'), ("code", "print(6 * 7)"))
    nb["cells"][1]["metadata"]["tags"] = ["parameters"]
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (book / "notebooks" / "c.ipynb").write_text(json.dumps(nb))
    args = ["--root", str(book), "--profile", "ci", "--out", "_build/source", "--cache", "_build/exec-cache"]
    assert run_notebooks.main(args) == 0
    out = book / "_build" / "source" / "notebooks" / "c.ipynb"
    executed = json.loads(out.read_text())
    assert "".join(executed["cells"][-1]["outputs"][0]["text"]) == "42\n"
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert executed["metadata"]["papermill"]["output_path"] == str(out)
    entry = exec_cache.entry_path(book / "_build" / "exec-cache", "ci", "c")
    stamp = entry.stat().st_mtime_ns
    assert run_notebooks.main(args) == 0
    assert entry.stat().st_mtime_ns == stamp, "nothing changed: served, not executed"
    assert run_notebooks.main([*args, "--force"]) == 0
    assert entry.stat().st_mtime_ns != stamp


def test_the_benchmark_runs_the_makefiles_book_recipe():
    """benchmarks/bench_book.py times the same commands as `make book` (without its set-up)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_book

    recipe = (ROOT / "Makefile").read_text().split("\nbook:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    for name, cmd in bench_book.book_steps(ROOT, "default", 2):
        script = next(c for c in cmd if c.startswith("tools/") or c.endswith("jupyter-book"))
        flags = " ".join("$(CURDIR)" if c == str(ROOT) else c for c in cmd[cmd.index(script) + 1 :])
        flags = flags.replace("--jobs 2", "--jobs $(JOBS)")
        assert Path(script).name in recipe and " ".join(recipe.split()).count(flags), (name, flags)


def test_without_a_cache_everything_runs_every_time(book):
    for _ in range(2):
        runner = StandIn(book)
        b = run_notebooks.Build(book, book / "_build" / "executed", "ci", None, False, False, 2, runner)
        assert not b.all(run_notebooks.toc_notebooks(book))
        assert sorted(runner.ran) == ["99_board", "a", "b", "c"]
    out = json.loads((book / "_build" / "executed" / "notebooks" / "a.ipynb").read_text())
    assert not any(c.get("id") == "book-run-note" for c in out["cells"]), "the copy for CI is not the reader's"
    assert not (book / "_build" / "exec-cache").exists()
