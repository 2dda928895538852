"""Streaming task arithmetic on safetensors checkpoints (``python -m tvutils merge``).

    OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE)

for safetensors checkpoints, a single file or a sharded Hugging Face layout (``model.safetensors.index.json``),
computed one tensor at a time: each tensor is read from disk into a buffer that is reused for the next one, so
memory stays near three times the largest tensor (base, one fine-tuned copy, the result), whatever the number of
models. Pickle checkpoints (``.bin``, ``.pt``, ``.ckpt``, …) are refused: unpickling runs arbitrary code.

Everything that can be checked is checked before a byte is written: the λ count, that every shard exists and
is a well-formed safetensors file, and that all checkpoints have the same keys, shapes and dtypes. The output
is written under a temporary name and renamed at the end, so an interrupted merge leaves no partial output.
A sharded base gives a sharded output with the same shard names and an index.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from .checkpoint import (
    DTYPES,
    INDEX_NAME,
    PICKLE_SUFFIXES,
    SINGLE_NAME,
    Checkpoint,
    CheckpointError,
    TensorInfo,
    check_same_layout,
)
from .variants import entry_mask, rank_k, row_mask


def delta_transform(
    rank: int | None = None, keep_rows: float | None = None, keep_entries: float | None = None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The task-vector variant applied to each difference Aᵢ − BASE (tensors of ≥ 2 dims; vectors are kept).

    rank: best rank-k approximation (Corollary 1); keep_rows / keep_entries: keep that fraction of rows of
    largest norm / entries of largest magnitude (Corollary 2), via ``tvutils.editing.variants``.
    """
    if rank is not None and rank < 1:
        raise CheckpointError(f"rank must be ≥ 1, got {rank}")
    for name, frac in (("keep_rows", keep_rows), ("keep_entries", keep_entries)):
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise CheckpointError(f"{name} must be in [0, 1], got {frac}")
    if rank is None and keep_rows is None and keep_entries is None:
        return None

    def transform(delta: torch.Tensor) -> torch.Tensor:
        if rank is not None and delta.ndim >= 2:
            delta = rank_k(delta, rank)
        if keep_rows is not None and delta.ndim >= 2:
            delta = delta * row_mask(delta, keep_rows).reshape(-1, *([1] * (delta.ndim - 1)))
        if keep_entries is not None:
            delta = delta * entry_mask(delta, keep_entries)
        return delta

    return transform


class _Reader:
    """Reads tensors into one reused buffer (no memory map: arithmetic on mapped pages copies them one by one)."""

    def __init__(self, capacity: int) -> None:
        self.buffer = torch.empty(capacity, dtype=torch.uint8)
        self.view = memoryview(self.buffer.numpy())
        self.handles: dict[Path, object] = {}

    def read(self, info: TensorInfo) -> torch.Tensor:
        fh = self.handles.get(info.file)
        if fh is None:
            fh = self.handles[info.file] = open(info.file, "rb")  # noqa: SIM115 (closed in close())
        fh.seek(info.start)
        if fh.readinto(self.view[: info.nbytes]) != info.nbytes:
            raise CheckpointError(f"{info.file}: short read (file changed or truncated?)")
        return self.buffer[: info.nbytes].view(DTYPES[info.dtype]).view(info.shape)

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()


def _write_header(fh, infos: dict[str, TensorInfo], metadata: dict[str, str] | None) -> None:
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key, info in infos.items():
        header[key] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    fh.write(struct.pack("<Q", len(raw)))
    fh.write(raw)


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
) -> Path:
    """Write OUT = BASE + Σᵢ λᵢ (Aᵢ − BASE), streaming one tensor at a time; returns the path written.

    A single-file base gives a single file (OUT, or OUT/model.safetensors when OUT is not a ``.safetensors``
    path); a sharded base gives a folder OUT with the base's shard names and index. Non-float tensors must be
    equal in every checkpoint and are copied from the base. Float16/bfloat16 tensors are merged in float32.
    ``fsync=False`` skips flushing each file to disk before the rename: still no partial output if the process
    is interrupted, but a power loss may leave a complete-looking file with missing data.
    """
    if len(finetuned) == 0:
        raise CheckpointError("give at least one fine-tuned checkpoint")
    if len(lambdas) != len(finetuned):
        raise CheckpointError(f"{len(finetuned)} fine-tuned checkpoint(s) but {len(lambdas)} λ value(s)")
    transform = delta_transform(rank, keep_rows, keep_entries)
    base_ck = Checkpoint(base)
    tuned = [Checkpoint(p) for p in finetuned]
    check_same_layout(base_ck, tuned)
    out = Path(out)
    if base_ck.sharded or out.suffix != ".safetensors":
        target, single = out, None  # a folder
    else:
        target, single = out, out.name
    inputs = {p.resolve() for ck in (base_ck, *tuned) for p in (ck.path, *ck.files)}
    if target.resolve() in inputs or any(target.resolve() in p.parents for p in inputs):
        raise CheckpointError(f"{target}: the output would overwrite an input")
    if target.exists() and not overwrite:
        raise CheckpointError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")

    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    try:
        if single is not None:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            _stream(base_ck, tuned, lambdas, transform, {tmp: base_ck.tensors}, log, fsync)
        else:
            tmp.mkdir(parents=True)
            layout = {tmp / f.name: {k: i for k, i in base_ck.tensors.items() if i.file == f} for f in base_ck.files}
            if not base_ck.sharded:
                layout = {tmp / SINGLE_NAME: base_ck.tensors}
            _stream(base_ck, tuned, lambdas, transform, layout, log, fsync)
            if base_ck.sharded:
                total = sum(i.nbytes for i in base_ck.tensors.values())
                index = {"metadata": {"total_size": total}, "weight_map": dict(base_ck.weight_map)}
                (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
            if base_ck.path.is_dir():  # config, tokenizer: every small non-weight file of the base folder
                for extra in base_ck.path.iterdir():
                    weights = extra.suffix in (".safetensors", *PICKLE_SUFFIXES) or extra.name == INDEX_NAME
                    if extra.is_file() and not weights:
                        shutil.copy2(extra, tmp / extra.name)
        if target.exists():  # overwrite: move the old one aside only now that the new one is complete
            old = target.with_name(f".{target.name}.old{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return target / SINGLE_NAME if single is None and not base_ck.sharded else target


def _stream(
    base: Checkpoint,
    tuned: list[Checkpoint],
    lambdas: Sequence[float],
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
    layout: dict[Path, dict[str, TensorInfo]],
    log: Callable[[str], None] | None,
    fsync: bool = True,
) -> None:
    """Merge tensor by tensor into the files of ``layout`` (path → the base's tensors it holds, in order).

    A writer thread writes tensor t while tensor t+1 is computed, so two result buffers take turns. Without a
    variant, the merge is (1 − Σλᵢ)·BASE + Σ λᵢ Aᵢ: one pass per checkpoint, as each pass costs a trip through
    memory (equal to BASE + Σ λᵢ (Aᵢ − BASE) up to float rounding; the variants need the differences).
    torch's intra-op threads are off meanwhile (restored after): the arithmetic is memory-bound, and splitting
    each operation between threads while the writer holds a core made it several times slower.
    """
    largest = max(i.nbytes for i in base.tensors.values())
    largest_numel = max(i.nbytes // DTYPES[i.dtype].itemsize for i in base.tensors.values())
    base_reader, tuned_reader = _Reader(largest), _Reader(largest)
    results = [torch.empty(largest, dtype=torch.uint8) for _ in range(2)]  # the output bytes, two in turn
    scratch: dict[torch.dtype, torch.Tensor] = {}  # float32 work space for float16/bfloat16 tensors
    writer = ThreadPoolExecutor(1)
    pending: list[Future] = []
    turn = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def wait() -> None:
        while pending:
            pending.pop(0).result()  # re-raises a failed write here

    try:
        for path, infos in layout.items():
            fh = open(path, "wb")  # noqa: SIM115 (closed by the writer thread, after its last write)
            _write_header(fh, infos, {"format": "pt"})
            for key, info in infos.items():
                b = base_reader.read(info)
                out = results[turn][: info.nbytes]
                if not b.is_floating_point():
                    for ck in tuned:
                        if not torch.equal(tuned_reader.read(ck.tensors[key]), b):
                            raise CheckpointError(f"{ck.path}: non-float tensor {key!r} differs from the base")
                    out.copy_(base_reader.buffer[: info.nbytes])
                else:
                    work = b.dtype if b.dtype in (torch.float32, torch.float64) else torch.float32
                    if work == b.dtype:
                        acc = out.view(work).view(b.shape)
                    else:
                        if work not in scratch:
                            scratch[work] = torch.empty(largest_numel, dtype=work)
                        acc = scratch[work][: b.numel()].view(b.shape)
                    if transform is None:
                        torch.mul(b, 1.0 - sum(float(lam) for lam in lambdas), out=acc)
                    else:
                        acc.copy_(b)
                    for ck, lam in zip(tuned, lambdas):
                        a = tuned_reader.read(ck.tensors[key])
                        if transform is None:
                            acc.add_(a, alpha=float(lam))
                            continue
                        delta = a.sub_(b) if a.dtype == work else a.to(work).sub_(b.to(work))  # in the reader's buffer
                        acc.add_(transform(delta), alpha=float(lam))
                    if work != b.dtype:
                        out.view(b.dtype).copy_(acc.view(-1))
                wait()  # the previous tensor is written: its buffer is free for the next one
                pending.append(writer.submit(fh.write, memoryview(out.numpy())))
                turn ^= 1
            pending.append(writer.submit(_finish, fh, fsync))
            if log is not None:
                wait()
                log(f"wrote {path.name} ({len(infos)} tensors)")
        wait()
    finally:
        for job in pending:  # on an error: let the writer finish, then close what it had open
            try:
                job.result()
            except Exception:  # noqa: BLE001 (the error that matters is the one being raised)
                pass
        writer.shutdown(wait=True)
        torch.set_num_threads(threads)
        base_reader.close()
        tuned_reader.close()


def _finish(fh, fsync: bool) -> None:
    try:
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    finally:
        fh.close()
