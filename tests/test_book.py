"""Every notebook follows the book's skeleton: stored without outputs, a parameters cell, the Colab cell."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from tvutils.chapter.data import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import book_pages  # noqa: E402
import colab_cell  # noqa: E402
import run_notebooks  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"]
SITE_URL = CONFIG["html"]["baseurl"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_skeleton(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in cells if c["cell_type"] == "code"), (
        "store notebooks without outputs"
    )
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    source = "".join(params[0]["source"])
    assert 'profile = "default"' in source and "overrides = {}" in source
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "google.colab" in code and REPO_URL in code, "the Colab cell must clone the URL in _config.yml"
    assert colab_cell.COMMIT_LINE in code, "the notebook in git records no commit: the book build writes it"
    if not path.stem.startswith("99_"):
        assert "Verdict(" in code and ".finish(" in code, "a chapter ends with a verdict"


def _heading_jumps(texts: list[str]) -> list[str]:
    """Headings that go down more than one level from the one before (myst warns, and the build treats warnings
    as errors); fenced code is skipped."""
    found, last, fence = [], 0, False
    for text in texts:
        for line in text.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fence = not fence
            level = len(line) - len(line.lstrip("#"))
            if fence or not 0 < level <= 6 or not line[level:].startswith(" "):
                continue
            if last and level > last + 1:
                found.append(f"H{last} to H{level}: {line.strip()}")
            last = level
    return found


def test_the_heading_check_finds_a_skipped_level():
    assert _heading_jumps(["# Title\n\n### Too deep"]) == ["H1 to H3: ### Too deep"]
    assert _heading_jumps(["# Title\n```\n### in code\n```\n## Fine\n### Fine\n# Again"]) == []


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_headings_never_skip_a_level(path):
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        texts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    else:
        texts = [path.read_text()]
    assert not _heading_jumps(texts), f"{path.name}: {_heading_jumps(texts)}"


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is not in _toc.yml"


def test_every_colab_cell_is_the_generated_one_with_the_url_of_config_yml():
    assert colab_cell.repository_url() == REPO_URL
    assert [p.name for p in colab_cell.stale()] == [], "run tools/colab_cell.py --write"
    for path in run_notebooks.toc_notebooks(ROOT):
        cells = json.loads(path.read_text())["cells"]
        (cell,) = [c for c in cells if colab_cell.TAG in c.get("metadata", {}).get("tags", [])]
        assert "".join(cell["source"]) == colab_cell.cell_source(path.stem, REPO_URL)
        assert cells.index(cell) < next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))


def test_colab_needs_name_real_chapters_and_datasets():
    stems = {p.stem for p in run_notebooks.toc_notebooks(ROOT)}
    assert set(colab_cell.NEEDS) <= stems
    for needs in colab_cell.NEEDS.values():
        assert set(needs.data) <= set(REGISTRY)


def run_in_fake_colab(stem, monkeypatch, cloned, clone_rc=0, commit="0" * 40):
    """Execute the Colab cell of ``stem`` as Colab would, with every side effect recorded instead of done; the site's
    build record names ``commit``."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append([str(c) for c in cmd])
        return subprocess.CompletedProcess(cmd, clone_rc if cmd[:2] == ["git", "clone"] else 0, "", "fatal: no route")

    fake_colab(monkeypatch, {colab_cell.site_url() + colab_cell.BUILD_RECORD: {"commit": commit}})
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(["chdir", path]))
    isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda path: cloned if path.endswith("/.git") else isdir(path))
    exec(compile(colab_cell.cell_source(stem, REPO_URL), stem, "exec"), {})
    return calls


def fake_colab(monkeypatch, pages):
    """A runtime where google.colab is imported and urllib serves ``pages`` (url -> JSON) and nothing else."""
    import io
    import urllib.error
    import urllib.request

    def urlopen(url, timeout=None):
        if url not in pages:
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(json.dumps(pages[url]).encode())

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.mark.parametrize("stem", ["00_setup", "07_vit_colored_mnist", "08_llm_unlearning", "99_scoreboard"])
def test_colab_cell_clones_once_keeps_torch_and_fetches_the_chapters_data(stem, monkeypatch, capsys):
    import importlib.metadata

    first = run_in_fake_colab(stem, monkeypatch, cloned=False)
    again = run_in_fake_colab(stem, monkeypatch, cloned=True)  # a re-run after a restart: the clone is there
    assert first[0] == ["git", "clone", "--quiet", REPO_URL, colab_cell.HOME]
    assert first[1:] == again, "a re-run does everything but the clone"
    assert ["git", "-C", colab_cell.HOME, "checkout", "--quiet", "--detach", "0" * 40] in again
    pip = next(c for c in again if c[1:4] == ["-m", "pip", "install"])
    assert f"torch=={importlib.metadata.version('torch')}" in pip, "the installed torch is passed as a requirement"
    needs = colab_cell.NEEDS.get(stem, colab_cell.Needs())
    fetched = [c[5:] for c in again if c[1:5] == ["-m", "tvutils", "data", "fetch"]]
    assert fetched == ([list(needs.data)] if needs.data else [])
    assert again[-1] == ["chdir", f"{colab_cell.HOME}/notebooks"]
    if stem.startswith("99_"):
        assert "verdicts written in this runtime: none yet" in capsys.readouterr().out


def test_colab_cell_says_why_when_the_clone_fails(monkeypatch):
    with pytest.raises(SystemExit, match=f"Could not clone {REPO_URL} into /content/tvbook: fatal: no route"):
        run_in_fake_colab("01_task_addition", monkeypatch, cloned=False, clone_rc=128)


def test_colab_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    exec(compile(colab_cell.cell_source("07_vit_colored_mnist", REPO_URL), "cell", "exec"), {})


def git(*args, cwd=None):
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def origin(tmp_path):
    """A bare repository with two commits (the first and second versions of the book), and their hashes."""
    work = tmp_path / "work"
    git("init", "--quiet", "--initial-branch=main", str(work))
    shas = []
    for version in ("first", "second"):
        (work / "notebooks").mkdir(exist_ok=True)
        (work / "VERSION").write_text(version + "\n")
        git("add", "VERSION", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", version, cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work))
    git("clone", "--quiet", "--bare", str(work), str(tmp_path / "origin.git"))
    return tmp_path / "origin.git", shas


def run_cell_against(source, monkeypatch, pages=()):
    """Execute a Colab cell whose git commands really run (pip, the data and chdir recorded, not done)."""
    real_run = subprocess.run
    skipped = []

    def run(cmd, **kwargs):
        if cmd[0] == "git":
            return real_run(cmd, **kwargs)
        skipped.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    fake_colab(monkeypatch, dict(pages))
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "chdir", lambda path: None)
    exec(compile(source, "colab-cell", "exec"), {})
    return skipped


def test_the_colab_cell_checks_out_the_commit_the_page_was_built_from(origin, tmp_path, monkeypatch, capsys):
    """The book's copy of a page records the commit it was built from; its Colab cell clones and checks out that
    commit, and a re-run in a clone that is at another commit checks it out again."""
    bare, (first, second) = origin
    home = tmp_path / "tvbook"
    cell = {"cell_type": "code", "metadata": {"tags": ["colab"]}, "outputs": [], "execution_count": None}
    source = colab_cell.cell_source("00_setup", str(bare), site="https://book.invalid/", home=str(home))
    page = book_pages.with_commit({"cells": [dict(cell, source=source)]}, first)
    built = "".join(page["cells"][0]["source"])
    assert f'COMMIT = "{first}"' in built and colab_cell.COMMIT_LINE not in built
    run_cell_against(built, monkeypatch)
    assert git("-C", str(home), "rev-parse", "HEAD") == first and (home / "VERSION").read_text() == "first\n"
    assert f"at commit {first[:12]}" in capsys.readouterr().out

    git("-C", str(home), "checkout", "--quiet", "--detach", second)  # the clone moved on: a re-run goes back
    run_cell_against(built, monkeypatch)
    assert git("-C", str(home), "rev-parse", "HEAD") == first

    newer = book_pages.with_commit({"cells": [dict(cell, source=source)]}, second)  # a page built later
    run_cell_against("".join(newer["cells"][0]["source"]), monkeypatch)
    assert git("-C", str(home), "rev-parse", "HEAD") == second and (home / "VERSION").read_text() == "second\n"


def test_a_notebook_from_the_repository_runs_the_commit_of_the_sites_pages(origin, tmp_path, monkeypatch, capsys):
    """No recorded commit (the notebook as committed, as a launch button opens it): the site's build record names
    the commit; when the site cannot be reached the cell says so and the clone's commit runs."""
    bare, (first, second) = origin
    home = tmp_path / "tvbook"
    source = colab_cell.cell_source("00_setup", str(bare), site="https://book.invalid/", home=str(home))
    run_cell_against(source, monkeypatch, {"https://book.invalid/_static/build.json": {"commit": first}})
    assert git("-C", str(home), "rev-parse", "HEAD") == first
    run_cell_against(source, monkeypatch)  # offline: nothing is checked out, and it says why
    assert git("-C", str(home), "rev-parse", "HEAD") == first
    assert "Could not read https://book.invalid/_static/build.json (" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="Could not check out commit f{40}"):
        run_cell_against(source, monkeypatch, {"https://book.invalid/_static/build.json": {"commit": "f" * 40}})


def test_the_book_build_records_its_commit(tmp_path):
    """run_notebooks' build record: the checkout's HEAD and whether it has changes; the copied _config.yml points
    the launch buttons at that commit."""
    work = tmp_path / "w"
    git("init", "--quiet", str(work))
    (work / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.3"\n')
    git("add", "pyproject.toml", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "x", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    assert run_notebooks.build_record(work) == {"commit": head, "dirty": False, "version": "1.2.3"}
    (work / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.4"\n')
    assert run_notebooks.build_record(work)["dirty"] is True
    assert run_notebooks.build_record(tmp_path)["commit"] is None, "outside a git checkout"
    config = yaml.safe_load(run_notebooks.config_at_commit((ROOT / "_config.yml").read_text(), head))
    assert config["repository"]["branch"] == head and config["repository"]["url"] == REPO_URL
    assert run_notebooks.config_at_commit("a: 1\n", None) == "a: 1\n"
    note = book_pages.run_note(
        "default", 3, "a machine", "2026-12-06", 1, {"commit": head, "dirty": True, "version": "1"}
    )
    assert f"Built from commit `{head[:12]}` with uncommitted changes (tvutils 1)" in note


def test_readme_table_lists_every_chapters_profiles():
    import profiles

    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- profiles table: checked by tests/test_book.py -->", 1)[1].strip().split("\n\n")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    listed = {row[0]: row[1] for row in rows}
    assert listed == {stem: ", ".join(names) for stem, names in profiles.all_profiles(ROOT).items()}
    for row in rows:
        assert (row[2] == "—") == ("full" not in row[1]), f"{row[0]}: say what `full` runs, or '—' if it has none"


def test_the_readme_says_where_the_site_is_published():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where it is published", 1)[1].split("\n## ", 1)[0]
    assert SITE_URL in section and REPO_URL in section, "the README's addresses must be those of _config.yml"
    assert SITE_URL.startswith("https://") and SITE_URL.endswith("/")


def test_choosing_lambda_reads_the_case_studies_with_their_own_parameters():
    """Chapter 09 reuses the runs of chapters 07 and 08 through their caches: its copies of their parameters must be
    theirs, profile by profile, or it would silently train its own models instead."""
    import profiles

    from tvutils.language import models

    nb = ROOT / "notebooks"
    ns = {"models": models}
    own = profiles.assigned_dict(nb / "09_choosing_lambda.ipynb", "DEFAULTS")
    own_ci = own | profiles.assigned_dict(nb / "09_choosing_lambda.ipynb", "PROFILES")["ci"]
    vit = profiles.assigned_dict(nb / "07_vit_colored_mnist.ipynb", "DEFAULTS")
    vit_ci = vit | profiles.assigned_dict(nb / "07_vit_colored_mnist.ipynb", "PROFILES")["ci"]
    lm = profiles.assigned_dict(nb / "08_llm_unlearning.ipynb", "DEFAULTS", ns)
    lm_ci = lm | profiles.assigned_dict(nb / "08_llm_unlearning.ipynb", "PROFILES", ns)["ci"]
    for mine, theirs in ((own, vit), (own_ci, vit_ci)):
        for key in ("seeds", "n_test", "n_ood", "n_train", "lambda_step", "ood_step", "pretrain"):
            assert mine[f"vit_{key}"] == theirs[key], f"vit_{key}"
    assert own["lm"] == {k: lm[k] for k in own["lm"]}
    # on ci, chapter 09 scores more passages a book (its probe needs 8 a task), in one batch, and one run
    differs = {"n_passages", "eval_batch_size", "seeds"}
    assert {k: v for k, v in own_ci["lm"].items() if k not in differs} == {
        k: lm_ci[k] for k in own_ci["lm"] if k not in differs
    }
