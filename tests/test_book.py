"""Every notebook follows the book's skeleton: stored without outputs, a parameters cell, the Colab cell."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import colab_cell  # noqa: E402
import fetch_data  # noqa: E402
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
        assert set(needs.data) <= set(fetch_data.DATASETS)


def run_in_fake_colab(stem, monkeypatch, cloned, clone_rc=0):
    """Execute the Colab cell of ``stem`` as Colab would, with every side effect recorded instead of done."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append([str(c) for c in cmd])
        return subprocess.CompletedProcess(cmd, clone_rc if cmd[:2] == ["git", "clone"] else 0, "", "fatal: no route")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(["chdir", path]))
    isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda path: cloned if path.endswith("/.git") else isdir(path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(colab_cell.cell_source(stem, REPO_URL), stem, "exec"), {})
    return calls


@pytest.mark.parametrize("stem", ["00_setup", "06_vit_colored_mnist", "07_llm_unlearning", "99_scoreboard"])
def test_colab_cell_clones_once_keeps_torch_and_fetches_the_chapters_data(stem, monkeypatch, capsys):
    import importlib.metadata

    first = run_in_fake_colab(stem, monkeypatch, cloned=False)
    again = run_in_fake_colab(stem, monkeypatch, cloned=True)  # a re-run after a restart: the clone is there
    assert first[0] == ["git", "clone", "--depth=1", REPO_URL, colab_cell.HOME]
    assert first[1:] == again, "a re-run does everything but the clone"
    pip = next(c for c in again if c[1:4] == ["-m", "pip", "install"])
    assert f"torch=={importlib.metadata.version('torch')}" in pip, "the installed torch is passed as a requirement"
    needs = colab_cell.NEEDS.get(stem, colab_cell.Needs())
    fetched = [c[2:] for c in again if c[1].endswith("tools/fetch_data.py")]
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
    exec(compile(colab_cell.cell_source("06_vit_colored_mnist", REPO_URL), "cell", "exec"), {})


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
