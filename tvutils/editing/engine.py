"""The merge engine of ``python -m tvutils merge``: reads chunks, computes, hands bytes to a writer thread.

``Merger.run`` writes each output file: per tensor, OUT = BASE + Σᵢ λᵢ Dᵢ, with Dᵢ = Aᵢ − BASE for a full
fine-tuned checkpoint and Dᵢ = s·B·A for a LoRA adapter's target module (0 for its other tensors). The plain
merge goes chunk by chunk (``CHUNK`` elements, cache-sized; an adapter's product one block of whole rows at a
time); a variant needs each Dᵢ whole (``engine_whole.WholeTensorPass``). Inputs are read with ``preadv`` into
reused buffers, at most ``MAX_OPEN`` files open at once (the least recently read is closed first; a file
reopened must be the same file). The output goes through 8 MB write buffers, each written by the writer
thread while the next fills; each file is fsync'd and closed there while the next is computed.
"""

from __future__ import annotations

import contextlib
import os
import resource
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import publish
from .checkpoint import FLOAT_DTYPES, ITEMSIZE, CheckpointError, TensorInfo
from .dtype_codec import NUMPY, all_finite, decode, encode, work_dtype
from .engine_whole import CHUNK, WRITE, WholeTensorPass
from .lora import Adapter, Factors

MAX_OPEN = max(8, min(64, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))  # input files open at once


def header_bytes(items: list[tuple[str, TensorInfo, str]], metadata: dict[str, str]) -> tuple[bytes, int]:
    """The header of an output file holding (key, base info, output dtype) in this order; and its data size."""
    import json
    import struct

    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for key, info, dt in items:
        n = info.numel * ITEMSIZE[dt]
        header[key] = {"dtype": dt, "shape": list(info.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw, offset


class Merger(WholeTensorPass):
    """One merge: BASE, the fine-tuned inputs (checkpoints or adapters) and their λ, the variant, the output."""

    def __init__(self, base, tuned, lambdas, transform, out_dtype, allow_nonfinite, fsync, log) -> None:  # noqa: ANN001
        self.base, self.tuned, self.lambdas = base, tuned, lambdas
        self.transform, self.out_dtype, self.allow, self.fsync, self.log = (
            transform,
            out_dtype,
            allow_nonfinite,
            fsync,
            log,
        )
        self.full = [ck for ck in tuned if not isinstance(ck, Adapter)]
        self.whole: dict[object, tuple | None] = {}
        self.fds: dict[Path, int] = {}  # inputs open now, the least recently read first
        self.ids: dict[Path, tuple[int, int, int]] = {}  # (device, inode, size) of each input when first opened
        self.out_fds: set[int] = set()  # outputs not yet closed
        self.out_nbytes: dict[Path, int] = {}
        self.factors: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, float]] = {}  # this tensor's
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
        fd = self.fds.pop(file, None)
        if fd is None:
            while len(self.fds) >= MAX_OPEN:
                os.close(self.fds.pop(next(iter(self.fds))))
            fd = os.open(file, os.O_RDONLY)
            st = os.fstat(fd)
            if self.ids.setdefault(file, (st.st_dev, st.st_ino, st.st_size)) != (st.st_dev, st.st_ino, st.st_size):
                os.close(fd)
                raise CheckpointError(f"{file}: replaced while merging; refused")
        self.fds[file] = fd
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
        if NUMPY.get(info.dtype) is work.dtype.type:
            self._read(info, s * isz, n * isz, out.view(np.uint8))
            return out
        return decode(self._read(info, s * isz, n * isz, self.bufs[buf]), info.dtype, out)

    def _whole_tensor(self, info: TensorInfo, work_dt: type) -> np.ndarray:
        raw = self._read(info, 0, info.nbytes, np.empty(info.nbytes, dtype=np.uint8))
        values = decode(raw, info.dtype, np.empty(info.numel, dtype=work_dt)).reshape(info.shape)
        if not all_finite(values, info.dtype):
            raise CheckpointError(f"{info.file}: a LoRA factor of shape {info.shape} holds non-finite values")
        return values

    def _delta(self, ck, key: str, info: TensorInfo, s: int, n: int, out: np.ndarray) -> np.ndarray | None:  # noqa: ANN001
        """Dᵢ's elements [s, s + n) in ``out`` (work dtype): Aᵢ − BASE is formed by the caller; for an adapter,
        s·(B·A)[rows] for the rows these elements lie in (None where the adapter leaves ``key`` alone)."""
        factors: Factors | None = ck.targets.get(key)
        if factors is None:
            return None
        cached = self.factors.get((id(ck), key))
        if cached is None:
            self.factors = {k: v for k, v in self.factors.items() if k[1] == key}  # only this tensor's are kept
            a, b = (self._whole_tensor(i, out.dtype.type) for i in (factors.a, factors.b))
            left, right = (np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)) if factors.transposed else (b, a)
            cached = self.factors[(id(ck), key)] = (left, right, out.dtype.type(factors.scale))
        left, right, scale = cached
        cols = right.shape[1]
        r0, r1 = s // cols, -(-(s + n) // cols)
        part = out[:n]
        if s % cols == 0 and n % cols == 0:  # whole rows, straight into out
            np.matmul(left[r0:r1], right, out=part.reshape(-1, cols))
        else:
            np.copyto(part, (left[r0:r1] @ right).reshape(-1)[s - r0 * cols : s - r0 * cols + n])
        np.multiply(part, scale, out=part)  # (B·A)·s, as PEFT forms ΔW
        return part

    def _step(self, key: str, info: TensorInfo) -> int:
        """Elements per chunk of a tensor: CHUNK, or whole rows of it where an adapter's product is formed."""
        if len(info.shape) == 2 and any(isinstance(ck, Adapter) and key in ck.targets for ck in self.tuned):
            cols = info.shape[1]
            if 0 < cols <= CHUNK:
                return (CHUNK // cols) * cols
        return CHUNK

    # writing
    def _write(self, fd: int, data: np.ndarray, path: Path) -> Future:
        job = self.writer.submit(publish.write_all, fd, memoryview(data), path)
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
        head, data = header_bytes(items, {"format": "pt"})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.out_fds.add(fd)
        try:
            publish.write_all(fd, memoryview(head), path)
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
            with contextlib.suppress(Exception):  # re-raised by _drain on the normal path
                job.result()
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
            for ck in self.full:
                if not np.array_equal(slot, self._read(ck.tensors[key], start, n, self.bufs[1])):
                    raise CheckpointError(f"{ck.path}: non-float tensor {key!r} differs from the base")

    def _chunked(self, fd: int, path: Path, info: TensorInfo, key: str, out_name: str) -> None:
        """OUT = BASE + Σᵢ λᵢ Dᵢ chunk by chunk (CHUNK elements: the buffers stay in the CPU's caches)."""
        work_dt = work_dtype(info.dtype, out_name)
        bw, dw, aw = self.work[work_dt]
        isz, osz = ITEMSIZE[info.dtype], ITEMSIZE[out_name]
        direct = NUMPY.get(out_name) is work_dt  # ACC is the output slot itself
        lams = [work_dt(lam) for lam in self.lambdas]  # λ in the work dtype, as torch multiplies by a scalar
        step = self._step(key, info)
        for s in range(0, info.numel, step):
            n = min(step, info.numel - s)
            b = self._as_work(info, s, n, 0, bw)
            slot = self._region(fd, path, n * osz)
            acc = slot.view(work_dt) if direct else aw[:n]
            first = True
            with np.errstate(over="ignore", invalid="ignore"):  # a NaN or Inf is reported (or let through) below
                for ck, lam in zip(self.tuned, lams):
                    if isinstance(ck, Adapter):
                        a = self._delta(ck, key, info, s, n, dw)
                        if a is None:
                            continue
                    else:
                        a = self._as_work(ck.tensors[key], s, n, 1, dw)
                        np.subtract(a, b, out=a)
                    if first:
                        np.multiply(a, lam, out=acc)
                        first = False
                    else:
                        np.multiply(a, lam, out=a)
                        np.add(acc, a, out=acc)
                if first:  # no input changes this tensor: the base's values
                    np.copyto(acc, b)
                else:
                    np.add(acc, b, out=acc)
            if not direct:
                encode(acc, out_name, slot, self.scratch)  # the one rounding to the output dtype
            if not self.allow and not all_finite(acc if direct else slot, out_name):
                self._blame(key, info, s * isz, n)

    def _check_finite(self, values: np.ndarray, info: TensorInfo, key: str, byte_start: int, n: int) -> None:
        if not all_finite(values, info.dtype):
            self._blame(key, info, byte_start, n)

    def _blame(self, key: str, info: TensorInfo, byte_start: int, n: int) -> None:
        """Raise naming the checkpoint whose tensor ``key`` holds a NaN or Inf in this range, or the overflow."""
        isz = ITEMSIZE[info.dtype]
        first = byte_start // isz
        values = self.work[np.float64][2]
        for ck in (self.base, *self.full):
            for s in range(first, first + n, CHUNK):
                m = min(CHUNK, first + n - s)
                raw = self._read(ck.tensors[key], s * isz, m * isz, self.bufs[2])
                bad = np.flatnonzero(~np.isfinite(decode(raw, info.dtype, values[:m])))
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
