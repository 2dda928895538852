"""The compiled inner loop of ``tvutils.taskvec.grid``'s by-token evaluation (numba; see that module's docstring).

Kept apart so that ``import tvutils`` does not import numba: this module is imported the first time a grid is
evaluated by token. Compiled once per machine and cached on disk (``cache=True``: numba's cache directory,
next to this file or under ``NUMBA_CACHE_DIR``); the first call compiles it.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

# numba's default OpenMP layer keeps its threads spinning between parallel regions: with torch's own OpenMP
# threads in the same process, or another notebook on the same two cores, both slow down (by how much:
# benchmarks/README.md). The workqueue layer's threads sleep while idle. An explicit NUMBA_THREADING_LAYER is
# respected.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# Reassociation and fused multiply-adds let the neuron loops use SIMD; no approximate division, and NaN and
# infinities keep their meaning.
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def token_outputs(
    E: np.ndarray,
    Z: np.ndarray,
    tok: np.ndarray,
    cnt: np.ndarray,
    nt: np.ndarray,
    arows: np.ndarray,
    aidx: np.ndarray,
    scale: np.ndarray,
    P: float,
    out: np.ndarray,
) -> None:
    """out[g, s] = f(X_s) at grid point g, from the distinct tokens of each sample (float32 throughout).

    E (G, u, u): E[g, q, j] = e^{K[j, q]} up to a factor per query q; Z (G, u, m): V t_j;
    tok, cnt (n, J): the nt[s] distinct tokens of sample s (indices into u, padded) and their counts;
    arows (R, m), aidx (n, J), scale (n, J): the query token tok[s, i] contributes
    scale[s, i] · arows[aidx[s, i]]ᵀ ReLU(mixed) — a shared a with the count as scale, or per-position a
    summed over the positions holding the token (scale 1).

    Grid points are shared among numba's threads; each output is summed by one thread in a fixed order, so
    the result does not depend on the number of threads.
    """
    G, _, m = Z.shape
    n, J = tok.shape
    zero = np.float32(0.0)
    for g in prange(G):
        # Two queries at a time share the loads of the key rows; keys go four at a time (padded with weight-0
        # keys): the first group of keys sets the numerators acc, the last one reads them into aᵀ ReLU(·).
        acc = np.empty(m, np.float32)  # the numerator Σ_j C[s,j] e^{K[j,q]} V t_j of the first query
        acc2 = np.empty(m, np.float32)  # ... of the second
        ew = np.zeros(J + 3, np.float32)  # C[s,j] e^{K[j,q]} for the sample's keys, first query
        ew2 = np.zeros(J + 3, np.float32)  # ... second query
        jj = np.zeros(J + 3, np.int64)  # the sample's tokens, padded to a multiple of 4
        Eg = E[g]
        Zg = Z[g]
        for s in range(n):
            k = nt[s]
            for jb in range(k):
                jj[jb] = tok[s, jb]
            for jb in range(k, k + 3):  # padding keys: a valid row with weight 0
                jj[jb] = jj[0]
                ew[jb] = zero
                ew2[jb] = zero
            last = (k - 1) // 4 * 4  # the first key of the last group
            total = zero
            for qa in range(0, k, 2):
                qb = qa + 1 if qa + 1 < k else qa  # an odd last query is done twice and counted once
                Eq, Eq2 = Eg[jj[qa]], Eg[jj[qb]]
                D = zero  # the softmax denominators
                D2 = zero
                for jb in range(k):
                    e = cnt[s, jb] * Eq[jj[jb]]
                    f = cnt[s, jb] * Eq2[jj[jb]]
                    ew[jb] = e
                    ew2[jb] = f
                    D += e
                    D2 += f
                ar, ar2 = arows[aidx[s, qa]], arows[aidx[s, qb]]
                h = zero  # aᵀ ReLU(numerator) = D · aᵀ ReLU(mixed), as D > 0
                h2 = zero
                for jb in range(0, k, 4):
                    e0, e1, e2, e3 = ew[jb], ew[jb + 1], ew[jb + 2], ew[jb + 3]
                    f0, f1, f2, f3 = ew2[jb], ew2[jb + 1], ew2[jb + 2], ew2[jb + 3]
                    z0, z1, z2, z3 = Zg[jj[jb]], Zg[jj[jb + 1]], Zg[jj[jb + 2]], Zg[jj[jb + 3]]
                    # The same pass in four versions (first and/or last group), each a branch-free SIMD loop.
                    if jb == 0 and jb == last:
                        for i in range(m):
                            a0, a1, a2, a3 = z0[i], z1[i], z2[i], z3[i]
                            h += ar[i] * max(e0 * a0 + e1 * a1 + e2 * a2 + e3 * a3, zero)
                            h2 += ar2[i] * max(f0 * a0 + f1 * a1 + f2 * a2 + f3 * a3, zero)
                    elif jb == 0:
                        for i in range(m):
                            a0, a1, a2, a3 = z0[i], z1[i], z2[i], z3[i]
                            acc[i] = e0 * a0 + e1 * a1 + e2 * a2 + e3 * a3
                            acc2[i] = f0 * a0 + f1 * a1 + f2 * a2 + f3 * a3
                    elif jb == last:
                        for i in range(m):
                            a0, a1, a2, a3 = z0[i], z1[i], z2[i], z3[i]
                            h += ar[i] * max(acc[i] + (e0 * a0 + e1 * a1 + e2 * a2 + e3 * a3), zero)
                            h2 += ar2[i] * max(acc2[i] + (f0 * a0 + f1 * a1 + f2 * a2 + f3 * a3), zero)
                    else:
                        for i in range(m):
                            a0, a1, a2, a3 = z0[i], z1[i], z2[i], z3[i]
                            acc[i] += e0 * a0 + e1 * a1 + e2 * a2 + e3 * a3
                            acc2[i] += f0 * a0 + f1 * a1 + f2 * a2 + f3 * a3
                total += scale[s, qa] * h / D
                if qb != qa:
                    total += scale[s, qb] * h2 / D2
            out[g, s] = total / P
