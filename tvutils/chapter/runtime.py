"""What a computed result depends on besides its recipe: library versions and thread counts.

Floating-point reductions are summed in a different order when torch uses another number of threads, so a
model trained with 2 threads differs in its last bits from one trained with 1, and after a few hundred SGD
steps the difference is visible in the verdicts. The chapters therefore fix the thread count
(:func:`fix_threads`) and every cache key includes :func:`fingerprint`, so that a cached model made under
other conditions is never reused silently.
"""

from __future__ import annotations

import importlib.metadata
import platform

import torch

LIBRARIES = ("torch", "numpy", "transformers", "peft", "safetensors")


def fix_threads(n: int = 1) -> int:
    """Use exactly ``n`` intra-op threads in torch (the same count on every machine); returns ``n``."""
    if n < 1:
        raise ValueError(f"thread count must be ≥ 1, got {n}")
    torch.set_num_threads(n)
    return n


def versions() -> dict[str, str]:
    """The installed versions of the libraries whose arithmetic a cached result depends on."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def fingerprint() -> dict[str, object]:
    """Everything besides a recipe that changes a computed number: versions, thread count, CPU architecture."""
    return {**versions(), "threads": torch.get_num_threads(), "machine": platform.machine()}
