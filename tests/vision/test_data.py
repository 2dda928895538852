"""Colored-MNIST and the digit files (tvutils.vision.data)."""

from __future__ import annotations

import dataclasses
import gzip
import struct

import numpy as np
import pytest
import torch

from tvutils.chapter import data as registry
from tvutils.vision import data as vd


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


# ---- data ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1, 3], dtype=np.uint8)
    write_idx(tmp_path / "img", images, gz)
    write_idx(tmp_path / "lab", labels, gz)
    assert np.array_equal(vd.read_idx(tmp_path / "img"), images)
    assert np.array_equal(vd.read_idx(tmp_path / "lab"), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        vd.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 2), dtype=np.uint8), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        vd.read_idx(tmp_path / "short")


def test_full_mnist_path_on_a_tiny_stand_in(tmp_path, monkeypatch):
    """The 70k loader's code (IDX reading, concatenation) on tiny files written here; offline, the registry's
    download fails with a message that says what to do."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("t10k", 3)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    images, digits = vd.load_mnist_full(tmp_path)
    assert images.shape == (8, 28, 28) and digits.shape == (8,) and digits.dtype == np.int64
    monkeypatch.setenv("TVUTILS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TVUTILS_PROGRESS", "0")
    entry = registry.REGISTRY["mnist"]
    offline = tuple(dataclasses.replace(d, urls=("http://127.0.0.1:9/" + d.fname,)) for d in entry.routes[0])
    monkeypatch.setitem(registry.REGISTRY, "mnist", dataclasses.replace(entry, routes=(offline,)))
    with pytest.raises(registry.DataError, match="could not download it.*mnist5k"):
        vd.load_mnist_full()


def test_mnist_5k_offline():
    images, digits = vd.load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(digits).tolist() == [500] * 10


def test_task_colouring_follows_its_probabilities():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (4000, 28, 28)).astype(np.uint8)
    digits = rng.integers(0, 10, 4000)
    data = vd.make_task_data(images, digits, vd.ColourTask("T", p_colour=0.9, p_parity=0.7, seed=3))
    assert data.x.shape == (4000, 3, 28, 28) and 0 <= float(data.x.min()) and float(data.x.max()) <= 1
    # each digit lies in exactly its colour's channel; blue is empty
    assert torch.equal(data.x[torch.arange(4000), data.colour] > 0, torch.ones(4000, 28, 28, dtype=torch.bool))
    assert float(data.x[:, 2].abs().sum()) == 0
    assert abs(float((data.colour == data.y).double().mean()) - 0.9) < 0.02
    assert abs(float((data.y == torch.from_numpy(digits % 2)).double().mean()) - 0.7) < 0.03
    again = vd.make_task_data(images, digits, vd.ColourTask("T", p_colour=0.9, p_parity=0.7, seed=3))
    assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)
    with pytest.raises(ValueError):
        vd.ColourTask("bad", p_colour=1.5)


def test_split_and_tint():
    train, test = vd.split_indices(10, 3, seed=1)
    assert len(train) == 7 and len(test) == 3 and not set(train) & set(test)
    tinted = vd.random_tint(np.full((5, 4, 4), 255, np.uint8), seed=0)
    assert tinted.shape == (5, 3, 4, 4) and torch.allclose(tinted.amax(dim=(1, 2, 3)), torch.ones(5))


def test_fashion_mnist_from_a_folder(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.ones((2, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 9]))
    images, classes = vd.load_fashion_mnist("test", tmp_path)
    assert images.shape == (2, 28, 28) and classes.tolist() == [3, 9]


# ---- model --------------------------------------------------------------------------------------------------


def test_both_colours_draws_every_digit_red_then_green():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    pair = vd.both_colours(images)
    assert pair.shape == (2, 3, 3, 28, 28)
    assert torch.equal(pair[0, :, vd.RED], torch.from_numpy(images).float() / 255)
    assert torch.equal(pair[1, :, vd.GREEN], torch.from_numpy(images).float() / 255)
    assert float(pair[0, :, vd.GREEN].abs().sum()) == 0 and float(pair[:, :, 2].abs().sum()) == 0
