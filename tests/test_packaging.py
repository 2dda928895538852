"""The conda environment lists the same packages as pyproject.toml; the tooling reads the table of contents."""

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def names(requirements):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [p for p in pip if not p.startswith("-e")]
    assert names(listed) == names(wanted)
    exact = {r.replace(" ", "") for r in wanted}
    assert {p.replace(" ", "") for p in listed} == exact, "versions differ between pyproject.toml and environment.yml"
    assert "torch==2.13.0" in project["dependencies"]


def test_toc_lists_existing_pages_and_notebooks():
    import run_notebooks

    files = run_notebooks.toc_files(ROOT / "_toc.yml")
    assert files[0] == "book/intro"
    for entry in files:
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), entry
    assert run_notebooks.toc_notebooks(ROOT), "no notebook in the table of contents"


def test_offline_html_check_flags_remote_scripts():
    import check_offline_html

    html = (
        '<script src="https://cdn.example/mathjax.js"></script><link rel="stylesheet" href="//x/y.css">'
        '<link rel="canonical" href="https://example/">'
        '<script src="_static/local.js"></script><a href="https://colab.research.google.com/x">colab</a>'
    )
    assert check_offline_html.remote_loads(html) == ["https://cdn.example/mathjax.js", "//x/y.css"]
