"""Every seed of the theory chapters, derived from its role by name.

A chapter's run is an integer (its ``seed`` or one of its ``seeds``). From it, each random thing gets its own
generator seed, so the same run gives the same numbers, and what one task draws does not depend on which
other tasks or correlations a chapter happens to include:

    init(run)              Ψ⁽⁰⁾ (V⁽⁰⁾ and the signs of a)
    finetune(run, task)    the minibatches of the fine-tune Ψ*_T (1000 seeds per run, one per task role)
    stopping_set(seed)     the test set a fine-tune with that seed checks its targets on
    test_set(run, task)    a fresh test set of task T (``experiments.fresh_set``)
    ood_test(run, k)       Theorem 3's test sets: T' (k = 0), the sources T₁, T₂ (k = 1, 2), γ̂'s probe set (k = 3)
    setup_test_set(run, k) the held-out sets of the setup chapter
    mask(draw, k)          the random mask of task vector k in a draw of random pruning

The task roles inside a run's block of 1000: ``T1``, ``T2``, ``pair_t2(α)`` (T2 at correlation α),
``ood_target(k)`` (T' of Theorem 3's k-th setting), ``PRUNED_TARGET`` and ``LOW_RANK_TARGET`` (the T' of the
sparsity and low-rank chapters). For run 0, the run of every profile the chapters defined then, the values are those the chapters used before
the roles had names. Two ranges were made disjoint since: the setup chapter's held-out sets (they shared
``setup_test_set(0, 1)`` = ``stopping_set(finetune(0, T1))`` = 10 001 with the stopping set of Ψ*_T1) now live
at 9 000 000 + 100·run + k; and runs ≥ 10, whose SGD seeds 1000·run + role would meet the stopping sets of
runs 0 … 9, take their SGD seeds from 20 000 000 + 1000·run + role and their stopping sets 5 000 000 above them.
Runs 0 … 9 keep every value, so no other number moved.
"""

from __future__ import annotations

RUN_BLOCK = 1000  # fine-tuning seeds of run r are RUN_BLOCK·r + role
T1 = 1  # task T1 (μ = e₀), also Theorem 3's first source
T2 = 2  # the second task: orthogonal T2 (setup chapter), Theorem 3's second source
PRUNED_TARGET = 3  # T' of the pruned merges (sparsity chapter)
LOW_RANK_TARGET = 999  # T' of the low-rank success maps (low-rank chapter)
_PAIR_T2 = 300  # T2 at correlation α: 300 + alpha_code(α) ∈ [300, 500]
_OOD_TARGET = 10  # T' of Theorem 3's k-th setting: 10 + k
_STOPPING = 10_000  # offset of a fine-tune's stopping set from its SGD seed (runs 0 … 9)
_STOPPING_LATE = 5_000_000  # the offset for runs ≥ 10
_LATE_RUNS = 20_000_000  # SGD seeds of runs ≥ 10 start here
_EARLY_RUNS = 10  # runs 0 … 9 keep the seeds the chapters first used
_TEST = 7_000_000  # fresh test sets never share a generator seed with training or stopping sets
_OOD_TEST = 8_000_000  # Theorem 3's test sets, 100 per run
_SETUP_TEST = 9_000_000  # the setup chapter's held-out sets: 9 000 000 + 100·run + k
_MASK = 17  # random pruning masks: draw + 17·k for task vector k


def alpha_code(alpha: float) -> int:
    """An integer naming α to 0.01 (0 … 200), so that T2's seeds do not depend on the α grid."""
    return int(round(100 * (float(alpha) + 1.0)))


def pair_t2(alpha: float) -> int:
    """The role of T2 at correlation α."""
    return _PAIR_T2 + alpha_code(alpha)


def ood_target(k: int) -> int:
    """The role of T' in Theorem 3's k-th setting."""
    return _OOD_TARGET + k


def init(run: int) -> int:
    """Ψ⁽⁰⁾ of a run."""
    return run


def finetune(run: int, task: int) -> int:
    """The SGD seed of the fine-tune of task role ``task`` in a run."""
    if not 0 <= task < RUN_BLOCK:
        raise ValueError(f"task role {task} is outside 0 … {RUN_BLOCK - 1}")
    return RUN_BLOCK * run + task + (0 if run < _EARLY_RUNS else _LATE_RUNS)


def stopping_set(finetune_seed: int) -> int:
    """The test set on which a fine-tune with SGD seed ``finetune_seed`` checks its targets."""
    return finetune_seed + (_STOPPING if finetune_seed < _LATE_RUNS else _STOPPING_LATE)


def test_set(run: int, task: int) -> int:
    """A fresh test set of task role ``task`` in a run (never a training or stopping set)."""
    return _TEST + finetune(run, task)


def ood_test(run: int, k: int) -> int:
    """Theorem 3's test sets of a run: T' (k = 0), the sources (k = 1, 2)."""
    if not 0 <= k < 100:
        raise ValueError(f"k must be in 0 … 99, got {k}")
    return _OOD_TEST + 100 * run + k


def setup_test_set(run: int, k: int) -> int:
    """The setup chapter's k-th held-out set of a run."""
    if not 0 <= k < 100:
        raise ValueError(f"k must be in 0 … 99, got {k}")
    return _SETUP_TEST + 100 * run + k


def mask(draw: int, k: int) -> int:
    """The random pruning mask of task vector k in draw ``draw``."""
    return draw + _MASK * k
