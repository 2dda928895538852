"""The variants' pass of the merge engine (``--rank``, ``--keep-rows``, ``--keep-entries``): each difference Dᵢ
whole, in reused buffers of the largest tensor's size (``tvutils.editing.engine`` holds the rest).
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import numpy as np

from .checkpoint import ITEMSIZE, TensorInfo
from .dtype_codec import NUMPY, all_finite, encode, work_dtype
from .fast import (
    SAMPLE,
    kept_count,
    kth_largest_selection,
    largest_rows,
    rank_k_factors,
    sample_positions,
    sketch_matrix,
)
from .lora import Adapter

CHUNK = 1 << 18  # elements per chunk of the plain merge (1 MB of float32: stays in the CPU's caches)
WRITE = 8 << 20  # bytes per write (few hand-offs to the writer thread, each of which waits for the GIL)


class WholeTensorPass:
    """Methods of ``engine.Merger`` for a variant: it needs each Dᵢ = Aᵢ − BASE (or an adapter's s·B·A) whole."""

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
        work_dt = work_dtype(info.dtype, out_name)
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
                part = d[s : s + n]
                if isinstance(ck, Adapter):  # s·B·A for these rows, or 0 where the adapter leaves the tensor
                    if self._delta(ck, key, info, s, n, part) is None:
                        part.fill(0)
                else:
                    tuned = self._as_work(ck.tensors[key], s, n, 1, chunk)  # read into a buffer in cache
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
        osz, direct = ITEMSIZE[out_name], NUMPY.get(out_name) is work_dt
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
                encode(merged, out_name, raw, self.scratch)  # the one rounding to the output dtype
            if not self.allow and not all_finite(merged if direct else raw, out_name):
                self._blame(key, info, s * isz, n)
            if (s + n) * osz - written >= WRITE or s + n == numel:  # a write of WRITE bytes or more, or the rest
                jobs.append(self._write(fd, outs[written : (s + n) * osz], path))
                written = (s + n) * osz
