"""Streaming task arithmetic on safetensors checkpoints (``python -m tvutils merge``).

    OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE)

for safetensors checkpoints, a single file or a sharded Hugging Face layout (``model.safetensors.index.json``).

**The contract.**

* *Validated before any output exists* (a temporary one included): the λ count, that every λ is finite and
  within float32's range; that every file is a well-formed safetensors file by the format's rules (see
  ``tvutils.editing.checkpoint``: offsets contiguous from 0 in order, sizes equal to shape × dtype size, no
  negative dimension, no data beyond the file, …) and not a pickle; that an index names only shards inside its
  own folder, each existing and holding exactly its keys; that all checkpoints have the same keys, shapes and
  dtypes; that OUT is not an input, inside an input's folder, or a folder holding one; that OUT does not exist
  (without ``overwrite``) and, with it, has the kind (file or folder) the merge writes.
* *Checked while merging*, before the output is published: non-float tensors (position ids, masks) equal in
  every checkpoint; every value of every input finite, and every merged value finite in the output dtype
  (a NaN or Inf is reported with its key and checkpoint; ``allow_nonfinite=True`` / ``--allow-nonfinite`` lets
  them through).
* *The arithmetic*: in float32 for every float dtype (float64 for float64 tensors), as BASE + Σᵢ λᵢ (Aᵢ − BASE),
  rounded once to the output dtype: the base's, or ``dtype`` (``--dtype``) for every float tensor. Non-float
  tensors are copied from the base.
* *Atomic*: the output is written under a hidden temporary name beside OUT (``.OUT.tvmerge-PID-XXXX.tmp``) and
  appears only by one rename that does not replace anything (``renameat2(RENAME_NOREPLACE)``; where the
  filesystem lacks it, a hard link for a file or an exclusive ``mkdir`` for a folder): two merges into one OUT
  never both succeed, and a file or folder that appeared at OUT meanwhile is left as it is (the merge fails).
  An interrupted merge (an exception, Ctrl-C, SIGTERM or SIGHUP through the command line) removes its
  temporary output; one killed outright (SIGKILL, power loss) leaves it, and the next merge into the same OUT
  removes it (each run holds a lock on its own temporary output, so a live one's is never touched).
  With ``fsync`` (the default) every file and folder is flushed to disk before it is published.
* *``overwrite``* replaces only what the merge writes: a file OUT by one atomic rename; in a folder OUT, the
  files the merge writes (shards, index, the base folder's config files) one by one, each by an atomic rename,
  the index last; other files there are kept. A folder OUT holding other weight files (which a loader could
  pick up instead of the new ones) is refused, as are a file where the merge writes a folder and the reverse.
* *Errors* are one line (``CheckpointError``) naming the file, key or path and the cause, OS errors (disk
  full, read-only filesystem, …) included.

Memory: the plain merge works in chunks of ``CHUNK`` elements (a few MB whatever the model); the variants
(``rank``, ``keep_rows``, ``keep_entries``) need whole tensors: five buffers of the largest tensor (BASE, Dᵢ,
ACC in the work dtype; two for the output, each written while the next tensors are computed) and the rank
factors. Pickle checkpoints (``.bin``, ``.pt``, ``.ckpt``, …) are refused: unpickling runs arbitrary code.

The merge runs on numpy (the variants' kernels: ``tvutils.editing.fast``), not torch: ``import torch`` takes a
second or two, as long as the whole plain merge of a 1 GB checkpoint. bfloat16 is converted by bit arithmetic
(rounded to nearest, ties to even, as torch rounds: tested bit for bit on every value and tie); only float8
tensors import torch, to convert them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import importlib
import json
import math
import os
import secrets
import shutil
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .checkpoint import (
    FLOAT_DTYPES,
    INDEX_NAME,
    ITEMSIZE,
    PICKLE_SUFFIXES,
    SINGLE_NAME,
    Checkpoint,
    CheckpointError,
    TensorInfo,
    check_same_layout,
)
from .fast import (
    SAMPLE,
    check_fraction,
    kept_count,
    kth_largest_selection,
    largest_rows,
    rank_k_factors,
    sample_positions,
    sketch_matrix,
)

CHUNK = 1 << 18  # elements per chunk of the plain merge (1 MB of float32: stays in the CPU's caches)
WRITE = 8 << 20  # bytes per write (few hand-offs to the writer thread, each of which waits for the GIL)
OUT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
FLOAT32_MAX = float(np.finfo(np.float32).max)
_TMP = ".tvmerge-"


def delta_transform(
    rank: int | None = None, keep_rows: float | None = None, keep_entries: float | None = None
) -> tuple[int | None, float | None, float | None] | None:
    """The task-vector variant applied to each difference Aᵢ − BASE, checked: None for the plain merge.

    rank: rank-k approximation of each tensor of ≥ 2 dims (Corollary 1; ``variants.rank_k_factors``: the
    exact SVD for small matrices, a seeded randomized subspace iteration otherwise); keep_rows: keep that
    fraction of rows of largest norm (tensors of ≥ 2 dims; ``variants.row_mask``); keep_entries: keep that
    fraction of entries of largest magnitude (every tensor; the mask of ``variants.entry_mask``), applied in
    this order.
    """
    if rank is None and keep_rows is None and keep_entries is None:
        return None
    if rank is not None and rank < 1:
        raise CheckpointError(f"rank must be ≥ 1, got {rank}")
    for name, frac in (("keep_rows", keep_rows), ("keep_entries", keep_entries)):
        if frac is not None:
            try:
                check_fraction(frac)
            except ValueError:
                raise CheckpointError(f"{name} must be in [0, 1], got {frac}") from None
    return rank, keep_rows, keep_entries


# ---- the output: planned and checked first, published by one rename that replaces nothing ---------------------------
_RENAME_NOREPLACE = 1
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):  # not glibc / not Linux
    _renameat2 = None


def _rename_noreplace(src: Path, dst: Path, is_dir: bool) -> None:
    """Rename src to dst unless dst exists (FileExistsError); never replaces anything."""
    if _renameat2 is not None:
        if _renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if not is_dir:  # a hard link is created exclusively
        os.link(src, dst)
        os.unlink(src)
        return
    os.mkdir(dst)  # exclusive; then the entries move in
    for entry in os.listdir(src):
        os.rename(src / entry, dst / entry)
    os.rmdir(src)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _lock(path: Path) -> int | None:
    """An exclusive lock on a file or folder (held while the fd is open); None if someone else holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_leftovers(target: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporary outputs of merges into ``target`` that were killed (no live process locks them)."""
    removed = []
    folder = target.parent
    if not folder.is_dir():
        return removed
    prefix = f".{target.name}{_TMP}"
    for entry in folder.iterdir():
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            fd = _lock(entry)
        except OSError:
            continue
        if fd is None:
            continue  # a merge that is running
        try:
            _remove(entry)
            removed.append(entry)
        finally:
            os.close(fd)
        if log is not None:
            log(f"removed {entry.name}, the leftover of a merge that was killed")
    return removed


def _is_weight(name: str) -> bool:
    lower = name.lower()
    return lower.endswith((".safetensors", ".index.json", *PICKLE_SUFFIXES))


def _check_target(target: Path, folder_out: bool, names: list[str], cks: list[Checkpoint], overwrite: bool) -> bool:
    """Refuse an OUT that is or holds an input or lies in an input's folder; True when OUT exists (overwrite)."""
    if target.name in ("", ".", ".."):
        raise CheckpointError(f"{target}: not a name an output can be written under")
    real = Path(os.path.realpath(target))
    for parent in target.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise CheckpointError(f"{parent}: not a folder, so {target} cannot be written")
            break
    for ck in cks:
        owned = [Path(os.path.realpath(p)) for p in (ck.path, *ck.files)]
        if ck.folder is not None:
            owned.append(Path(os.path.realpath(ck.folder)))
        for p in owned:
            if real == p:
                raise CheckpointError(f"{target}: the output would overwrite the input {p}")
            if p.is_relative_to(real):
                raise CheckpointError(f"{target}: the output folder holds the input {p}; choose another OUT")
        if ck.folder is not None and real.is_relative_to(os.path.realpath(ck.folder)):
            raise CheckpointError(f"{target}: the output would be written inside the input checkpoint {ck.folder}")
    if not os.path.lexists(target):
        return False
    if not overwrite:
        raise CheckpointError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    if folder_out and not target.is_dir():
        raise CheckpointError(f"{target} is a file, and this merge writes a folder; not replaced")
    if not folder_out and (target.is_dir() or not target.is_file()):
        raise CheckpointError(f"{target} is not a regular file, and this merge writes one; not replaced")
    if folder_out:
        written = {n.split("/")[0] for n in names}
        others = sorted(p.name for p in target.iterdir() if _is_weight(p.name) and p.name not in written)
        if others:
            raise CheckpointError(
                f"{target} holds weight files this merge would not replace ({', '.join(others[:5])}); a loader "
                "could take them for the merged model. Remove them, or choose another OUT"
            )
    return True


# ---- the merge ---------------------------------------------------------------------------------------------------------
def _lambda_list(lambdas: Sequence[float]) -> list[float]:
    out = []
    for lam in lambdas:
        try:
            lam = float(lam)
        except (TypeError, ValueError):
            raise CheckpointError(f"λ {lam!r} is not a number") from None
        if not math.isfinite(lam) or abs(lam) > FLOAT32_MAX:
            raise CheckpointError(f"λ = {lam} is not a finite float32 number; refused")
        out.append(lam)
    return out


def _out_dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    name = OUT_DTYPES.get(str(dtype).removeprefix("torch."), str(dtype).upper())
    if name not in OUT_DTYPES.values():
        raise CheckpointError(f"dtype {dtype!r} is not an output dtype ({', '.join(OUT_DTYPES)})")
    return name


def _preload(module: str) -> None:
    """Import a module in the background; an error is left for the import that needs it to report."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001
        pass


def merge_checkpoints(
    base: str | Path,
    finetuned: Sequence[str | Path],
    lambdas: Sequence[float],
    out: str | Path,
    rank: int | None = None,
    keep_rows: float | None = None,
    keep_entries: float | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    fsync: bool = True,
    dtype: str | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Write OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE), streamed; returns the path written. The contract: module docstring.

    A single-file base gives a single file (OUT, or OUT/model.safetensors when OUT is not a ``.safetensors``
    path); a sharded base gives a folder OUT with the base's shard names and index. ``dtype``: "float32",
    "bfloat16", "float16" or "float64" for every float tensor of the output (default: each tensor's own).
    ``fsync=False`` skips flushing to disk before the rename: still no partial output if the process is
    interrupted, but a power loss may leave a complete-looking output with missing data.
    """
    if len(finetuned) == 0:
        raise CheckpointError("give at least one fine-tuned checkpoint")
    if len(lambdas) != len(finetuned):
        raise CheckpointError(f"{len(finetuned)} fine-tuned checkpoint(s) but {len(lambdas)} λ value(s)")
    lams = _lambda_list(lambdas)
    out_dtype = _out_dtype(dtype)
    transform = delta_transform(rank, keep_rows, keep_entries)
    if keep_entries is not None:  # load the compiled kernels (half a second) while the inputs are checked
        threading.Thread(target=_preload, args=(f"{__package__}._select_kernel",), daemon=True).start()
    base_ck = Checkpoint(base)
    tuned = [Checkpoint(p) for p in finetuned]
    check_same_layout(base_ck, tuned)

    target = Path(os.path.abspath(out))
    folder_out = base_ck.sharded or target.suffix != ".safetensors"
    if base_ck.sharded:
        layout = {base_ck.shard_names[f]: [k for k, i in base_ck.tensors.items() if i.file == f] for f in base_ck.files}
    else:
        layout = {SINGLE_NAME if folder_out else "": list(base_ck.tensors)}
    extras = []
    if folder_out and base_ck.folder is not None:  # config, tokenizer: every non-weight file of the base folder
        extras = sorted(p for p in base_ck.folder.iterdir() if p.is_file() and not _is_weight(p.name))
    names = [*layout, *(p.name for p in extras)] + ([INDEX_NAME] if base_ck.sharded else [])
    exists = _check_target(target, folder_out, names if folder_out else [], [base_ck, *tuned], overwrite)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(target, log)
        tmp = target.parent / f".{target.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}.tmp"
        _create(tmp, folder_out)
    except OSError as err:
        raise _os_error(err, target) from None
    lock = None
    try:
        lock = _lock(tmp)
        files = {(tmp / name if folder_out else tmp): keys for name, keys in layout.items()}
        merger = _Merger(base_ck, tuned, lams, transform, out_dtype, allow_nonfinite, fsync, log)
        merger.run(files)
        if folder_out:
            if base_ck.sharded:
                total = sum(merger.out_nbytes.values())
                index = {"metadata": {"total_size": total}, "weight_map": dict(base_ck.weight_map)}
                _write_small(tmp / INDEX_NAME, (json.dumps(index, indent=2) + "\n").encode(), fsync)
            for extra in extras:
                shutil.copy2(extra, tmp / extra.name)
                if fsync:
                    _fsync_path(tmp / extra.name)
            if fsync:
                _fsync_path(tmp)
        _publish(tmp, target, folder_out, exists, names)
        if fsync:
            _fsync_path(target.parent)
    except OSError as err:
        raise _os_error(err, target) from None
    finally:
        if lock is not None:
            os.close(lock)
        if os.path.lexists(tmp):
            _remove(tmp)
    if folder_out and not base_ck.sharded:
        return target / SINGLE_NAME
    return target


def _create(tmp: Path, folder: bool) -> None:
    """Create the temporary output exclusively (the one place it is created; tests hook it to simulate errors)."""
    if folder:
        os.mkdir(tmp)
    else:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _publish(tmp: Path, target: Path, folder_out: bool, exists: bool, names: list[str]) -> None:
    if not exists:
        try:
            _rename_noreplace(tmp, target, folder_out)
        except FileExistsError:
            raise CheckpointError(
                f"{target} appeared while this merge ran (another merge?); it was left as it is and nothing was "
                "written; pass --overwrite to replace it"
            ) from None
        return
    if not folder_out:
        os.replace(tmp, target)
        return
    for name in sorted(names, key=lambda n: n == INDEX_NAME):  # shards and extras first, the index last
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if (target / name).is_dir() and not (target / name).is_symlink():
            raise CheckpointError(f"{target / name} is a folder; not replaced")
        os.replace(tmp / name, target / name)


def _os_error(err: OSError, target: Path) -> CheckpointError:
    where = err.filename if err.filename is not None else target
    if err.filename2 is not None:
        where = f"{where} → {err.filename2}"
    return CheckpointError(f"{where}: {err.strerror or err} (while writing {target})")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_small(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as fh:
        _write_all(fh.fileno(), memoryview(data), path)
        if fsync:
            os.fsync(fh.fileno())


def _write_all(fd: int, view: memoryview, path: Path) -> None:
    """Write every byte of view (the one place output bytes are written; tests hook it to simulate errors)."""
    try:
        while len(view):
            view = view[os.write(fd, view) :]
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None


def _header_bytes(items: list[tuple[str, TensorInfo, str]], metadata: dict[str, str]) -> tuple[bytes, int]:
    """The header of an output file holding (key, base info, output dtype) in this order; and its data size."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for key, info, dt in items:
        n = info.numel * ITEMSIZE[dt]
        header[key] = {"dtype": dt, "shape": list(info.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw, offset


# ---- the dtypes: decoded to the work dtype and encoded from it with numpy (torch only for float8) ------------------
_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
_INF_BITS = {"BF16": 0x7F80, "F16": 0x7C00}  # |bits| ≥ these: Inf or NaN


def _work_dtype(in_name: str, out_name: str) -> type:
    """float32 for every float dtype; float64 where the input or the output is float64."""
    return np.float64 if "F64" in (in_name, out_name) else np.float32


def _torch_view(raw: np.ndarray, name: str):  # noqa: ANN202 (a float8 tensor; torch imported only here)
    import torch

    from .checkpoint import DTYPES

    return torch.from_numpy(raw).view(DTYPES[name])


def _decode(raw: np.ndarray, name: str, out: np.ndarray) -> np.ndarray:
    """The values of ``raw`` (bytes of a float tensor of dtype ``name``) in ``out``'s float dtype, written there."""
    if name == "BF16":  # bfloat16 is the top half of a float32
        if out.dtype == np.float32:
            np.left_shift(raw.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)
        else:
            out[:] = np.left_shift(raw.view(np.uint16), 16, dtype=np.uint32).view(np.float32)
    elif name in _NUMPY:
        np.copyto(out, raw.view(_NUMPY[name]))
    else:
        np.copyto(out, _torch_view(raw, name).float().numpy())
    return out


def _encode(values: np.ndarray, name: str, raw: np.ndarray, scratch: np.ndarray) -> None:
    """Round ``values`` (float32 or float64) once to dtype ``name``, into the bytes ``raw``, as torch rounds: to
    nearest, ties to even; NaN stays NaN (bfloat16: a quiet NaN with the value's sign and top payload bits).
    ``scratch``: a uint32 buffer at least as long as ``values``."""
    if name == "BF16":
        if values.dtype != np.float32:
            values = values.astype(np.float32)  # as torch does: float64 → float32 → bfloat16
        bits, t = values.view(np.uint32), scratch[: values.size]
        np.right_shift(bits, 16, out=t)
        np.bitwise_and(t, 1, out=t)
        t += 0x7FFF
        t += bits  # no wrap-around: only NaNs lie above 0xFF800000
        np.right_shift(t, 16, out=t)
        out = raw.view(np.uint16)
        np.copyto(out, t, casting="unsafe")
        nan = np.isnan(values)
        if nan.any():
            out[nan] = (bits[nan] >> 16).astype(np.uint16) | 0x40
    elif name in _NUMPY:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow to Inf is reported by the check
            np.copyto(raw.view(_NUMPY[name]), values, casting="unsafe")
    else:
        import torch

        _torch_view(raw, name).copy_(torch.from_numpy(values))


def _all_finite(values: np.ndarray, name: str) -> bool:
    """Whether every value is finite: ``values`` in a float dtype, or the raw bytes of dtype ``name``."""
    if values.dtype == np.uint8:
        if name in _INF_BITS:
            return int(np.bitwise_and(values.view(np.uint16), 0x7FFF).max(initial=0)) < _INF_BITS[name]
        if name not in _NUMPY:
            return bool(_torch_view(values, name).float().isfinite().all())
        values = values.view(_NUMPY[name])
    if not values.size:
        return True
    return math.isfinite(float(values.min())) and math.isfinite(float(values.max()))  # NaN propagates


class _Merger:
    """The merge proper: reads chunks (or whole tensors, for the variants), computes, hands bytes to a writer."""

    def __init__(self, base, tuned, lambdas, transform, out_dtype, allow_nonfinite, fsync, log) -> None:
        self.base, self.tuned, self.lambdas = base, tuned, lambdas
        self.transform, self.out_dtype, self.allow, self.fsync, self.log = (
            transform,
            out_dtype,
            allow_nonfinite,
            fsync,
            log,
        )
        self.whole: dict[object, tuple | None] = {}
        self.fds: dict[Path, int] = {}  # inputs
        self.out_fds: set[int] = set()  # outputs not yet closed
        self.out_nbytes: dict[Path, int] = {}
        self.writer = ThreadPoolExecutor(1)
        self.pending: list[Future] = []
        # the output is gathered into buffers of WRITE bytes, each written by one job while the next fills
        self.out_bufs = [np.empty(WRITE, dtype=np.uint8) for _ in range(3)]
        self.out_jobs: list[Future | None] = [None] * len(self.out_bufs)
        self.out_turn, self.out_fill = 0, 0
        # a variant's output tensors: two buffers in turn, each written while the next tensors are computed
        self.whole_out: list[np.ndarray | None] = [None, None]
        self.whole_jobs: list[list[Future]] = [[], []]
        self.whole_turn = 0
        self.bufs = [np.empty(CHUNK * 8, dtype=np.uint8) for _ in range(3)]  # raw chunks: base, tuned, blame
        self.scratch = np.empty(CHUNK * 2, dtype=np.uint32)  # the bfloat16 rounding
        # per work dtype: BASE, Aᵢ − BASE, ACC (chunks)
        self.work = {d: [np.empty(CHUNK, dtype=d) for _ in range(3)] for d in (np.float32, np.float64)}

    # reading
    def _fd(self, file: Path) -> int:
        fd = self.fds.get(file)
        if fd is None:
            fd = self.fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def _read(self, info: TensorInfo, start: int, nbytes: int, into: np.ndarray) -> np.ndarray:
        """Bytes [start, start + nbytes) of a tensor's data into the byte array ``into``; returns that part."""
        view = memoryview(into)[:nbytes]
        fd, pos, done = self._fd(info.file), info.start + start, 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], pos + done)
            if n == 0:
                raise CheckpointError(f"{info.file}: short read (the file changed or was truncated while merging)")
            done += n
        return into[:nbytes]

    def _as_work(self, info: TensorInfo, s: int, n: int, buf: int, work: np.ndarray) -> np.ndarray:
        """Elements [s, s + n) of a tensor in ``work``'s float dtype, in ``work`` (read straight into it when the
        tensor has that dtype; else through the raw buffer ``self.bufs[buf]``)."""
        isz, out = ITEMSIZE[info.dtype], work[:n]
        if _NUMPY.get(info.dtype) is work.dtype.type:
            self._read(info, s * isz, n * isz, out.view(np.uint8))
            return out
        return _decode(self._read(info, s * isz, n * isz, self.bufs[buf]), info.dtype, out)

    # writing
    def _write(self, fd: int, data: np.ndarray, path: Path) -> Future:
        job = self.writer.submit(_write_all, fd, memoryview(data), path)
        self.pending.append(job)
        return job

    def _region(self, fd: int, path: Path, nbytes: int) -> np.ndarray:
        """The next ``nbytes`` of the output (≤ WRITE), to be filled before the next call: a part of the current
        write buffer, which is handed to the writer once full (or by ``_flush``)."""
        if self.out_fill + nbytes > WRITE:
            self._flush(fd, path)
        start = self.out_fill
        self.out_fill += nbytes
        return self.out_bufs[self.out_turn][start : start + nbytes]

    def _flush(self, fd: int, path: Path) -> None:
        """Hand the current write buffer to the writer; wait until the one to be filled next is written out."""
        if not self.out_fill:
            return
        self.out_jobs[self.out_turn] = self._write(fd, self.out_bufs[self.out_turn][: self.out_fill], path)
        self.out_turn, self.out_fill = (self.out_turn + 1) % len(self.out_bufs), 0
        job, self.out_jobs[self.out_turn] = self.out_jobs[self.out_turn], None
        if job is not None:
            job.result()

    def _whole_output(self, nbytes: int) -> tuple[np.ndarray, list[Future]]:
        """A buffer to round a variant's output tensor into, once the writer is done with what it last held, and
        the list its write jobs go to (two buffers in turn: the writer may lag a tensor behind the computation)."""
        turn, self.whole_turn = self.whole_turn, 1 - self.whole_turn
        jobs = self.whole_jobs[turn]
        for job in jobs:
            job.result()
        jobs.clear()
        buf = self.whole_out[turn]
        if buf is None or buf.size < nbytes:
            self.whole_out[turn] = buf = None
            self.whole_out[turn] = buf = np.empty(nbytes, dtype=np.uint8)
        return buf[:nbytes], jobs

    def _drain(self) -> None:
        while self.pending:
            self.pending.pop(0).result()

    def run(self, files: dict[Path, list[str]]) -> None:
        limits = contextlib.nullcontext()
        if self.transform is not None:  # the variants' linear algebra: every core but the writer's (on two cores,
            # a second BLAS thread that the writer preempts stalls both: measured slower than one)
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(max(1, (os.cpu_count() or 1) - 1), user_api="blas")
        try:
            with limits:
                for path, infos in files.items():
                    self._file(path, infos)
            self._drain()  # the last writes, fsyncs and closes: an error of the writer is raised here
        finally:
            self._drain_quietly()  # on an error: let the writer finish, then close what is open
            self.writer.shutdown(wait=True)
            for fd in (*self.fds.values(), *self.out_fds):
                os.close(fd)

    def _file(self, path: Path, keys: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        items = [(k, self.base.tensors[k], self._dtype_of(self.base.tensors[k])) for k in keys]
        head, data = _header_bytes(items, {"format": "pt"})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.out_fds.add(fd)
        try:
            _write_all(fd, memoryview(head), path)
            for key, info, dt in items:
                if info.numel:
                    self._tensor(fd, path, key, info, dt)
            self._flush(fd, path)
        except BaseException:
            self.out_fill = 0  # what was gathered is dropped with the file
            raise
        # fsync'd and closed by the writer once written, while the next file is computed
        self.pending.append(self.writer.submit(self._close, fd, path))
        self.out_nbytes[path] = data
        if self.log is not None:
            self.log(f"merged {path.name} ({len(keys)} tensors; written out while the next file is computed)")

    def _close(self, fd: int, path: Path) -> None:
        try:
            if self.fsync:
                os.fsync(fd)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from None
        finally:
            self.out_fds.discard(fd)
            os.close(fd)

    def _drain_quietly(self) -> None:
        for job in self.pending:
            try:
                job.result()
            except Exception:  # noqa: BLE001 (re-raised by _drain on the normal path)
                pass
        self.pending.clear()

    def _dtype_of(self, info: TensorInfo) -> str:
        if self.out_dtype is not None and info.dtype in FLOAT_DTYPES:
            return self.out_dtype
        return info.dtype

    def _tensor(self, fd: int, path: Path, key: str, info: TensorInfo, out_name: str) -> None:
        if info.dtype not in FLOAT_DTYPES:
            self._copy_checked(fd, path, info, key)
        elif self.transform is not None:
            self._whole(fd, path, info, key, out_name)
        else:
            self._chunked(fd, path, info, key, out_name)

    def _copy_checked(self, fd: int, path: Path, info: TensorInfo, key: str) -> None:
        step = CHUNK * 8
        for start in range(0, info.nbytes, step):
            n = min(step, info.nbytes - start)
            slot = self._read(info, start, n, self._region(fd, path, n))
            for ck in self.tuned:
                if not np.array_equal(slot, self._read(ck.tensors[key], start, n, self.bufs[1])):
                    raise CheckpointError(f"{ck.path}: non-float tensor {key!r} differs from the base")

    def _chunked(self, fd: int, path: Path, info: TensorInfo, key: str, out_name: str) -> None:
        """OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE) chunk by chunk (CHUNK elements: the buffers stay in the CPU's caches)."""
        work_dt = _work_dtype(info.dtype, out_name)
        bw, dw, aw = self.work[work_dt]
        isz, osz = ITEMSIZE[info.dtype], ITEMSIZE[out_name]
        direct = _NUMPY.get(out_name) is work_dt  # ACC is the output slot itself
        lams = [work_dt(lam) for lam in self.lambdas]  # λ in the work dtype, as torch multiplies by a scalar
        for s in range(0, info.numel, CHUNK):
            n = min(CHUNK, info.numel - s)
            b = self._as_work(info, s, n, 0, bw)
            slot = self._region(fd, path, n * osz)
            acc = slot.view(work_dt) if direct else aw[:n]
            with np.errstate(over="ignore", invalid="ignore"):  # a NaN or Inf is reported (or let through) below
                for i, (ck, lam) in enumerate(zip(self.tuned, lams)):
                    a = self._as_work(ck.tensors[key], s, n, 1, dw)
                    np.subtract(a, b, out=a)
                    if i == 0:
                        np.multiply(a, lam, out=acc)
                    else:
                        np.multiply(a, lam, out=a)
                        np.add(acc, a, out=acc)
                np.add(acc, b, out=acc)
            if not direct:
                _encode(acc, out_name, slot, self.scratch)  # the one rounding to the output dtype
            if not self.allow and not _all_finite(acc if direct else slot, out_name):
                self._blame(key, info, s * isz, n)

    def _check_finite(self, values: np.ndarray, info: TensorInfo, key: str, byte_start: int, n: int) -> None:
        if not _all_finite(values, info.dtype):
            self._blame(key, info, byte_start, n)

    def _blame(self, key: str, info: TensorInfo, byte_start: int, n: int) -> None:
        """Raise naming the checkpoint whose tensor ``key`` holds a NaN or Inf in this range, or the overflow."""
        isz = ITEMSIZE[info.dtype]
        first = byte_start // isz
        values = self.work[np.float64][2]
        for ck in (self.base, *self.tuned):
            for s in range(first, first + n, CHUNK):
                m = min(CHUNK, first + n - s)
                raw = self._read(ck.tensors[key], s * isz, m * isz, self.bufs[2])
                bad = np.flatnonzero(~np.isfinite(_decode(raw, info.dtype, values[:m])))
                if not bad.size:
                    continue
                raise CheckpointError(
                    f"{ck.path}: tensor {key!r} holds non-finite values (first at flat index {s + int(bad[0])}: "
                    f"{float(values[int(bad[0])])}); refused (--allow-nonfinite lets them through)"
                )
        raise CheckpointError(
            f"tensor {key!r} overflows to infinity in the output dtype when merged; refused "
            "(a smaller λ, --dtype float32, or --allow-nonfinite)"
        )

    def _whole_buffers(self, work_dt: type, numel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dᵢ, ACC and BASE buffers of ``numel`` elements, reused from tensor to tensor (fresh large allocations
        are page-faulted and zeroed by the kernel on every touch: seconds per checkpoint)."""
        bufs = self.whole.get(work_dt)
        if bufs is None or bufs[0].size < numel:
            self.whole[work_dt] = None  # free the old ones first
            largest = max(i.numel for i in self.base.tensors.values())
            bufs = self.whole[work_dt] = tuple(np.empty(largest, dtype=work_dt) for _ in range(3))
        return tuple(b[:numel] for b in bufs)

    def _low_rank_into(self, matrix, left, right, lam, acc, first) -> None:  # noqa: ANN001
        """matrix = left·right, or acc (=, +=) λ·left·right, in row blocks of about CHUNK elements."""
        block = max(1, CHUNK // right.shape[1])
        if matrix is None:
            left = lam * left
        for r in range(0, left.shape[0], block):
            if matrix is not None:
                np.matmul(left[r : r + block], right, out=matrix[r : r + block])
            elif first:
                np.matmul(left[r : r + block], right, out=acc[r : r + block])
            else:
                acc[r : r + block] += left[r : r + block] @ right

    def _whole(self, fd: int, path: Path, info: TensorInfo, key: str, out_name: str) -> None:
        """A variant needs each difference Dᵢ = Aᵢ − BASE whole; every pass over it is chunked (cache-sized).

        Per fine-tuned model: Dᵢ into a full buffer (one pass, checked finite; a matrix in blocks of whole rows,
        each block, while in cache, also multiplied into the rank sketch Y = Dᵢ·G, or gathered into the sample
        of ``kth_largest_selection``); the variant on it (rank: ``rank_k_factors`` from Y; rows: Dᵢ's rows
        masked in place; entries: the k-th largest magnitude and its ties by ``kth_largest_selection``); then
        ACC += λᵢ·(kept part of Dᵢ), one pass. Last, OUT = BASE + ACC, rounded once, chunk by chunk. Rank
        alone keeps only each Dᵢ's factors and forms ACC block by block in that last pass. OUT is rounded into
        one of two buffers of its own, which the writer thread writes while the next tensors are computed.
        Memory: three work-dtype buffers (BASE, read once; Dᵢ; ACC) and the two output buffers, of the largest
        tensor's size,
        reused from tensor to tensor.
        """
        work_dt = _work_dtype(info.dtype, out_name)
        numel, isz = info.numel, ITEMSIZE[info.dtype]
        d, acc, base = self._whole_buffers(work_dt, numel)
        rank, keep_rows, keep_entries = self.transform
        rows = info.shape[0] if len(info.shape) >= 2 else 0
        cols = numel // rows if rows else numel
        step = max(1, CHUNK // cols) * cols if rows and cols <= CHUNK else CHUNK  # whole rows where they fit
        g = sketch_matrix(rows, cols, rank, work_dt) if rank is not None and rows else None
        sketch = None if g is None or cols > CHUNK else np.empty((max(rows, cols), g.shape[1]), dtype=work_dt)
        rank_alone = rank is not None and rows and keep_rows is None and keep_entries is None and cols <= CHUNK
        k = numel if keep_entries is None else kept_count(keep_entries, numel)
        gather = rank is None and keep_rows is None and 0 < k < numel and numel > 4 * SAMPLE  # entries alone
        positions = sample_positions(numel) if gather else None
        sample = np.empty(len(range(numel)[positions]), dtype=work_dt) if gather else None
        for s in range(0, numel, step):  # BASE is read once, into memory
            n = min(step, numel - s)
            self._as_work(info, s, n, 0, base[s : s + n])  # straight into the buffer
            if not self.allow:
                self._check_finite(base[s : s + n], info, key, s * isz, n)
        factors, chunk = [], self.work[work_dt][1]
        for i, (ck, lam) in enumerate(zip(self.tuned, self.lambdas)):
            lam = work_dt(lam)
            for s in range(0, numel, step):
                n = min(step, numel - s)
                tuned = self._as_work(ck.tensors[key], s, n, 1, chunk)  # read into a buffer in cache
                part = d[s : s + n]
                with np.errstate(over="ignore", invalid="ignore"):  # reported next (or let through)
                    np.subtract(tuned, base[s : s + n], out=part)  # Dᵢ's memory written once
                if not self.allow:
                    self._check_finite(part, info, key, s * isz, n)
                if sketch is not None:  # Y = D·G (rows ≥ cols) or Dᵀ·G, from this block of rows
                    block, r = part.reshape(-1, cols), s // cols
                    if rows >= cols:
                        np.matmul(block, g, out=sketch[r : r + block.shape[0]])
                    elif s == 0:
                        np.matmul(block.T, g[r : r + block.shape[0]], out=sketch)
                    else:
                        sketch += block.T @ g[r : r + block.shape[0]]
                if sample is not None:  # the sampled entries of this chunk: sample[j] is entry start + j·step
                    j = max(0, -(-(s - positions.start) // positions.step))  # the first at or after s
                    taken = d[positions.start + j * positions.step : s + n : positions.step]
                    sample[j : j + taken.size] = taken
            matrix = d.reshape(rows, cols) if rows else None
            if rank is not None and matrix is not None:
                left, right = (f.astype(work_dt, copy=False) for f in rank_k_factors(matrix, rank, sketch=sketch))
                if rank_alone:  # ACC is formed in the last pass
                    factors.append((lam, left, right))
                    continue
                if keep_rows is None and keep_entries is None:  # a row longer than a chunk: ACC += λ·left·right
                    self._low_rank_into(None, left, right, lam=lam, acc=acc.reshape(matrix.shape), first=i == 0)
                    continue
                self._low_rank_into(matrix, left, right, lam=None, acc=None, first=False)  # the next needs it
            if keep_rows is not None and matrix is not None:
                matrix *= largest_rows(np.sqrt(np.einsum("ij,ij->i", matrix, matrix)), keep_rows)[:, None]
            if 0 < k < numel:
                from ._select_kernel import accumulate_kept

                thr, _, ties = kth_largest_selection(d, k, sample=sample)
                accumulate_kept(d, thr, ties, float(lam), acc, i == 0)
            elif k == 0:
                if i == 0:
                    acc.fill(0)
            else:
                for s in range(0, numel, CHUNK):  # ACC (=, +=) λ·Dᵢ, a cache-sized piece at a time
                    if i == 0:
                        np.multiply(d[s : s + CHUNK], lam, out=acc[s : s + CHUNK])
                    else:
                        np.multiply(d[s : s + CHUNK], lam, out=d[s : s + CHUNK])
                        acc[s : s + CHUNK] += d[s : s + CHUNK]
        if factors:  # one product for all: [λ₁·left₁ | λ₂·left₂ | …] · [right₁; right₂; …]
            lefts = np.concatenate([lam * left for lam, left, _ in factors], axis=1)
            rights = np.concatenate([right for _, _, right in factors], axis=0)
        osz, direct = ITEMSIZE[out_name], _NUMPY.get(out_name) is work_dt
        outs, jobs = self._whole_output(numel * osz)
        self._flush(fd, path)  # the output so far goes first
        written = 0
        for s in range(0, numel, step):
            n = min(step, numel - s)
            part, raw = acc[s : s + n], outs[s * osz : (s + n) * osz]
            if factors:  # rank alone: this block of ACC = Σᵢ λᵢ·leftᵢ·rightᵢ, in a chunk buffer (ACC's own
                part, r = self.work[work_dt][2][:n], s // cols  # memory is never touched: no page faults)
                np.matmul(lefts[r : r + n // cols], rights, out=part.reshape(-1, cols))
            merged = raw.view(work_dt) if direct else part
            with np.errstate(over="ignore", invalid="ignore"):
                np.add(part, base[s : s + n], out=merged)
            if not direct:
                _encode(merged, out_name, raw, self.scratch)  # the one rounding to the output dtype
            if not self.allow and not _all_finite(merged if direct else raw, out_name):
                self._blame(key, info, s * isz, n)
            if (s + n) * osz - written >= WRITE or s + n == numel:  # a write of WRITE bytes or more, or the rest
                jobs.append(self._write(fd, outs[written : (s + n) * osz], path))
                written = (s + n) * osz


__all__ = ["CHUNK", "OUT_DTYPES", "clean_leftovers", "delta_transform", "merge_checkpoints"]
