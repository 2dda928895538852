"""Keyed, atomic, resumable caches (tvutils.vision.cache)."""

from __future__ import annotations

import torch

from tvutils.chapter.runtime import fix_threads
from tvutils.vision import cache


def test_keys_cover_the_recipe_and_the_runtime():
    a = cache.cache_key("x", {"lr": 1e-3})
    assert a == cache.cache_key("x", {"lr": 1e-3}) and a.startswith("x-")
    assert a != cache.cache_key("x", {"lr": 2e-3})
    before = torch.get_num_threads()
    try:
        fix_threads(before + 1)
        assert cache.cache_key("x", {"lr": 1e-3}) != a  # a result made with other threads is not reused
    finally:
        fix_threads(before)
    assert cache.device_name("cpu") == "cpu"


def test_cached_tensors_compute_once_and_recompute_a_damaged_entry(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"m": torch.arange(6.0).view(2, 3)}

    first, hit = cache.cached_tensors(tmp_path, "k", compute)
    second, hit2 = cache.cached_tensors(tmp_path, "k", compute)
    assert (hit, hit2, len(calls)) == (False, True, 1) and torch.equal(first["m"], second["m"])
    (tmp_path / "k.safetensors").write_bytes(b"half a file")
    third, hit3 = cache.cached_tensors(tmp_path, "k", compute)
    assert not hit3 and len(calls) == 2 and torch.equal(third["m"], first["m"])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
