"""Safe checkpoints: safetensors files, single or sharded in the Hugging Face layout, opened lazily.

``Checkpoint`` reads only the JSON headers (tensor names, dtypes, shapes, byte offsets), checks that every
shard exists and is well formed, and refuses pickle checkpoints (``.bin``, ``.pt``, ``.ckpt``, …), since
unpickling runs arbitrary code. The tensors themselves are read by ``tvutils.editing.streaming``, one at a
time.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be merged as asked; the message names the file or key at fault."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path  # the shard holding the tensor
    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    nbytes: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file, from its JSON header (no data read); raises on a malformed file."""
    path = Path(path)
    _refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, 100_000_000):
            raise CheckpointError(f"{path}: not a safetensors file (header length {length} exceeds the file)")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: not a safetensors file (unreadable header: {err})") from None
    base = 8 + length
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info.get("dtype") not in DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has an unsupported dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        if base + end > size:
            raise CheckpointError(f"{path}: tensor {key!r} runs past the end of the file (truncated?)")
        out[key] = TensorInfo(path, info["dtype"], tuple(info["shape"]), base + begin, end - begin)
    return out


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: a pickle checkpoint; refused, as unpickling can run arbitrary code. Convert it to "
            "safetensors first (in a sandbox, if you do not trust it)."
        )
    if path.is_file():
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"PK" or magic[:1] == b"\x80":  # torch.save zip archive, or a raw pickle stream
            raise CheckpointError(f"{path}: a pickle (torch.save) file; refused, only safetensors is loaded")


class Checkpoint:
    """A safetensors checkpoint opened lazily: a file, a folder with one, or a sharded Hugging Face layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.index_file: Path | None = None
        if self.path.is_dir():
            if (self.path / INDEX_NAME).is_file():
                self.index_file = self.path / INDEX_NAME
            elif (self.path / SINGLE_NAME).is_file():
                self.files = [self.path / SINGLE_NAME]
            else:
                pickles = sorted(p.name for p in self.path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
                if pickles:
                    raise CheckpointError(
                        f"{self.path}: holds only pickle checkpoint(s) {pickles[:3]}; refused, as unpickling can "
                        "run arbitrary code. Convert to safetensors first."
                    )
                raise CheckpointError(f"{self.path}: neither {INDEX_NAME} nor {SINGLE_NAME} in this folder")
        elif self.path.name.endswith(".index.json"):
            self.index_file = self.path
        elif not self.path.exists():
            raise CheckpointError(f"{self.path}: no such file or folder")
        else:
            self.files = [self.path]
        self.weight_map: dict[str, str] | None = None
        if self.index_file is not None:
            self.weight_map = self._read_index()
            self.files = [self.index_file.parent / name for name in dict.fromkeys(self.weight_map.values())]
        self.tensors: dict[str, TensorInfo] = {}
        for file in self.files:
            if not file.is_file():
                raise CheckpointError(f"{self.index_file}: shard {file.name} is missing")
            for key, info in read_header(file).items():
                if key in self.tensors:
                    raise CheckpointError(f"{self.path}: key {key!r} is in two shards")
                self.tensors[key] = info
        if self.weight_map is not None:
            for key, shard in self.weight_map.items():
                if key not in self.tensors or self.tensors[key].file.name != Path(shard).name:
                    raise CheckpointError(f"{self.index_file}: key {key!r} is not in its shard {shard}")
            extra = [k for k in self.tensors if k not in self.weight_map]
            if extra:
                raise CheckpointError(f"{self.index_file}: shards hold keys the index does not list: {extra[:5]}")
        if not self.tensors:
            raise CheckpointError(f"{self.path}: holds no tensor")

    def _read_index(self) -> dict[str, str]:
        try:
            index = json.loads(self.index_file.read_text())
            weight_map = index["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.index_file}: not a valid index (needs a 'weight_map'): {err}") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{self.index_file}: empty or malformed weight_map")
        return weight_map

    @property
    def sharded(self) -> bool:
        return self.index_file is not None

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self.tensors)} tensors in {len(self.files)} file(s))"


def check_same_layout(base: Checkpoint, others: Sequence[Checkpoint]) -> None:
    """Raise CheckpointError naming the first key missing, or differing in shape or dtype, from the base."""
    for other in others:
        only_base = [k for k in base.tensors if k not in other.tensors]
        only_other = [k for k in other.tensors if k not in base.tensors]
        if only_base or only_other:
            raise CheckpointError(
                f"{other.path}: keys differ from the base {base.path}: missing {only_base[:5]}, extra {only_other[:5]}"
            )
        for key, info in base.tensors.items():
            o = other.tensors[key]
            if o.shape != info.shape:
                raise CheckpointError(f"{other.path}: key {key!r} has shape {o.shape}, the base has {info.shape}")
            if o.dtype != info.dtype:
                raise CheckpointError(f"{other.path}: key {key!r} has dtype {o.dtype}, the base has {info.dtype}")
