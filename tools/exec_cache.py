"""The execution cache of `make book`: a notebook is executed again only when something it depends on changed.

A notebook's key is the SHA-256 of everything that can change what it computes:

- its own file (bytes);
- every Python file of the repository it imports, transitively: ``import tvutils.x`` / ``from tvutils.x import y``
  / relative imports inside the package, each with the ``__init__.py`` of every package above it (modules are
  looked up in the repository root and in ``tools/``; anything else is a dependency of the environment), and
  the files other than Python beside the ``__init__.py`` of each package it imports;
- the profile and the parameters papermill injects, and the environment variables that change results
  (``TVUTILS_*`` but the two paths, the thread counts);
- the environment: the Python version and every installed distribution with its version (torch, transformers,
  the offline model wheels);
- the recipes of the data caches it reads: where its code names ``cache_dir("data", X)`` or ``locate("X")``
  (an entry of the data registry), the registry ``tvutils/chapter/data_registry.yaml`` and a listing (names and sizes) of
  ``_cache/data/X``. Model caches are keyed by their recipe in the code (hashed above), so a deleted model cache
  is rebuilt to the same result;
- for the scoreboard (``99_*``): every verdict file present when it runs, and ``_toc.yml``.

An entry is one JSON file per notebook and profile, written under a temporary name and renamed into place. It
holds the key, its parts (to say why a notebook runs again), the executed notebook, the verdict file the run
wrote, the wall time and the machine, and a SHA-256 digest of all that. An entry is served only if it parses,
has this ``FORMAT``, the same key and a matching digest: an entry edited by hand, half written or written by
another version is executed again, never served.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

FORMAT = "tvutils-exec-cache/1"
RESULT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED")
PATH_ENV = ("TVUTILS_ROOT", "TVUTILS_CACHE")
_CACHE_CALL = re.compile(r"""cache_dir\(\s*["']([^"']+)["'](?:\s*,\s*["']([^"']+)["'])?""")
_DATA_CALL = re.compile(r"""\blocate\(\s*["']([^"']+)["']""")  # tvutils.chapter.data.locate("X"): <cache>/data/X
DATA_REGISTRY = "tvutils/chapter/data_registry.yaml"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_of_notebook(nb: dict) -> str:
    """The code cells of a notebook, IPython magics and shell lines blanked so that ast can parse them."""
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            cells.append("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines()))
    return "\n".join(cells)


def _imports(source: str, module: str | None, is_package: bool) -> set[str]:
    """Absolute names of the modules a source imports (anywhere in it, also inside functions)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    continue
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def _module_file(name: str, search: list[Path]) -> Path | None:
    for base in search:
        path = base.joinpath(*name.split("."))
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    return None


def local_modules(source: str, root: Path) -> dict[str, Path]:
    """Every module of the repository (root or tools/) a notebook's code imports, transitively, by name."""
    search = [root, root / "tools"]
    found: dict[str, Path] = {}
    todo = [(name, None) for name in _imports(source, None, False)]
    while todo:
        name, _ = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module imports the packages above it first
            sub = ".".join(parts[:i])
            if sub in found:
                continue
            path = _module_file(sub, search)
            if path is None:
                continue
            found[sub] = path
            is_pkg = path.name == "__init__.py"
            todo.extend((n, sub) for n in _imports(path.read_text(errors="replace"), sub, is_pkg))
    return found


@functools.cache
def installed_distributions() -> str:
    """Digest of every installed distribution with its version (the environment a notebook runs in)."""
    items = sorted(
        {f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions() if d.metadata["Name"]}
    )
    return sha256("\n".join(items).encode())


def environment() -> dict:
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("TVUTILS_") and k not in PATH_ENV}
    env |= {k: os.environ[k] for k in RESULT_ENV if k in os.environ}
    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "distributions": installed_distributions(),
        "env": env,
    }


def _listing(folder: Path) -> str:
    rows = sorted(f"{p.relative_to(folder)}\t{p.stat().st_size}" for p in folder.rglob("*") if p.is_file())
    return sha256("\n".join(rows).encode())


def key_parts(nb_path: Path, root: Path, profile: str, parameters: dict, env: dict, verdict_dir: Path) -> dict:
    """What a notebook's result depends on, each part as a digest (see the module docstring)."""
    raw = nb_path.read_bytes()
    source = code_of_notebook(json.loads(raw))
    modules = local_modules(source, root)
    texts = [source] + [p.read_text(errors="replace") for p in modules.values()]
    data = {m.group(2) for t in texts for m in _CACHE_CALL.finditer(t) if m.group(1) == "data" and m.group(2)}
    data = sorted(data | {m.group(1) for t in texts for m in _DATA_CALL.finditer(t)})
    parts = {
        "format": FORMAT,
        "notebook": sha256(raw),
        "profile": profile,
        "parameters": parameters,
        "environment": env,
        "modules": {str(p.relative_to(root)): sha256(p.read_bytes()) for p in sorted(modules.values())},
    }
    resources = [  # the non-Python files of the packages it imports (data a module may read beside itself)
        f for p in modules.values() if p.name == "__init__.py" for f in sorted(p.parent.iterdir())
        if f.is_file() and f.suffix not in (".py", ".pyc")
    ]  # fmt: skip
    parts["modules"] |= {str(f.relative_to(root)): sha256(f.read_bytes()) for f in resources}
    if data:
        cache = Path(os.environ.get("TVUTILS_CACHE") or root / "_cache") / "data"
        registry = root / DATA_REGISTRY
        parts["data"] = {
            "registry": sha256(registry.read_bytes()) if registry.is_file() else "missing",
            "folders": {d: _listing(cache / d) if (cache / d).is_dir() else "missing" for d in data},
        }
    if nb_path.stem.startswith("99_"):
        parts["verdicts"] = {p.name: sha256(p.read_bytes()) for p in sorted(verdict_dir.glob("*.json"))}
        parts["toc"] = sha256((root / "_toc.yml").read_bytes())
    return parts


def writes_caches(nb_path: Path, root: Path) -> set[str]:
    """The caches a notebook's code may write (``cache_dir(X, ...)`` with X other than "data" and "downloads":
    the data layer's, which ``make data`` fills before any notebook runs and the notebooks only read)."""
    source = code_of_notebook(json.loads(nb_path.read_text()))
    texts = [source] + [p.read_text(errors="replace") for p in local_modules(source, root).values()]
    return {m.group(1) for t in texts for m in _CACHE_CALL.finditer(t) if m.group(1) not in ("data", "downloads")}


def key_of(parts: dict) -> str:
    return sha256(json.dumps(parts, sort_keys=True).encode())


def _digest(entry: dict) -> str:
    return sha256(json.dumps({k: v for k, v in entry.items() if k != "digest"}, sort_keys=True).encode())


def entry_path(cache: Path, profile: str, stem: str) -> Path:
    return cache / profile / f"{stem}.json"


def store(path: Path, parts: dict, notebook: dict, verdict: str | None, run: dict) -> None:
    """Write an entry atomically (a temporary file renamed into place)."""
    from tvutils.chapter.paths import atomic_write_bytes

    entry = {
        "format": FORMAT,
        "key": key_of(parts),
        "parts": parts,
        "notebook": notebook,
        "verdict": verdict,
        "run": run,  # wall_s, machine, date, jobs
    }
    entry["digest"] = _digest(entry)
    atomic_write_bytes(path, json.dumps(entry, ensure_ascii=False).encode())


def load(path: Path, parts: dict) -> tuple[dict | None, str]:
    """(the entry, "") if it may be served for these parts, else (None, why not)."""
    if not path.is_file():
        return None, "not executed before"
    try:
        entry = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, "its cache entry is unreadable (half written?)"
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None, "its cache entry was written by another version"
    if entry.get("digest") != _digest(entry):
        return None, "its cache entry does not match its digest (edited by hand?)"
    if entry.get("key") != key_of(parts):
        return None, "changed: " + ", ".join(changed(entry.get("parts", {}), parts))
    return entry, ""


def changed(old: dict, new: dict) -> list[str]:
    """Which parts of a key differ, by name (a module by its path)."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and name in ("modules", "verdicts"):
            out += [f"{name[:-1]} {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(name)
    return out


def machine() -> str:
    """A short description of this machine: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    try:
        kb = int(
            next(
                line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
            ).split()[1]
        )
        memory = f", {kb / 2**20:.0f} GB of memory"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cores} CPU cores ({cpu}){memory}, {platform.system()}"
