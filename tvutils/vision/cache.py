"""On-disk caches of the case study (fine-tuned models, sweep margins): keyed, written atomically, resumable.

A key hashes everything that changes the cached numbers: the caller's recipe document, this module's
``CACHE_VERSION`` and :func:`tvutils.chapter.runtime.fingerprint` (library versions, thread count, CPU
architecture) and the device. A run that stops (a Colab disconnect) resumes from the entries already written;
an entry that cannot be read is computed again, never served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..chapter.paths import atomic_write_bytes
from ..chapter.runtime import fingerprint

CACHE_VERSION = 1  # bump when the code behind a cached result changes


def device_name(device: torch.device | str) -> str:
    """The device a result was computed on, with the GPU's model name (its arithmetic differs by model)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def cache_key(prefix: str, doc: dict) -> str:
    """``prefix-<16 hex digits>`` from the recipe ``doc``, the cache version and the runtime fingerprint."""
    full = {"doc": doc, "version": CACHE_VERSION, "fingerprint": fingerprint()}
    return f"{prefix}-" + hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_tensors(
    directory: Path, key: str, compute: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors stored under ``key`` (and True), else ``compute()``'s, written atomically (and False)."""
    path = Path(directory) / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_safetensors(path.read_bytes()), True
        except (SafetensorError, OSError, ValueError):
            pass  # unreadable (half-copied, edited): computed again below
    tensors = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={"key": key}))
    return tensors, False
