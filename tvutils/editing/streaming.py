"""Streaming task arithmetic on safetensors checkpoints (``python -m tvutils merge``): the contract.

    OUT = BASE + Σᵢ λᵢ Dᵢ,   Dᵢ = Aᵢ − BASE (a fine-tuned checkpoint)  or  s·B·A (a LoRA adapter)

for safetensors checkpoints, a single file or a sharded Hugging Face layout (``model.safetensors.index.json``),
and PEFT LoRA adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``) as fine-tuned inputs.

**The contract.**

* *Validated before any output exists* (a temporary one included): the λ count, that every λ is finite and
  within float32's range; that every file is a regular file (a FIFO or a device is refused as such) and a
  well-formed safetensors file by the format's rules (``tvutils.editing.checkpoint``: offsets contiguous from
  0 in order, sizes equal to shape × dtype size, no data beyond the file, …), not a pickle; that a folder holds
  ``model.safetensors`` or an index, not both (ambiguous: refused, naming both); that an index names only shards
  inside its own folder, each existing and holding exactly its keys. *Symbolic links*: a single file may be a
  link; a shard may link inside its checkpoint's folder or, in the Hugging Face hub cache, from
  ``<repo>/snapshots/<rev>/`` into ``<repo>/blobs/``; other links out of the folder are refused. That all
  checkpoints have the same keys, shapes and dtypes; that no checkpoint is quantized with scales stored apart
  (block-scaled float8 with ``weight_scale_inv``, a config's ``quantization_config``: refused; float8 tensors
  without scales merge as numbers); that an adapter is plain LoRA on this base (``tvutils.editing.lora``: its
  modules exist in the base with the shapes of B·A; DoRA, ``modules_to_save``, LoHa, … refused by name); that
  OUT is not an input, inside an input's folder, or a folder holding one; that OUT does not exist (without
  ``overwrite``) and, with it, has the kind (file or folder) the merge writes.
* *Checked while merging*, before the output is published: non-float tensors equal in every checkpoint; every
  value of every input finite, and every merged value finite in the output dtype (a NaN or Inf is reported
  with its key and checkpoint; ``allow_nonfinite=True`` / ``--allow-nonfinite`` lets them through).
* *The arithmetic*: in float32 for every float dtype (float64 for float64 tensors), as BASE + Σᵢ λᵢ Dᵢ, rounded
  once to the output dtype: the base's, or ``dtype`` (``--dtype``) for every float tensor. Non-float tensors are
  copied from the base. An adapter's Dᵢ = (B·A)·s, s = lora_alpha / r (√r with ``use_rslora``), formed for
  one tensor at a time, a block of rows at a time.
* *What a folder OUT holds*: the merged shards (the base's names) and index, and the base folder's files whose
  names end in ``.json .txt .model .tiktoken .jinja .md .py .yaml .yml`` (configuration, tokenizer, chat
  template, model card, code), copied as real files (links followed); never weights in any other format
  (``tf_model.h5``, ``flax_model.msgpack``, ``model.onnx``, ``rust_model.ot``, ``*.tflite``, ``*.gguf``, …,
  indexes of them), which a loader of that format would take for the merged model.
* *Atomic*: the output is written under a hidden temporary name beside OUT (``.OUT.tvmerge-PID-XXXX.tmp``) and
  appears only by one rename that does not replace anything (``renameat2(RENAME_NOREPLACE)``; where the
  filesystem lacks it, a hard link for a file or an exclusive ``mkdir`` for a folder): two merges into one OUT
  never both succeed, and a file or folder that appeared at OUT meanwhile is left as it is (the merge fails).
  A refused or interrupted merge (an exception, Ctrl-C, SIGTERM or SIGHUP through the command line: exit 130)
  removes its temporary output and the folders it created for OUT. A signal is honoured at any moment: held
  back while the ``--keep-entries`` kernels compile (numba; Python could drop it there) and raised when they
  are compiled, before any output exists; held back while the output is published (with ``overwrite``, a
  folder OUT takes several renames) and raised once it is published in full, which the command line says.
  One killed outright (SIGKILL, power loss) leaves the temporary output, and the next merge into the same OUT
  removes it (each run holds a lock on its own, so a live one's is never touched). With ``fsync`` (the
  default) every file and folder is flushed to disk before it is published.
* *``overwrite``* replaces only what the merge writes: a file OUT by one atomic rename; in a folder OUT, the
  files the merge writes (shards, index, the copied files) one by one, each by an atomic rename, the index
  last; other files there are kept. A folder OUT holding other weight files (which a loader could pick up
  instead of the new ones) is refused, as are a file where the merge writes a folder and the reverse.
* *Errors* are one line (``CheckpointError``) naming the file, key or path and the cause, OS errors (disk
  full, read-only filesystem, …) included.

Memory: the plain merge works in chunks of ``CHUNK`` elements (a few MB whatever the model); the variants
(``rank``, ``keep_rows``, ``keep_entries``) need whole tensors: five buffers of the largest tensor (BASE, Dᵢ,
ACC in the work dtype; two for the output, each written while the next tensors are computed) and the rank
factors. At most ``engine.MAX_OPEN`` input files are open at once, however many shards.

Modules: ``checkpoint`` (reading and checking safetensors files), ``lora`` (adapters), ``publish`` (the
temporary output, its publication, signals), ``dtype_codec`` (numpy conversions of every float dtype; torch
only for float8), ``engine`` and ``engine_whole`` (the arithmetic and the writer thread), ``fast`` (the
variants' kernels). The merge runs on numpy, not torch: ``import torch`` takes a second or two, as long as
the whole plain merge of a 1 GB checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .checkpoint import FLOAT_DTYPES, INDEX_NAME, SINGLE_NAME, Checkpoint, CheckpointError, check_unquantized
from .dtype_codec import OUT_DTYPES, work_dtype
from .dtype_codec import out_dtype as _out_dtype
from .engine import CHUNK, Merger
from .fast import check_fraction
from .lora import Adapter, is_adapter
from .publish import (
    Workspace,
    check_target,
    clean_leftovers,
    copied_files,
    deferred_signals,
    fsync_path,
    os_error,
    publish,
    write_small,
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
PUBLISHED = "the output was published in full before the signal was handled"


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


def _compile_kernels(base: Checkpoint, out_name: str | None) -> None:
    """Compile (or load) the ``--keep-entries`` kernels now, before the output exists, with signals held back: a
    signal that came meanwhile is raised after, and the merge unwinds with nothing written."""
    dtypes = {work_dtype(i.dtype, out_name or i.dtype) for i in base.tensors.values() if i.dtype in FLOAT_DTYPES}
    with deferred_signals():
        from ._select_kernel import compile_kernels

        compile_kernels(tuple(sorted(dtypes, key=lambda d: d.__name__)))


def _publish_whole(tmp: Path, target: Path, folder_out: bool, exists: bool, names: list[str], fsync: bool) -> None:
    """Publish with signals held back: a folder OUT replaced with ``overwrite`` takes several renames, and a
    signal between two would leave old and new shards side by side. A signal that came meanwhile is raised
    once the output is published in full, with the note ``PUBLISHED`` (the command line says so)."""
    published = False
    try:
        with deferred_signals():
            publish(tmp, target, folder_out, exists, names)
            published = True
            if fsync:
                fsync_path(target.parent)
    except BaseException as err:
        if published and not isinstance(err, Exception):
            err.add_note(PUBLISHED)
        raise


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
    """Write OUT = BASE + Σᵢ λᵢ Dᵢ, streamed; returns the path written. The contract: module docstring.

    ``finetuned``: checkpoints (Dᵢ = Aᵢ − BASE) or LoRA adapter folders (Dᵢ = s·B·A), mixed as wished. A
    single-file base gives a single file (OUT, or OUT/model.safetensors when OUT is not a ``.safetensors``
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
    out_name = _out_dtype(dtype)
    transform = delta_transform(rank, keep_rows, keep_entries)
    is_adapter(base)  # refuses a folder holding an adapter and a checkpoint, as ambiguous
    base_ck = Checkpoint(base)  # refuses an adapter alone: not a whole model
    tuned = [Adapter(p, base_ck) if is_adapter(p) else Checkpoint(p) for p in finetuned]
    full = [ck for ck in tuned if isinstance(ck, Checkpoint)]
    check_same_layout(base_ck, full)
    for ck in (base_ck, *full):
        check_unquantized(ck)

    target = Path(os.path.abspath(out))
    folder_out = base_ck.sharded or target.suffix != ".safetensors"
    if base_ck.sharded:
        layout = {base_ck.shard_names[f]: [k for k, i in base_ck.tensors.items() if i.file == f] for f in base_ck.files}
    else:
        layout = {SINGLE_NAME if folder_out else "": list(base_ck.tensors)}
    extras = copied_files(base_ck.folder) if folder_out and base_ck.folder is not None else []
    names = [*layout, *(p.name for p in extras)] + ([INDEX_NAME] if base_ck.sharded else [])
    exists = check_target(target, folder_out, names if folder_out else [], [base_ck, *tuned], overwrite)
    if keep_entries is not None:
        _compile_kernels(base_ck, out_name)

    with Workspace(target, folder_out, log) as work:
        tmp = work.tmp
        try:
            files = {(tmp / name if folder_out else tmp): keys for name, keys in layout.items()}
            merger = Merger(base_ck, tuned, lams, transform, out_name, allow_nonfinite, fsync, log)
            merger.run(files)
            if folder_out:
                if base_ck.sharded:
                    total = sum(merger.out_nbytes.values())
                    index = {"metadata": {"total_size": total}, "weight_map": dict(base_ck.weight_map)}
                    write_small(tmp / INDEX_NAME, (json.dumps(index, indent=2) + "\n").encode(), fsync)
                for extra in extras:
                    shutil.copy2(extra, tmp / extra.name)  # a real file, whatever links lead to it
                    if fsync:
                        fsync_path(tmp / extra.name)
                if fsync:
                    fsync_path(tmp)
            _publish_whole(tmp, target, folder_out, exists, names, fsync)
        except OSError as err:
            raise os_error(err, target) from None
    if folder_out and not base_ck.sharded:
        return target / SINGLE_NAME
    return target


__all__ = [
    "CHUNK",
    "PUBLISHED",
    "OUT_DTYPES",
    "check_same_layout",
    "clean_leftovers",
    "delta_transform",
    "merge_checkpoints",
]
