"""Evaluating many merges of the learner at once.

A merged learner is linear in λ: W(λ) = W⁽⁰⁾ + Σᵢ λᵢ ΔWᵢ and V(λ) = V⁽⁰⁾ + Σᵢ λᵢ ΔVᵢ. So the attention scores
xₛᵀW(λ)x_l and the values V(λ)xₛ are affine in λ: computed once per term (Ψ⁽⁰⁾ and each ΔΨᵢ) on the test set,
they give every grid point by a weighted sum, with no model built per point.

Two exact ways to finish the forward pass of eq. (3) from there:

* **by token** (used when the test set is built from few distinct tokens, as the noise-free data model is:
  ±μ and M irrelevant patterns). With u distinct tokens t_j and counts C[n, j] (how often t_j occurs in
  sample n), the softmax over the P keys of a sample groups by token, for a query token t_q:

      mixed(n, q) = Σ_j C[n,j] e^{K[j,q]} Z[j] / Σ_j C[n,j] e^{K[j,q]},   K = T W(λ) Tᵀ (u, u),  Z = T V(λ)ᵀ (u, m)

  and f(X_n) = (1/P) Σ_q C[n,q] aᵀ ReLU(mixed(n, q)): sums over the sample's own distinct tokens only,
  with no (n, P, P) tensor. Per query that is a few keys times m neurons, too small for torch's kernels, so
  this loop is compiled with numba (``tvutils.taskvec._token_kernel``), whose threads are not held up by
  Python between small operations. (What it saves over a loop of merged models, and over one batched
  product C (n, u) @ [e^{K[j,q]} Z[j]] per point, is measured in ``benchmarks/README.md``.)
* **by position** (any X, e.g. with noise): eq. (3) on the (n, P, P) scores and (n, P, m) values, in blocks of
  samples small enough to stay in cache.

Both agree with ``evaluate_merges_loop`` (one merged model per point) to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from ..editing.task_vector import TaskVector
from .model import OneLayerTransformer, loss_and_error

# Largest spread of one query's scores over all tokens for which the by-token softmax (normalised by the
# maximum over all u tokens, not only those present in a sample) keeps full float32 precision.
_MAX_SCORE_SPREAD = 40.0
_BLOCK_BYTES = 1 << 20  # work on blocks of about 1 MiB: they stay in cache
GPU_BLOCK_BYTES = 1 << 28  # merged_outputs_on: a GPU wants whole test sets per pass, not cache-sized blocks
_POINTS_PER_CALL = 512  # grid points per call of the compiled by-token loop
T = TypeVar("T")


@torch.no_grad()
def evaluate_merges(
    model0: OneLayerTransformer,
    task_vectors: list[TaskVector],
    lambdas: np.ndarray | torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean hinge loss and error of Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ on (X, y) for every row of ``lambdas`` (G, k) → (G,), (G,).

    ``chunk``: grid points per pass of the by-position path (the by-token path sets its own).
    """
    out = merged_outputs(model0, task_vectors, lambdas, X, chunk=chunk)  # (G, n)
    loss, error = loss_and_error(out, y.cpu())
    return loss.numpy(), error.numpy()


@torch.no_grad()
def merged_outputs(
    model0: OneLayerTransformer,
    task_vectors: list[TaskVector],
    lambdas: np.ndarray | torch.Tensor,
    X: torch.Tensor,
    chunk: int = 16,
    method: str = "auto",
) -> torch.Tensor:
    """f(X; Ψ⁽⁰⁾ + Σᵢ λᵢ ΔΨᵢ) for every row of ``lambdas``: (G, k), (n, P, d) → (G, n), on the CPU.

    ``method``: "token" (few distinct tokens; see the module docstring), "position" (any X), or "auto"
    (by token when X has at most 2P distinct tokens, else by position).
    """
    lam = torch.as_tensor(np.asarray(lambdas, dtype=np.float32))
    if lam.ndim != 2 or lam.shape[1] != len(task_vectors):
        raise ValueError(f"lambdas must have shape (G, {len(task_vectors)}), got {tuple(lam.shape)}")
    for tv in task_vectors:
        missing = {"W", "V"} - set(tv.deltas)
        if missing:
            raise ValueError(f"task vector lacks the learner's key(s) {sorted(missing)}")
    if X.ndim != 3 or X.shape[2] != model0.cfg.d or X.shape[1] != model0.a.shape[0]:
        raise ValueError(f"expected X of shape (n, P={model0.a.shape[0]}, d={model0.cfg.d}), got {tuple(X.shape)}")
    if method not in ("auto", "token", "position"):
        raise ValueError(f"method must be 'auto', 'token' or 'position', got {method!r}")
    coef = torch.cat([torch.ones(len(lam), 1), lam], dim=1)  # (G, 1+k): Ψ⁽⁰⁾ has coefficient 1
    # Computed on the CPU (the by-token loop is compiled for it), whatever device the inputs are on.
    Ws = torch.stack([model0.W.detach().cpu()] + [tv.deltas["W"].cpu() for tv in task_vectors])  # (1+k, d, d)
    Vs = torch.stack([model0.V.detach().cpu()] + [tv.deltas["V"].cpu() for tv in task_vectors])  # (1+k, m, d)
    n, P, d = X.shape
    X = X.detach().float().cpu()
    a = model0.a.cpu()
    out = torch.empty(len(coef), n)  # (G, n)
    todo = torch.arange(len(coef))
    if method != "position":
        tokens, index = distinct_rows(X.reshape(n * P, d))  # (u, d), (n·P,)
        if method == "token" or len(tokens) <= 2 * P:
            by_token = _ByToken(tokens, index.reshape(n, P), Ws, Vs, a)
            todo = by_token.run(coef, out)  # points whose scores spread too far are left to do
    if len(todo):
        out[todo] = _ByPosition(X, Ws, Vs, a).run(coef[todo], chunk)
    return out


@torch.no_grad()
def merged_outputs_on(
    model0: OneLayerTransformer,
    task_vectors: list[TaskVector],
    lambdas: np.ndarray | torch.Tensor,
    X: torch.Tensor,
    device: str | torch.device,
    chunk: int = 16,
) -> torch.Tensor:
    """``merged_outputs`` by position on a torch ``device`` (e.g. "cuda"), in large blocks: → (G, n), on the CPU.

    For accelerators; on the CPU ``merged_outputs`` is faster (it takes the compiled by-token path where it can).
    """
    lam = torch.as_tensor(np.asarray(lambdas, dtype=np.float32))
    if lam.ndim != 2 or lam.shape[1] != len(task_vectors) or any({"W", "V"} - set(tv.deltas) for tv in task_vectors):
        raise ValueError(f"lambdas must have shape (G, {len(task_vectors)}) and every task vector the keys W and V")
    if X.ndim != 3 or X.shape[2] != model0.cfg.d or X.shape[1] != model0.a.shape[0]:
        raise ValueError(f"expected X of shape (n, P={model0.a.shape[0]}, d={model0.cfg.d}), got {tuple(X.shape)}")
    coef = torch.cat([torch.ones(len(lam), 1), lam], dim=1).to(device)  # (G, 1+k)
    Ws = torch.stack([model0.W.detach()] + [tv.deltas["W"] for tv in task_vectors]).to(device)  # (1+k, d, d)
    Vs = torch.stack([model0.V.detach()] + [tv.deltas["V"] for tv in task_vectors]).to(device)  # (1+k, m, d)
    engine = _ByPosition(X.detach().float().to(device), Ws, Vs, model0.a.to(device))
    engine.block_bytes = GPU_BLOCK_BYTES
    return engine.run(coef, chunk)


def distinct_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``rows`` (N, d) and, for each row, the index of its copy: (u, d), (N,).

    Exact, like ``torch.unique(rows, dim=0, return_inverse=True)`` (in another order) but faster
    (``benchmarks/README.md``): rows are grouped by a random projection, and the grouping is checked entry
    by entry (if two different rows ever shared a projection, it falls back to ``torch.unique``).
    """
    if len(rows) == 0:
        return torch.unique(rows, dim=0, return_inverse=True)
    r = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # (d,)
    keys = (rows.double() * r).sum(1)  # (N,)
    _, index = torch.unique(keys, return_inverse=True)  # (N,) group of each row
    first = torch.full((int(index.max()) + 1,), len(rows)).scatter_reduce_(0, index, torch.arange(len(rows)), "amin")
    distinct = rows[first]  # (u, d): the first row of each group
    if not torch.equal(distinct[index], rows):
        return torch.unique(rows, dim=0, return_inverse=True)
    return distinct, index


class _ByToken:
    """Eq. (3) over the distinct tokens of the test set (exact; see the module docstring)."""

    def __init__(self, tokens: torch.Tensor, index: torch.Tensor, Ws: torch.Tensor, Vs: torch.Tensor, a: torch.Tensor):
        n, P = index.shape
        u = len(tokens)
        self.P = P
        C = torch.zeros(n, u).scatter_add_(1, index, torch.ones(n, P))  # (n, u): C[n, j] = #{s: x_s = t_j}
        self.K = tokens @ Ws @ tokens.T  # (1+k, u_key, u_query): [j, q] = t_jᵀ W t_q
        self.Z = tokens @ Vs.transpose(1, 2)  # (1+k, u, m): [j] = V t_j
        # Each sample's distinct tokens (the nonzero counts, in token order), padded to the most any sample has.
        present = C > 0
        self.nt = present.sum(1)  # (n,)
        J = int(self.nt.max())
        order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :J]  # present tokens first
        self.tok = order  # (n, J) token indices; entries past nt[s] are padding
        self.cnt = torch.gather(C, 1, order)  # (n, J) their counts (0 on padding)
        m = a.shape[1]
        if bool((a == a[0]).all()):  # one a for every position: aᵀ ReLU(mixed) weighted by the count C[n, q]
            self.arows = a[:1].contiguous()  # (1, m)
            self.aidx = torch.zeros(n, J, dtype=torch.long)
            self.scale = self.cnt
        else:  # A[n, q] = Σ_{l: x_l = t_q} a_(l): the a-vectors of the positions holding token q, summed
            A = torch.zeros(n, u, m).scatter_add_(1, index[..., None].expand(n, P, m), a.expand(n, P, m))
            self.arows = torch.gather(A, 1, order[..., None].expand(n, J, m)).reshape(n * J, m)  # (n·J, m)
            self.aidx = torch.arange(n * J).reshape(n, J)
            self.scale = torch.ones(n, J)

    def run(self, coef: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Fill out[g] for every point it can do exactly; return the indices of the others.

        The work per point is a few small products per sample, too small for torch's kernels: the loop over
        samples, keys and neurons is compiled (``tvutils.taskvec._token_kernel``) and numba's threads (as many as
        torch's) share the grid points, ``_POINTS_PER_CALL`` at a time so that E and Z stay small.
        """
        import numba

        from ._token_kernel import token_outputs

        def array(t: torch.Tensor, dtype: type) -> np.ndarray:
            return np.ascontiguousarray(t.numpy(), dtype=dtype)

        tok, nt, aidx = array(self.tok, np.int64), array(self.nt, np.int64), array(self.aidx, np.int64)
        cnt, arows, scale = array(self.cnt, np.float32), array(self.arows, np.float32), array(self.scale, np.float32)
        left = []
        threads = numba.get_num_threads()
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        try:
            for start in range(0, len(coef), _POINTS_PER_CALL):
                c = coef[start : start + _POINTS_PER_CALL]  # (g, 1+k)
                # Weighted sums term by term (not one matrix product, whose rounding could depend on how many
                # points share it): a point's result does not depend on the batch it is in.
                K = _weighted_sum(c, self.K)  # (g, u_key, u_query)
                top = K.amax(1, keepdim=True)  # (g, 1, u_query)
                ok = (top[:, 0] - K.amin(1)).amax(1) <= _MAX_SCORE_SPREAD  # (g,)
                left.extend((start + torch.nonzero(~ok).flatten()).tolist())
                E = torch.exp(K[ok] - top[ok]).transpose(1, 2).contiguous()  # (g_ok, u_query, u_key): e^{K[j,q]}/max
                Z = _weighted_sum(c[ok], self.Z)  # (g_ok, u, m)
                part = np.empty((len(E), len(tok)), dtype=np.float32)  # (g_ok, n)
                token_outputs(E.numpy(), Z.numpy(), tok, cnt, nt, arows, aidx, scale, float(self.P), part)
                out[start + torch.nonzero(ok).flatten()] = torch.from_numpy(part)
        finally:
            numba.set_num_threads(threads)
        return torch.tensor(left, dtype=torch.long)


def _weighted_sum(c: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """Σ_t c[:, t] terms[t]: (g, T), (T, a, b) → (g, a, b), one term at a time (no (g, T, a, b) intermediate)."""
    out = c[:, 0, None, None] * terms[0]
    for t in range(1, len(terms)):
        out += c[:, t, None, None] * terms[t]
    return out


class _ByPosition:
    """Eq. (3) on every position, for any X, in cache-sized blocks of samples."""

    def __init__(self, X: torch.Tensor, Ws: torch.Tensor, Vs: torch.Tensor, a: torch.Tensor):
        self.scores = torch.stack([X @ W @ X.transpose(1, 2) for W in Ws])  # (1+k, n, P_s, P_l): x_sᵀ W x_l
        self.values = torch.stack([X @ V.T for V in Vs])  # (1+k, n, P_s, m): V x_s
        self.a = a  # (P, m)
        self.block_bytes = _BLOCK_BYTES  # samples per block: about this many bytes of values per pass

    def run(self, coef: torch.Tensor, chunk: int) -> torch.Tensor:
        out = torch.empty(len(coef), self.values.shape[1])  # (G, n)
        _in_threads(lambda first, stop: self._run_points(coef, out, chunk, first, stop), len(coef), chunk)
        return out

    @torch.no_grad()
    def _run_points(self, coef: torch.Tensor, out: torch.Tensor, chunk: int, first: int, stop: int) -> None:
        _, n, P, m = self.values.shape
        for start in range(first, stop, chunk):
            c = coef[start : min(start + chunk, stop)]  # (g, 1+k)
            block = max(1, self.block_bytes // (4 * len(c) * P * m))
            for r in range(0, n, block):
                S = torch.einsum("gt,tnsl->gnsl", c, self.scores[:, r : r + block])  # (g, b, P_s, P_l)
                attn = torch.softmax(S, dim=2)  # over keys s
                Vx = torch.einsum("gt,tnsm->gnsm", c, self.values[:, r : r + block])  # (g, b, P_s, m)
                h = torch.relu(attn.transpose(2, 3) @ Vx)  # (g, b, P_l, m)
                out[start : start + len(c), r : r + block] = (h * self.a).sum(-1).mean(-1)  # (g, b)


def _in_threads(work: Callable[[int, int], T], n_points: int, chunk: int) -> list[T]:
    """Run work(first, stop) on contiguous shares of the grid points, one share per torch thread.

    The per-point work is many small products that stay in cache, too small to split among threads one at a
    time (on a busy machine every split waits for a sleeping thread). So each thread takes whole points, with
    torch's intra-op threading off meanwhile (restored after).
    """
    workers = max(1, min(torch.get_num_threads(), n_points // max(1, chunk)))
    if workers == 1:
        return [work(0, n_points)]
    bounds = np.linspace(0, n_points, workers + 1).round().astype(int)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda i: work(int(bounds[i]), int(bounds[i + 1])), range(workers)))
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def evaluate_merges_loop(
    model0: OneLayerTransformer,
    task_vectors: list[TaskVector],
    lambdas: np.ndarray,
    X: torch.Tensor,
    y: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: build one merged model per grid point and evaluate it."""
    from ..editing.task_vector import merge
    from .training import evaluate

    rows = [evaluate(merge(model0, task_vectors, [float(v) for v in row]), X, y) for row in np.asarray(lambdas)]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def grid_points(*axes: np.ndarray) -> np.ndarray:
    """All combinations of the axes as rows (G, k), the first axis slowest: reshape results to the axes' lengths."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)
