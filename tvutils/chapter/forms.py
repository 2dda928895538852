"""How a claim is tested, by the logical form of its statement.

Each test takes what a chapter measured and returns an ``Outcome``: ``met``, ``not met`` or ``inconclusive``,
the number the rule was applied to, an interval where there is one, and one line saying what decided it.

* ``threshold``: a number (the worst seed, the mean, or one value) against a fixed threshold. The test of a
  **sufficient condition** (success inside the region, worst seed) and of the book's own machinery.
* ``comparison``: "A beats B" (or any one-sided statement about an estimate) judged on a 95 % interval: met when
  the whole interval lies on the stated side of the threshold, not met when it lies wholly on the other side,
  inconclusive when it straddles.
* ``upper_bound``: f ≤ C·g with an unknown constant C. C is fitted on held-out sizes (the largest ratio f/g
  there); on the scored sizes the worst ratio must stay within C·(1 + margin), and the per-seed slope of
  log(f/g) against log(size) must not be clearly positive (its one-sided 95 % lower end ≤ ``slope_margin``).
  A quantity that falls faster than its bound passes.
* ``lower_bound``: the mirror image (f ≥ C·g; the guaranteed extent of a range).
* ``order``: Θ(g), two one-sided tests: the 90 % interval of the exponent lies within the equivalence margin
  (met), wholly outside it (not met), or neither (inconclusive).

Exponents are fitted per seed and summarised with a Student-t interval; an exponent's interval needs at least
``MIN_SEEDS_EXPONENT`` seeds, otherwise the outcome is inconclusive, and says so. Zeros (or values below a
stated floor) are never dropped: they are raised to the floor and counted in the outcome's detail; values
censored at a grid's end are kept at that end (a bound on the true value) and counted too.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MET, NOT_MET, INCONCLUSIVE = "met", "not met", "inconclusive"
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
APPLIES_TO = ("worst", "mean", "value")
MIN_SEEDS_EXPONENT = 10  # an exponent's interval is computed over at least this many seeds


@dataclass(frozen=True)
class Outcome:
    result: str  # MET, NOT_MET or INCONCLUSIVE
    value: float  # the number the rule was applied to
    estimate: float  # the estimate shown beside it (the mean, or the value itself)
    interval: tuple[float, float] | None  # its interval, where there is one
    detail: str  # one line: what decided the outcome


def fmt(x: float) -> str:
    """A number as a reader wants it: 3-4 significant digits, no exponent for ordinary magnitudes."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"
    return f"{x:.3e}"


def t_interval(values: Sequence[float], level: float = 0.95, sided: str = "two") -> tuple[float, float, float]:
    """(mean, lower, upper): the Student-t interval of the mean over seeds. ``sided="two"`` puts (1 − level)/2
    in each tail; ``"lower"``/``"upper"`` give a one-sided bound (the other end infinite). NaN bounds for < 2."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size < 2:
        return m, float("nan"), float("nan")
    tail = (1 - level) / 2 if sided == "two" else 1 - level
    half = float(stats.t.ppf(1 - tail, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    lo = m - half if sided in ("two", "lower") else -math.inf
    hi = m + half if sided in ("two", "upper") else math.inf
    return m, lo, hi


def floored(values: np.ndarray, floor: float) -> tuple[np.ndarray, int]:
    """Values below ``floor`` (zeros included) raised to it, and how many were: never dropped."""
    v = np.asarray(values, dtype=float)
    low = np.isfinite(v) & (v < floor)
    return np.where(low, floor, v), int(low.sum())


def _counts(n_floor: int, floor: float, n_censored: int, total: int) -> str:
    parts = []
    if n_floor:
        parts.append(f"{n_floor} of {total} values below {fmt(floor)} raised to it")
    if n_censored:
        parts.append(f"{n_censored} of {total} censored at the grid's end (kept there)")
    return ("; " + "; ".join(parts)) if parts else ""


def exponents(sizes: Sequence[float] | np.ndarray, values: np.ndarray, floor: float = 0.0) -> tuple[np.ndarray, int]:
    """Per-seed exponents p of values ∝ sizes^p (least squares in log-log over the sizes), values (S, K).

    Values below ``floor`` are raised to it (a floor of 0 with a zero value is an error: state a floor)."""
    y = np.atleast_2d(np.asarray(values, dtype=float))
    x = np.broadcast_to(np.asarray(sizes, dtype=float), y.shape)
    y, n_floor = floored(y, floor) if floor > 0 else (y, 0)
    if (y <= 0).any() or not np.isfinite(y).all():
        raise ValueError("an exponent needs positive, finite values: state a floor for zeros, or a censoring value")
    lx, ly = np.log(x), np.log(y)
    lx_c = lx - lx.mean(axis=1, keepdims=True)
    slopes = (lx_c * (ly - ly.mean(axis=1, keepdims=True))).sum(axis=1) / (lx_c**2).sum(axis=1)
    return np.round(slopes, 9) + 0.0, n_floor


# ---- the tests ------------------------------------------------------------------------------------------------
def threshold(values: Sequence[float], comparison: str, limit: float, applies_to: str = "worst") -> Outcome:
    """The worst seed, the mean, or one value against a fixed threshold (met / not met)."""
    if comparison not in COMPARISONS:
        raise ValueError(f"unknown comparison {comparison!r}; use one of {list(COMPARISONS)}")
    if applies_to not in APPLIES_TO:
        raise ValueError(f"applies_to must be one of {APPLIES_TO}, not {applies_to!r}")
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("no values")
    mean, lo, hi = t_interval(x)
    if applies_to == "worst":
        value = float(x.max() if comparison in ("<=", "<") else x.min())
    elif applies_to == "mean":
        value = mean
    else:
        if x.size != 1:
            raise ValueError(f"applies_to='value' takes one number, got {x.size}")
        value = float(x[0])
    ok = (not math.isnan(value)) and bool(COMPARISONS[comparison](value, limit))
    what = {"worst": f"worst of {x.size}", "mean": f"mean of {x.size}", "value": "value"}[applies_to]
    interval = None if x.size < 2 else (lo, hi)
    return Outcome(MET if ok else NOT_MET, value, mean, interval, f"{what} {fmt(value)} {comparison} {fmt(limit)}: "
                   + ("yes" if ok else "no"))  # fmt: skip


def comparison(
    comparison: str,
    limit: float,
    values: Sequence[float] | None = None,
    interval: tuple[float, float, float] | None = None,
    level: float = 0.95,
) -> Outcome:
    """A one-sided statement ("estimate > limit") judged on an interval: per-seed ``values`` (Student t) or a
    given ``interval`` = (estimate, lower, upper), e.g. a bootstrap over passages."""
    if comparison not in COMPARISONS:
        raise ValueError(f"unknown comparison {comparison!r}")
    if (values is None) == (interval is None):
        raise ValueError("give per-seed values or an (estimate, lower, upper) interval")
    if values is not None:
        est, lo, hi = t_interval(values, level)
        n = f"{len(np.ravel(values))} seeds, Student t"
    else:
        est, lo, hi = (float(v) for v in interval)
        n = "given interval"
    if math.isnan(lo) or math.isnan(hi):
        return Outcome(INCONCLUSIVE, est, est, None, f"no interval ({n}): fewer than two finite values cannot decide "
                       "a comparison")  # fmt: skip
    above = comparison in (">", ">=")
    op = COMPARISONS[comparison]
    if op(lo if above else hi, limit):
        result = MET
    elif (hi < limit if above else lo > limit) or (comparison in (">", "<") and (hi if above else lo) == limit):
        result = NOT_MET
    else:
        result = INCONCLUSIVE
    word = {MET: "lies wholly on the stated side", NOT_MET: "lies wholly on the other side",
            INCONCLUSIVE: "straddles it"}[result]  # fmt: skip
    return Outcome(result, lo if above else hi, est, (lo, hi),
                   f"{level:.0%} interval [{fmt(lo)}, {fmt(hi)}] ({n}) vs {comparison} {fmt(limit)}: {word}")  # fmt: skip


def _bound(
    f: np.ndarray,
    g: np.ndarray,
    sizes: Sequence[float],
    fit: int,
    margin: float,
    slope_margin: float,
    floor: float,
    censored: np.ndarray | None,
    upper: bool,
    min_seeds: int,
) -> Outcome:
    f = np.atleast_2d(np.asarray(f, dtype=float))
    g = np.broadcast_to(np.asarray(g, dtype=float), f.shape)
    sizes = np.asarray(sizes, dtype=float)
    S, K = f.shape
    if sizes.shape != (K,):
        raise ValueError(f"sizes {sizes.shape} do not match the values' {K} columns")
    if fit < 1:
        raise ValueError(f"C is fitted on at least one size, not fit={fit}")
    if fit >= K:  # this run swept too few sizes to hold one out: nothing can be scored
        return Outcome(INCONCLUSIVE, float("nan"), float("nan"), None,
                       f"{K} sizes: fitting C on {fit} leaves none to score (a profile with more sizes can)")  # fmt: skip
    if (g <= 0).any():
        raise ValueError("the bound g must be positive")
    f, n_floor = floored(f, floor) if floor > 0 else (f, 0)
    if (f <= 0).any():
        raise ValueError("a bound test needs positive values: state a floor for zeros")
    n_cens = int(np.asarray(censored, dtype=bool).sum()) if censored is not None else 0
    r = f / g
    order = np.argsort(sizes)  # C is fitted on the ``fit`` smallest sizes and scored on the larger ones
    fit_cols, score_cols = order[:fit], order[fit:]
    if upper:
        C = float(r[:, fit_cols].max())
        worst = float(r[:, score_cols].max()) / C
        ratio_ok = worst <= 1 + margin
    else:
        C = float(r[:, fit_cols].min())
        worst = float(r[:, score_cols].min()) / C
        ratio_ok = worst >= 1 / (1 + margin)
    slopes, _ = exponents(sizes, r)
    if S >= 2:
        mean, lo, hi = t_interval(slopes, sided="lower" if upper else "upper")
    else:
        mean, lo, hi = float(slopes[0]), float("nan"), float("nan")
    end = lo if upper else hi
    side = "≤" if upper else "≥"
    enough = S >= min_seeds
    slope_ok = enough and (end <= slope_margin if upper else end >= -slope_margin)
    result = NOT_MET if not ratio_ok or (enough and not slope_ok) else MET if slope_ok else INCONCLUSIVE
    lim = 1 + margin if upper else 1 / (1 + margin)
    judged = (f"({side} {fmt(slope_margin if upper else -slope_margin)}: {'yes' if slope_ok else 'no'})" if enough
              else f"(not judged: {S} seeds, an interval needs at least {min_seeds})")  # fmt: skip
    detail = (
        f"C = {fmt(C)} fitted on the {fit} smallest sizes; scored sizes' worst ratio/C = {fmt(worst)} "
        f"({side} {fmt(lim)}: {'yes' if ratio_ok else 'no'}); slope of log(f/g) per seed {fmt(mean)}, one-sided "
        f"95 % {'lower' if upper else 'upper'} end {fmt(end)} {judged}; f {side} C·g"
        + _counts(n_floor, floor, n_cens, f.size)
    )
    return Outcome(result, worst, mean, None if math.isnan(end) else (lo, hi), detail)


def upper_bound(
    f: np.ndarray, g: np.ndarray, sizes: Sequence[float], fit: int = 1, margin: float = 0.5, slope_margin: float = 0.1,
    floor: float = 0.0, censored: np.ndarray | None = None, min_seeds: int = MIN_SEEDS_EXPONENT,
) -> Outcome:  # fmt: skip
    """f ≤ C·g with C unknown: ``f`` (seeds, sizes), ``g`` the bound's shape at each size; C is fitted on the
    ``fit`` smallest sizes, the rest are scored (ratio within C·(1 + margin), slope of f/g not clearly > 0)."""
    return _bound(f, g, sizes, fit, margin, slope_margin, floor, censored, True, min_seeds)


def lower_bound(
    f: np.ndarray, g: np.ndarray, sizes: Sequence[float], fit: int = 1, margin: float = 0.5, slope_margin: float = 0.1,
    floor: float = 0.0, censored: np.ndarray | None = None, min_seeds: int = MIN_SEEDS_EXPONENT,
) -> Outcome:  # fmt: skip
    """f ≥ C·g with C unknown: the mirror image of ``upper_bound`` (values censored at a grid's end are lower
    bounds on the true value, so keeping them there is the conservative choice)."""
    return _bound(f, g, sizes, fit, margin, slope_margin, floor, censored, False, min_seeds)


def order(
    sizes: Sequence[float], values: np.ndarray, exponent: float, margin: float, floor: float = 0.0,
    min_seeds: int = MIN_SEEDS_EXPONENT,
) -> Outcome:  # fmt: skip
    """Θ(size^exponent) as two one-sided tests: per-seed exponents, their 90 % Student-t interval against the
    equivalence band [exponent − margin, exponent + margin], declared before measuring."""
    p, n_floor = exponents(sizes, values, floor)
    est, lo, hi = t_interval(p, level=0.90)
    counts = _counts(n_floor, floor, 0, np.size(values))
    band = (exponent - margin, exponent + margin)
    if len(p) < min_seeds:
        return Outcome(INCONCLUSIVE, est, est, None if math.isnan(lo) else (lo, hi),
                       f"exponent {fmt(est)} over {len(p)} seeds: an interval needs at least {min_seeds}{counts}")  # fmt: skip
    if band[0] <= lo and hi <= band[1]:
        result = MET
    elif hi < band[0] or lo > band[1]:
        result = NOT_MET
    else:
        result = INCONCLUSIVE
    return Outcome(result, est, est, (lo, hi), f"exponent {fmt(est)}, 90 % interval [{fmt(lo)}, {fmt(hi)}] over "
                   f"{len(p)} seeds vs the band [{fmt(band[0])}, {fmt(band[1])}]{counts}")  # fmt: skip


def moves(values: np.ndarray) -> bool:
    """Does a swept size move the measured quantity on at least one seed (values (seeds, sizes))?"""
    v = np.atleast_2d(np.asarray(values, dtype=float))
    return bool((np.nanmax(v, axis=1) - np.nanmin(v, axis=1) > 1e-12 * np.maximum(1, np.nanmax(np.abs(v)))).any())
