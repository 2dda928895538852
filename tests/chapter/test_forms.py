"""Power, both ways, for every test family: measurements that satisfy a statement's form pass, and measurements
that violate it by a stated effect size fail, at the seed counts the chapters use. Noise levels are those the
chapters see (a few per cent of a quantity across seeds); each case draws from a named seed."""

import numpy as np
import pytest

from tvutils.chapter import forms

SEEDS_SUFFICIENT = 3  # the fewest seeds a chapter judges a sufficient condition on
SEEDS_SLOPE = 10  # an exponent's or a bound's slope interval needs at least this many
TRIALS = 20  # independent synthetic data sets per case: every one must come out as designed
SIZES = np.array([16.0, 32.0, 64.0, 128.0])


def noisy(rng, mean, sd, seeds):
    return mean + sd * rng.standard_normal(seeds)


def power_law(rng, exponent, seeds, noise=0.05, sizes=SIZES, scale=1.0):
    """values (seeds, sizes) ∝ sizes^exponent with multiplicative noise, and a seed-to-seed constant."""
    c = scale * np.exp(noise * rng.standard_normal((seeds, 1)))
    return c * sizes**exponent * np.exp(noise * rng.standard_normal((seeds, len(sizes))))


# ---- threshold: a sufficient condition judged on the worst seed ----------------------------------------------
@pytest.mark.parametrize("trial", range(TRIALS))
def test_threshold_sufficient_condition_has_power_both_ways(trial):
    rng = np.random.default_rng(100 + trial)
    inside = np.clip(noisy(rng, 0.99, 0.01, SEEDS_SUFFICIENT), 0, 1)  # success rates that meet the rule
    assert forms.threshold(inside, ">=", 0.9).result == forms.MET
    failing = inside.copy()
    failing[trial % SEEDS_SUFFICIENT] = 0.8  # one seed fails by 0.1 below the rule: the condition is violated
    assert forms.threshold(failing, ">=", 0.9).result == forms.NOT_MET


def test_threshold_applies_to_and_errors():
    assert forms.threshold([1.0, 3.0], "<=", 2.0, "mean").result == forms.MET
    assert forms.threshold([1.0, 3.0], "<=", 2.0, "worst").result == forms.NOT_MET
    assert forms.threshold([5.0], "<", 6.0, "value").value == 5.0
    with pytest.raises(ValueError, match="unknown comparison"):
        forms.threshold([1.0], "==", 1.0)
    with pytest.raises(ValueError, match="one number"):
        forms.threshold([1.0, 2.0], "<", 1.0, "value")


# ---- comparison: an interval on the stated side, the other side, or straddling -----------------------------------
@pytest.mark.parametrize("trial", range(TRIALS))
def test_comparison_has_power_both_ways_at_three_seeds(trial):
    rng = np.random.default_rng(200 + trial)
    gain = noisy(rng, 5.0, 0.5, SEEDS_SUFFICIENT)  # "A beats B by 5 points", seed-to-seed sd 0.5
    assert forms.comparison(">", 0.0, values=gain).result == forms.MET
    assert forms.comparison(">", 0.0, values=-gain).result == forms.NOT_MET  # the opposite effect


def test_comparison_straddling_is_inconclusive_and_given_intervals_work():
    assert forms.comparison(">", 0.0, values=[-1.0, 1.0, 0.5]).result == forms.INCONCLUSIVE
    assert forms.comparison("<", 0.0, interval=(-0.3, -0.5, -0.1)).result == forms.MET
    assert forms.comparison("<", 0.0, interval=(0.2, 0.1, 0.3)).result == forms.NOT_MET
    assert forms.comparison(">", 0.0, values=[1.0]).result == forms.INCONCLUSIVE  # one value: no interval
    with pytest.raises(ValueError, match="per-seed values or"):
        forms.comparison(">", 0.0)


# ---- upper and lower bounds, C fitted on held-out sizes -------------------------------------------------------
@pytest.mark.parametrize("trial", range(TRIALS))
def test_upper_bound_has_power_both_ways(trial):
    rng = np.random.default_rng(300 + trial)
    g = SIZES**-1.0
    at_bound = power_law(rng, -1.0, SEEDS_SLOPE)  # f = C·g
    faster = power_law(rng, -1.5, SEEDS_SLOPE)  # f falls faster than the bound: it satisfies it
    slower = power_law(rng, -0.5, SEEDS_SLOPE)  # violation: f/g grows as size^0.5 (×2.8 over the sizes)
    assert forms.upper_bound(at_bound, g, SIZES).result == forms.MET
    assert forms.upper_bound(faster, g, SIZES).result == forms.MET
    assert forms.upper_bound(slower, g, SIZES).result == forms.NOT_MET


@pytest.mark.parametrize("trial", range(TRIALS))
def test_lower_bound_has_power_both_ways(trial):
    rng = np.random.default_rng(400 + trial)
    g = SIZES**2.0  # e.g. |λ_min| ≥ C·α⁻², sizes = 1/|α|
    at_bound = power_law(rng, 2.0, SEEDS_SLOPE)
    faster = power_law(rng, 2.5, SEEDS_SLOPE)  # grows faster than the bound: satisfies it
    slower = power_law(rng, 1.5, SEEDS_SLOPE)  # violation: f/g falls as size^−0.5
    assert forms.lower_bound(at_bound, g, SIZES).result == forms.MET
    assert forms.lower_bound(faster, g, SIZES).result == forms.MET
    assert forms.lower_bound(slower, g, SIZES).result == forms.NOT_MET


def test_bound_with_too_few_seeds_is_inconclusive_unless_the_ratio_fails():
    rng = np.random.default_rng(5)
    g = SIZES**-1.0
    assert forms.upper_bound(power_law(rng, -1.0, 5), g, SIZES).result == forms.INCONCLUSIVE
    blown = power_law(rng, 1.0, 5)  # the ratio to the bound grows 512× over the sizes: fails on the ratio alone
    out = forms.upper_bound(blown, g, SIZES)
    assert out.result == forms.NOT_MET and "not judged: 5 seeds" in out.detail


def test_bound_zeros_are_floored_and_counted_never_dropped():
    f = np.array([[0.0, 0.5, 0.2, 0.1]] * SEEDS_SLOPE) + np.linspace(0, 1e-3, SEEDS_SLOPE)[:, None]
    f[:, 0] = 0.0
    with pytest.raises(ValueError, match="state a floor"):
        forms.upper_bound(f, np.ones(4), SIZES)
    out = forms.upper_bound(f, np.ones(4), SIZES, floor=1e-3)
    assert f"{SEEDS_SLOPE} of {f.size} values below 0.001 raised to it" in out.detail


def test_bound_censored_values_are_counted():
    rng = np.random.default_rng(6)
    f = power_law(rng, 2.0, SEEDS_SLOPE)
    censored = np.zeros_like(f, dtype=bool)
    censored[0, -1] = True
    assert "1 of 40 censored" in forms.lower_bound(f, SIZES**2, SIZES, censored=censored).detail


def test_bound_needs_a_held_out_size():
    out = forms.upper_bound(np.ones((3, 4)), np.ones(4), SIZES, fit=4)
    assert out.result == forms.INCONCLUSIVE and "leaves none to score" in out.detail
    with pytest.raises(ValueError, match="at least one size"):
        forms.upper_bound(np.ones((3, 4)), np.ones(4), SIZES, fit=0)


# ---- Θ order: two one-sided tests -----------------------------------------------------------------------------
@pytest.mark.parametrize("trial", range(TRIALS))
def test_order_has_power_both_ways(trial):
    rng = np.random.default_rng(500 + trial)
    assert forms.order(SIZES, power_law(rng, -0.5, SEEDS_SLOPE), -0.5, 0.1).result == forms.MET
    assert forms.order(SIZES, power_law(rng, -0.8, SEEDS_SLOPE), -0.5, 0.1).result == forms.NOT_MET


def test_order_needs_ten_seeds_and_says_so():
    rng = np.random.default_rng(7)
    out = forms.order(SIZES, power_law(rng, -0.5, 5), -0.5, 0.1)
    assert out.result == forms.INCONCLUSIVE and "at least 10" in out.detail


def test_order_noisy_measurement_is_inconclusive_not_passed():
    per_seed = -0.5 + 0.3 * np.linspace(-1, 1, SEEDS_SLOPE)  # centred on the truth, spread wider than the band
    out = forms.order(SIZES, SIZES ** per_seed[:, None], -0.5, 0.1)
    assert out.result == forms.INCONCLUSIVE and out.interval[0] < -0.6 and out.interval[1] > -0.4


# ---- helpers ----------------------------------------------------------------------------------------------------
def test_t_interval_matches_scipy_quantiles():
    m, lo, hi = forms.t_interval([1.0, 2.0, 3.0])
    assert (
        m == 2.0 and lo == pytest.approx(2 - 4.302653 / np.sqrt(3)) and hi == pytest.approx(2 + 4.302653 / np.sqrt(3))
    )
    _, lo1, hi1 = forms.t_interval([1.0, 2.0, 3.0], sided="lower")
    assert hi1 == np.inf and lo1 > lo


def test_exponents_are_exact_for_power_laws():
    p, n = forms.exponents(SIZES, np.vstack([SIZES**-0.5, 3 * SIZES**2]))
    assert np.allclose(p, [-0.5, 2.0]) and n == 0


def test_moves():
    assert not forms.moves(np.ones((3, 4)))
    assert forms.moves(np.array([[1.0, 1.0], [1.0, 1.1]]))


# ---- every claim of the papers, at the seed count its chapter uses ------------------------------------------------
def _synthetic(test, seeds, meets, rng):
    """Data for a ledger test that meets its rule by a clear margin, or violates it by the stated effect size."""
    family = test["family"]
    if family in ("threshold", "comparison"):
        op, limit = test["rule"]
        limit = 1.0 if isinstance(limit, str) else float(limit)  # a parameter: any value serves the rule's shape
        side = 1.0 if op in (">", ">=") else -1.0
        shift = (0.5 + abs(limit)) * side * (1 if meets else -1)
        return {"values": limit + shift + 0.02 * (1 + abs(limit)) * rng.standard_normal(seeds)}
    exponent = {"upper_bound": -1.0, "lower_bound": 2.0}.get(family, float(test.get("exponent", 0.0)))
    drift = {"upper_bound": 0.5, "lower_bound": -0.5}.get(family, 4 * float(test.get("margin", 0.1)))
    values = power_law(rng, exponent + (0.0 if meets else drift), seeds)
    if family == "order":
        return {"sizes": SIZES, "values": values}
    return {"f": values, "g": SIZES**exponent, "sizes": SIZES}


def _judge(test, data):
    family = test["family"]
    if family == "threshold":
        op, limit = test["rule"]
        limit = 1.0 if isinstance(limit, str) else float(limit)
        return forms.threshold(data["values"], op, limit, test.get("applies_to", "worst")).result
    if family == "comparison":
        op, limit = test["rule"]
        return forms.comparison(op, 1.0 if isinstance(limit, str) else float(limit), values=data["values"]).result
    if family == "order":
        return forms.order(data["sizes"], data["values"], float(test["exponent"]), float(test["margin"])).result
    bound = forms.upper_bound if family == "upper_bound" else forms.lower_bound
    return bound(data["f"], data["g"], data["sizes"], fit=int(test.get("fit", 1)), margin=float(test.get("margin", 0.5)),
                 slope_margin=float(test.get("slope_margin", 0.1))).result  # fmt: skip


def test_every_claim_of_the_papers_can_pass_and_fail_at_its_seed_count():
    from tvutils.chapter.ledger import load

    rng = np.random.default_rng(9)
    for e in load():
        if e.kind != "paper":
            continue
        seeds = int(e.test.get("seeds", SEEDS_SUFFICIENT))
        ok = _judge(e.test, _synthetic(e.test, seeds, True, rng))
        bad = _judge(e.test, _synthetic(e.test, seeds, False, rng))
        assert (ok, bad) == (forms.MET, forms.NOT_MET), f"{e.chapter} {e.id}: {ok} / {bad} at {seeds} seeds"
