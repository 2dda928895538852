"""Safe checkpoints: safetensors files, single or sharded in the Hugging Face layout, opened lazily.

``Checkpoint`` reads only the JSON headers (tensor names, dtypes, shapes, byte offsets) and validates each one
by the safetensors format's own rules, the rules the ``safetensors`` library enforces when it loads a file:

* the first 8 bytes are the header length n (little-endian), n ≤ 100 MB and within the file; the header is
  n bytes of UTF-8 JSON starting with ``{``: an object whose values are tensor entries, plus an optional
  ``__metadata__`` object of strings;
* every tensor entry is an object with a known ``dtype``, a ``shape`` that is a list of non-negative integers
  and ``data_offsets`` = [begin, end], two integers;
* sorted by offsets, the tensors are contiguous from 0: each begins where the previous one ends, end ≥ begin,
  end − begin = (product of the shape) × (the dtype's size), and the last one ends exactly at the end of the
  file (no data beyond the file, no bytes after the last tensor).

A file that breaks any rule is refused with one line naming the file (and the key) and the rule; so is a
header that repeats a key. Pickle checkpoints (``.bin``, ``.pt``, ``.ckpt``, …, or a file that is not
safetensors and starts like a ``torch.save`` zip or a pickle stream) are refused, since unpickling runs
arbitrary code. A sharded checkpoint's index must map every key to a shard inside its own folder (no
absolute path, no ``..``, no symbolic link out of it); every shard must exist and hold exactly the keys the
index gives it. The tensors themselves are read by ``tvutils.editing.streaming``, one chunk at a time.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_HEADER = 100_000_000  # the safetensors library's limit
ITEMSIZE = {  # the safetensors dtypes: bytes per element (no torch needed to read or check a file)
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
_TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


def __getattr__(name: str) -> dict:
    """``DTYPES`` (safetensors name → torch dtype) and ``DTYPE_NAMES`` (the reverse), built on first use: reading
    and merging checkpoints does not import torch (a second or two), only the merge variants do."""
    if name in ("DTYPES", "DTYPE_NAMES"):
        import torch

        dtypes = {k: getattr(torch, v) for k, v in _TORCH_NAMES.items()}
        globals().update(DTYPES=dtypes, DTYPE_NAMES={v: k for k, v in dtypes.items()})
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be merged as asked; the message names the file or key at fault."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path  # the shard holding the tensor
    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file, from its JSON header (no data read); raises on a malformed file.

    The rules checked are those of the module docstring; ``CheckpointError`` names the file, key and rule.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: a pickle checkpoint; refused, as unpickling can run arbitrary code. Convert it to "
            "safetensors first (in a sandbox, if you do not trust it)."
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            raw = fh.read(min(length, MAX_HEADER)) if length is not None and length <= size - 8 else b""
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    if length is None or length > size - 8 or length > MAX_HEADER or raw[:1] != b"{":
        if head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
            raise CheckpointError(f"{path}: a pickle (torch.save) file; refused, only safetensors is loaded")
        if length is None:
            raise CheckpointError(f"{path}: not a safetensors file (too short: {size} bytes)")
        if length > size - 8 or length > MAX_HEADER:
            raise CheckpointError(f"{path}: not a safetensors file (header length {length} exceeds the file)")
        raise CheckpointError(f"{path}: not a safetensors file (the header does not start with '{{')")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header: {err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: malformed header (a JSON {type(header).__name__}, not an object)")
    data_size = size - 8 - length
    base = 8 + length
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{path}: malformed header (__metadata__ must map strings to strings)")
    entries = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        where = f"{path}: tensor {key!r}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{where}: its entry is a {type(info).__name__}, not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise CheckpointError(f"{where} has an unsupported dtype {dtype!r} (known: {', '.join(ITEMSIZE)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
            raise CheckpointError(f"{where}: data_offsets {offsets!r} are not two non-negative integers")
        begin, end = offsets
        if end < begin:
            raise CheckpointError(f"{where}: data_offsets {offsets} end before they begin")
        expected = math.prod(shape) * ITEMSIZE[dtype]
        if end - begin != expected:
            raise CheckpointError(
                f"{where}: data_offsets {offsets} span {end - begin} bytes, but shape {shape} of {dtype} "
                f"needs {expected}"
            )
        entries.append((begin, end, key, TensorInfo(path, dtype, tuple(shape), base + begin, end - begin)))
    entries.sort(key=lambda e: (e[0], e[1]))
    position = 0
    for begin, end, key, _ in entries:
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else "leaves a gap after the previous tensor"
            raise CheckpointError(f"{path}: tensor {key!r} at data_offsets [{begin}, {end}] {what}")
        if end > data_size:
            raise CheckpointError(f"{path}: tensor {key!r} runs past the end of the file (truncated?)")
        position = end
    if position != data_size:
        raise CheckpointError(
            f"{path}: {data_size - position} bytes after the last tensor (the data must end with the file)"
        )
    return {key: info for _, _, key, info in entries}


def _shard_path(index_file: Path, name: object) -> Path:
    """The shard an index entry names, refused unless it is a relative path inside the index's folder."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{index_file}: shard name {name!r} is not a file name")
    parts = PurePosixPath(name.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or Path(name).is_absolute():
        raise CheckpointError(f"{index_file}: shard {name!r} lies outside the checkpoint's folder; refused")
    folder = index_file.parent
    path = folder / Path(*parts.parts)
    if path.exists() and not path.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(f"{index_file}: shard {name!r} links outside the checkpoint's folder; refused")
    return path


class Checkpoint:
    """A safetensors checkpoint opened lazily: a file, a folder with one, or a sharded Hugging Face layout.

    ``shard_names[file]`` is the name of each file relative to the checkpoint's folder, as the index gives it
    (``model.safetensors`` or the file's own name for a single file).
    """

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
            if not self.path.is_file():
                raise CheckpointError(f"{self.path}: no such file")
        elif not self.path.exists():
            raise CheckpointError(f"{self.path}: no such file or folder")
        else:
            self.files = [self.path]
        self.weight_map: dict[str, str] | None = None
        self.shard_names: dict[Path, str] = {}
        if self.index_file is not None:
            self.weight_map = self._read_index()
            for name in dict.fromkeys(self.weight_map.values()):
                file = _shard_path(self.index_file, name)
                if file in self.shard_names:
                    raise CheckpointError(
                        f"{self.index_file}: shards {self.shard_names[file]!r} and {name!r} are one file"
                    )
                self.shard_names[file] = name
            self.files = list(self.shard_names)
        else:
            self.shard_names = {self.files[0]: self.files[0].name}
        self.tensors: dict[str, TensorInfo] = {}
        for file in self.files:
            if self.index_file is not None and not file.is_file():
                raise CheckpointError(f"{self.index_file}: shard {self.shard_names[file]} is missing")
            for key, info in read_header(file).items():
                if key in self.tensors:
                    raise CheckpointError(f"{self.path}: key {key!r} is in two shards")
                self.tensors[key] = info
        if self.weight_map is not None:
            for key, shard in self.weight_map.items():
                if key not in self.tensors or self.shard_names[self.tensors[key].file] != shard:
                    raise CheckpointError(f"{self.index_file}: key {key!r} is not in its shard {shard}")
            extra = [k for k in self.tensors if k not in self.weight_map]
            if extra:
                raise CheckpointError(f"{self.index_file}: shards hold keys the index does not list: {extra[:5]}")
        if not self.tensors:
            raise CheckpointError(f"{self.path}: holds no tensor")

    def _read_index(self) -> dict[str, str]:
        try:
            index = json.loads(self.index_file.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
            weight_map = index["weight_map"]
        except OSError as err:
            raise CheckpointError(f"{self.index_file}: cannot read ({err.strerror})") from None
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise CheckpointError(f"{self.index_file}: not a valid index (needs a 'weight_map'): {err}") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{self.index_file}: empty or malformed weight_map")
        bad = [k for k, v in weight_map.items() if not isinstance(v, str)]
        if bad:
            raise CheckpointError(f"{self.index_file}: weight_map entry {bad[0]!r} is not a shard name")
        return weight_map

    @property
    def sharded(self) -> bool:
        return self.index_file is not None

    @property
    def folder(self) -> Path | None:
        """The folder the checkpoint owns (a sharded layout's or a folder given), None for a single file."""
        if self.index_file is not None:
            return self.index_file.parent
        return self.path if self.path.is_dir() else None

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
