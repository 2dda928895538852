"""Every notebook follows the book's skeleton: stored without outputs, a parameters cell, the Colab cell."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
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
    if not path.stem.startswith("99_"):
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "google.colab" in code and REPO_URL in code, "the Colab cell must clone the URL in _config.yml"
        assert "Verdict(" in code and ".finish(" in code, "a chapter ends with a verdict"


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is not in _toc.yml"


def test_the_readme_says_where_the_site_is_published():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where it is published", 1)[1].split("\n## ", 1)[0]
    assert SITE_URL in section and REPO_URL in section, "the README's addresses must be those of _config.yml"
    assert SITE_URL.startswith("https://") and SITE_URL.endswith("/")
