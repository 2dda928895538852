"""Where the book keeps its outputs and caches, wherever a notebook is executed from."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The book's root: $TVUTILS_ROOT, else the nearest folder above the cwd holding _toc.yml, else the cwd."""
    env = os.environ.get("TVUTILS_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    return here


def build_dir() -> Path:
    return repo_root() / "_build"


def cache_dir(*parts: str) -> Path:
    """A cache folder ($TVUTILS_CACHE, else <root>/_cache), created on demand."""
    base = Path(os.environ["TVUTILS_CACHE"]) if os.environ.get("TVUTILS_CACHE") else repo_root() / "_cache"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a reader never sees it half-written: a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
