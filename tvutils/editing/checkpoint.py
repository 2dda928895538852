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
header that repeats a key, and anything but a regular file (a FIFO, a device: named as such). Pickle
checkpoints (``.bin``, ``.pt``, ``.ckpt``, …, or a file that is not safetensors and starts like a ``torch.save``
zip or a pickle stream) are refused, since unpickling runs arbitrary code. A folder holding both
``model.safetensors`` and an index is refused as ambiguous. An index must map every key to a shard inside its
own folder (no absolute path, no ``..``, no symbolic link out of it, except the links of the Hugging Face hub
cache, ``<repo>/snapshots/<rev>/`` to ``<repo>/blobs/``); every shard must exist and hold exactly the keys
the index gives it. ``check_unquantized`` refuses scaled float8 and quantized checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_HEADER = 100_000_000  # the safetensors library's limit
# the safetensors dtypes: bytes per element (no torch needed to read or check a file)
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2}
ITEMSIZE.update({"I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1})
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
_TORCH_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "BOOL": "bool"}
_TORCH_NAMES.update({"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"})
_TORCH_NAMES.update({k: ("int" if k[0] == "I" else "uint") + k[1:] for k in ITEMSIZE if k[0] in "IU"})


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


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"))
_KINDS += ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _regular_size(path: Path, st: os.stat_result) -> int:
    """The size of a regular file; anything else is refused naming what it is (a checkpoint is read by offset)."""
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise CheckpointError(f"{path}: {what}, not a regular file; a checkpoint must be a file")
    return st.st_size


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
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once (and is refused next)
    except FileNotFoundError:
        link = f" (a link to the missing {os.readlink(path)})" if os.path.islink(path) else ""
        raise CheckpointError(f"{path}: no such file{link}") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    try:
        size = _regular_size(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    try:
        with open(fd, "rb", closefd=True) as fh:
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
    if path.exists():
        real = path.resolve()
        blobs = hub_blobs(folder)
        if not real.is_relative_to(folder.resolve()) and not (blobs is not None and real.is_relative_to(blobs)):
            raise CheckpointError(f"{index_file}: shard {name!r} links outside the checkpoint's folder; refused")
    return path


def hub_blobs(folder: Path) -> Path | None:
    """The ``blobs`` folder of the Hugging Face hub cache that ``folder`` lies in (``<repo>/snapshots/<rev>/…``,
    whose files link to ``<repo>/blobs/<hash>``), resolved; None outside that layout."""
    for where in dict.fromkeys((folder.absolute(), folder.resolve())):
        for anc in (where, *where.parents):
            if anc.parent.name == "snapshots" and (anc.parent.parent / "blobs").is_dir():
                return (anc.parent.parent / "blobs").resolve()
    return None


class Checkpoint:
    """A safetensors checkpoint opened lazily: a file, a folder with one, or a sharded Hugging Face layout.

    ``shard_names[file]`` is the name of each file relative to the checkpoint's folder, as the index gives it
    (``model.safetensors`` or the file's own name for a single file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.index_file: Path | None = None
        if self.path.is_dir():
            index, single = self.path / INDEX_NAME, self.path / SINGLE_NAME
            if os.path.lexists(index) and os.path.lexists(single):  # transformers would load model.safetensors
                raise CheckpointError(
                    f"{self.path}: holds both {SINGLE_NAME} and {INDEX_NAME}, which may differ; refused as "
                    f"ambiguous. Give the one to merge: {single} or {index}"
                )
            if os.path.lexists(index):
                self.index_file = index
            elif os.path.lexists(single):
                self.files = [single]
            elif (self.path / "adapter_config.json").is_file():
                raise CheckpointError(f"{self.path}: an adapter (adapter_config.json), not a full checkpoint")
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
            if not os.path.lexists(self.path):
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
            if self.index_file is not None and not os.path.lexists(file):
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
            _regular_size(self.index_file, os.stat(self.index_file))
        except OSError as err:
            raise CheckpointError(f"{self.index_file}: cannot read ({err.strerror})") from None
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


def check_unquantized(ck: Checkpoint) -> None:
    """Refuse quantized weights whose values are codes times scales stored apart: block-scaled float8 (a float8
    ``K`` with ``K_scale_inv`` or ``K_scale``, as DeepSeek-V3 and most FP8 releases ship), or a folder whose
    config.json declares a ``quantization_config``. Merging codes and scales each on their own is not a merge of
    the weights. Float8 tensors without scales are plain numbers and merge."""
    keys = ck.tensors
    for key, info in keys.items():
        if info.dtype.startswith("F8_"):
            stem = key.removesuffix(".weight")
            scales = [k for k in keys if k != key and k.startswith((key + "_scale", stem + ".scale"))]
            if scales:
                raise CheckpointError(
                    f"{ck.path}: tensor {key!r} is scaled float8 (its scales: {scales[0]!r}); merging the codes "
                    "and the scales apart is not a merge of the weights: refused. Dequantize it first"
                )
    config = ck.folder / "config.json" if ck.folder is not None else None
    if config is not None and config.is_file():
        try:
            quant = json.loads(config.read_text(encoding="utf-8")).get("quantization_config")
        except (OSError, ValueError, AttributeError):
            return  # not a config this check can read; the tensors were checked above
        if quant:
            method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
            raise CheckpointError(
                f"{ck.path}: a quantized checkpoint (config.json: quantization_config, quant_method {method!r}); "
                "refused, as merging quantized codes is not a merge of the weights. Dequantize it first"
            )
