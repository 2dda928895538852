"""Packaging: ranges in pyproject.toml (an installed torch is kept), this machine's pins in constraints.txt, the
conda environment lists the same packages; the tooling reads the table of contents."""

import json
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import lowest_constraints  # noqa: E402

# torch builds a runtime may already hold (Colab ships a CUDA build with a local version label)
OTHER_TORCHES = ("2.6.0", "2.6.0+cu124", "2.8.0+cu126", "2.10.0+cu128", "2.13.0")
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "ConnectTimeout", "Max retries exceeded", "No route to host", "Connection refused")  # fmt: skip


def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def runtime_requirements():
    """What the Colab cell of a case study installs: the base requirements and the case-studies extra."""
    p = project()
    return [*p["dependencies"], *p["optional-dependencies"]["case-studies"]]


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


def test_pyproject_declares_a_torch_range_that_keeps_an_installed_torch():
    torches = [Requirement(r) for r in lowest_constraints.requirements() if Requirement(r).name == "torch"]
    assert torches, "pyproject.toml must declare torch"
    for req in torches:
        assert not any(s.operator in ("==", "===") for s in req.specifier), (
            f"{req}: an exact pin belongs in constraints.txt"
        )
        for version in OTHER_TORCHES:
            assert req.specifier.contains(Version(version), prereleases=True), (
                f"{req} refuses an installed torch {version}"
            )


def test_constraints_pin_this_machine_inside_the_declared_ranges_and_make_passes_them():
    lines = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    pins = {Requirement(line).name: Requirement(line) for line in lines if line}
    assert str(pins["torch"].specifier) == "==2.13.0", "this machine's CPU wheel is torch 2.13.0"
    declared = {Requirement(r).name: Requirement(r) for r in lowest_constraints.requirements()}
    for name, pin in pins.items():
        (version,) = [s.version for s in pin.specifier]
        assert declared[name].specifier.contains(version), (
            f"constraints.txt pins {pin}, outside pyproject's {declared[name]}"
        )
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "-m pip install" in line]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs), "every pip install in make passes -c"


def test_lowest_constraints_are_pyprojects_lower_bounds():
    reqs = lowest_constraints.requirements()
    names = re.search(r"^LOWEST_PACKAGES := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert {"transformers", "accelerate", "peft"} <= set(names)
    for name in names:
        (req,) = [Requirement(r) for r in reqs if Requirement(r).name == name]
        assert Version(lowest_constraints.lower_bound(name, reqs)) == Version(
            next(s.version for s in req.specifier if s.operator == ">=")
        )
    with pytest.raises(SystemExit, match="no single '>=' lower bound"):
        lowest_constraints.lower_bound("x", ["x<2"])


def fake_torch_env(tmp_path, version):
    """A venv without pip in which pip sees torch ``version`` installed (a bare .dist-info, no code)."""
    venv.create(tmp_path / "env", with_pip=False)
    python = tmp_path / "env" / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    info = Path(purelib) / f"torch-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    return python


def resolve(python, requirements, tmp_path):
    """pip's dry-run resolution of ``requirements`` into the env of ``python``: the (name, version) it would install."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet"]
    done = subprocess.run([*cmd, "--report", str(report), *requirements], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and any(marker in done.stderr for marker in NETWORK_ERRORS):
        pytest.skip(f"the package index cannot be reached (offline?): {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        (i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]
    }


@pytest.mark.network
def test_resolving_the_case_studies_against_another_installed_torch_asks_for_no_torch(tmp_path):
    """The Colab path: a runtime that holds a CUDA torch of another version keeps it (needs the package index)."""
    python = fake_torch_env(tmp_path, "2.8.0+cu126")
    wanted = resolve(python, runtime_requirements(), tmp_path)
    assert {n for n, _ in wanted} >= {"transformers", "peft", "accelerate"}, "the resolution did not run"
    assert not [(n, v) for n, v in wanted if n == "torch" or n.startswith("nvidia-")], wanted


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


def test_the_version_is_declared_once_and_cited_with_it():
    """pyproject.toml holds the version; CITATION.cff and CHANGELOG.md name the same; tvutils.__version__ is the
    installed distribution's (pyproject's when this checkout is the one installed)."""
    import importlib.metadata

    import tvutils

    version = project()["version"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == version and citation["cff-version"] == "1.2.0"
    assert {ref["identifiers"][0]["value"] for ref in citation["references"]} == {
        "arXiv:2504.10957",
        "arXiv:2402.15607",
    }
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()
    assert tvutils.__version__ == importlib.metadata.version("tvutils")
    origin = importlib.metadata.distribution("tvutils").read_text("direct_url.json") or "{}"
    if json.loads(origin).get("url") == ROOT.as_uri():
        assert tvutils.__version__ == version


def test_the_licences_are_stated_in_the_readme_and_the_license_file():
    license_text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in license_text and "CC BY 4.0" in license_text
    assert project()["license"] == "MIT AND CC-BY-4.0"
    readme = (ROOT / "README.md").read_text()
    assert "## Licence and citation" in readme and "CITATION.cff" in readme


def make_dry_run(tmp_path, *args, gpu=False):
    """The commands `make setup` would run for a fresh venv (make -n), with or without an nvidia-smi on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if gpu:
        smi.write_text("#!/bin/sh\nexit 0\n")
        smi.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    env = {"PATH": path, "HOME": str(tmp_path)}
    cmd = ["make", "-n", "-C", str(ROOT), "setup", f"VIRTUAL_ENV={tmp_path / 'venv'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if "--dry-run" in x]
    return line


def test_without_cuda_make_installs_torchs_cpu_wheel_unless_pip_has_the_pinned_one(tmp_path):
    """No nvidia-smi: pip also looks in PyTorch's CPU index, but only when the pinned torch is not found without an
    index (installed already, or in a local wheel folder: this machine's offline path adds nothing)."""
    line = make_dry_run(tmp_path)
    check, install_cpu, install_plain = (
        line.split("then")[0],
        line.split("then")[1].split("else")[0],
        line.split("else")[1],
    )
    assert "--dry-run --no-index --no-deps -c" in check and "torch" in check
    assert "--extra-index-url https://download.pytorch.org/whl/cpu torch" in install_cpu
    assert "--extra-index-url" not in install_plain and "-c " in install_plain
    assert "--extra-index-url https://example.org/whl/cu126" in make_dry_run(
        tmp_path, "TORCH_INDEX=https://example.org/whl/cu126"
    )
    assert '[ -n "" ]' in make_dry_run(tmp_path, gpu=True), "a CUDA machine: pip's own choice"
    assert '[ -n "" ]' in make_dry_run(tmp_path, "TORCH_INDEX="), "TORCH_INDEX= turns the index off"
