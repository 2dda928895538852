"""Progress bars that stay quiet in CI and in the executed book (set ``CI`` or ``TVUTILS_PROGRESS=0``).

``tqdm.auto``: widget bars in Jupyter and Colab (ipywidgets, in the ``book`` extra), text bars in a terminal."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """False when the environment asks for quiet output (CI=true/1 or TVUTILS_PROGRESS=0)."""
    if os.environ.get("TVUTILS_PROGRESS", "1") == "0":
        return False
    return os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterable[T]:
    """Wrap an iterable in a tqdm bar unless progress is disabled."""
    return tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(), leave=False, **kwargs)
