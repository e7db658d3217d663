"""eas.study.stats: paired comparisons with known answers, and the simulations that check its intervals."""

import math

import numpy as np
import pandas as pd
import pytest

from eas.study import stats


def _rng_vector(n, p, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(int)


def _counts(n, a_only, b_only, both=0):
    """0/1 vectors of n items with the given discordant (and both-right) counts."""
    a, b = np.zeros(n, int), np.zeros(n, int)
    a[:a_only] = 1
    b[a_only:a_only + b_only] = 1
    a[a_only + b_only:a_only + b_only + both] = b[a_only + b_only:a_only + b_only + both] = 1
    return a, b


# ----------------------------------------------------------------------------- one seed each

def test_identical_methods_interval_contains_zero():
    a = _rng_vector(200, 0.7, 1)
    cmp = stats.paired_comparison(a, a.copy())
    assert cmp.diff == 0 and cmp.ci_low < 0 < cmp.ci_high
    assert cmp.p == 1.0 and cmp.a_only == cmp.b_only == 0
    # zero discordant items of 200 still leave ~1.9 points either way (not a zero-width interval)
    assert cmp.ci_high == pytest.approx(-cmp.ci_low) and 1.5 < cmp.ci_high < 2.5
    assert cmp.verdict("better").startswith("cannot tell")
    assert cmp.verdict("no_worse", margin=2.0) == "holds"


def test_a_right_on_every_item_b_misses_excludes_zero():
    b = _rng_vector(100, 0.6, 2)
    a = np.ones_like(b)
    cmp = stats.paired_comparison(a, b)
    assert cmp.a_only == (b == 0).sum() and cmp.b_only == 0
    assert cmp.ci_low > 0
    assert cmp.verdict() == "holds"
    assert cmp.p == pytest.approx(2 * 0.5 ** cmp.a_only)
    # the reverse comparison: B better than A does not hold
    assert stats.paired_comparison(b, a).verdict() == "does not hold"


def test_mcnemar_against_hand_computed_binomial():
    # 7 vs 2 discordant: 2 * P[X <= 2], X ~ Bin(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert stats.mcnemar_exact(7, 2) == pytest.approx(2 * 46 / 512)
    assert stats.mcnemar_exact(2, 7) == stats.mcnemar_exact(7, 2)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0  # capped at 1
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    # large counts stay finite and exact-ish
    assert 0 < stats.mcnemar_exact(1100, 1000) < 0.05


def test_discordant_counts_from_vectors():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 0, 0, 0]
    assert stats.discordant(a, b) == (2, 1)
    cmp = stats.paired_comparison(a, b)
    assert cmp.diff == pytest.approx(100 * (3 - 2) / 6)
    assert cmp.discordance == pytest.approx(3 / 6)
    assert cmp.counts == (1, 2, 1, 2)


def _brute_tango_z(b, c, n, delta):
    """Tango's score statistic with the restricted MLE of p01 found numerically (no closed form)."""
    lo, hi = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
    def loglik(p):
        return (b * math.log(p + delta) if b else 0) + (c * math.log(p) if c else 0) + \
            ((n - b - c) * math.log(1 - 2 * p - delta) if n - b - c else 0)
    for _ in range(200):  # ternary search: the log-likelihood is concave in p01
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (m1, hi) if loglik(m1) < loglik(m2) else (lo, m2)
    p01 = (lo + hi) / 2
    return (b - c - n * delta) / math.sqrt(n * (2 * p01 + delta * (1 - delta)))


def test_tango_score_matches_a_numerical_restricted_mle_and_mcnemar_at_zero():
    for b, c, n, delta in [(12, 5, 200, 0.01), (12, 5, 200, -0.02), (3, 0, 100, 0.05), (30, 40, 300, 0.02),
                           (0, 4, 50, -0.03)]:
        assert float(stats._tango_z(b, c, n, delta)) == pytest.approx(_brute_tango_z(b, c, n, delta), rel=1e-5)
    # at a difference of 0 it is the (asymptotic) McNemar statistic (b - c) / sqrt(b + c)
    assert stats.tango_p(12, 5, 200) == pytest.approx(math.erfc(7 / math.sqrt(17) / math.sqrt(2)))
    # the interval's ends are where the score statistic reaches -/+ 1.96
    lo, hi = stats.tango_interval(12, 5, 200)
    assert float(stats._tango_z(12, 5, 200, lo / 100)) == pytest.approx(stats._z(0.975), abs=1e-6)
    assert float(stats._tango_z(12, 5, 200, hi / 100)) == pytest.approx(-stats._z(0.975), abs=1e-6)
    # vectorised = one at a time; swapping A and B mirrors the interval
    los, his = stats.tango_interval(np.array([12, 0, 4]), np.array([5, 0, 0]), np.array([200, 200, 200]))
    assert (los[0], his[0]) == pytest.approx((lo, hi))
    assert (los[2], his[2]) == pytest.approx(stats.tango_interval(4, 0, 200))
    assert stats.tango_interval(5, 12, 200) == pytest.approx((-hi, -lo))


def test_few_discordant_items_never_hold_against_the_exact_test():
    # issue 22's cases: the percentile bootstrap said "holds" beside p >= 0.05
    for a_only, b_only in [(4, 0), (5, 0), (7, 1), (9, 2)]:
        cmp = stats.paired_comparison(*_counts(200, a_only, b_only, both=100))
        assert cmp.p >= 0.05
        assert cmp.verdict().startswith("cannot tell") and f"p = {cmp.p:.3g}" in cmp.verdict()
        assert not stats.paired_comparison(*_counts(200, b_only, a_only, both=100)).verdict() == "does not hold"
    one = stats.paired_comparison([1], [0])
    assert one.p == 1.0 and one.verdict().startswith("cannot tell") and one.ci_low < 0
    # over every small table: a decisive "better" verdict always comes with p < 0.05, and the claim's p agrees
    for a_only in range(16):
        for b_only in range(16):
            cmp = stats.paired_comparison(*_counts(200, a_only, b_only, both=90))
            v = cmp.verdict()
            if v in ("holds", "does not hold"):
                assert cmp.p < 0.05 and cmp.claim_p() < 0.05
                assert (cmp.ci_low > 0) if v == "holds" else (cmp.ci_high <= 0)
            else:
                assert v.startswith("cannot tell")


def test_claim_p_agrees_with_the_no_worse_verdict():
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(50, 400))
        a = _rng_vector(n, rng.uniform(0.4, 0.9), int(rng.integers(1e6)))
        b = _rng_vector(n, 0.65, int(rng.integers(1e6)))
        for seed_sd in (None, 1.5):
            cmp = stats.paired_comparison(a, b, seed_sd=seed_sd)
            for margin in (1.0, 3.0, 6.0):
                v, p = cmp.verdict("no_worse", margin), cmp.claim_p("no_worse", margin)
                if abs(p - 0.05) > 1e-6:
                    assert (v in ("holds", "does not hold")) == (p < 0.05), (v, p)


def test_deterministic_with_a_seed_and_varies_without_the_same_one():
    a, b = _rng_vector(300, 0.7, 3), _rng_vector(300, 0.65, 4)
    one = stats.paired_bootstrap_ci(a, b, seed=5)
    assert one == stats.paired_bootstrap_ci(a, b, seed=5)
    # another seed draws other replicates (the percentiles may still land on the same 1/n lattice point)
    assert not np.array_equal(stats._paired_replicates(a, b, 100, 5), stats._paired_replicates(a, b, 100, 6))
    A, B = np.stack([a, _rng_vector(300, 0.7, 7)]), np.stack([b, _rng_vector(300, 0.65, 8)])
    twice = [stats.two_level_bootstrap_ci(A, B, seed=5, n_boot=500) for _ in range(2)]
    assert twice[0] == twice[1]


def test_interval_matches_the_normal_approximation_with_many_discordant_items():
    # 60 vs 40 discordant items out of 1000: SE of the mean difference = sqrt(q/n - d^2/n)
    n = 1000
    a, b = _counts(n, 60, 40, both=600)
    cmp = stats.paired_comparison(a, b)
    d, q = 0.02, 0.1
    se = 100 * math.sqrt((q - d * d) / n)
    assert cmp.diff == pytest.approx(2.0)
    assert cmp.ci_low == pytest.approx(2.0 - 1.96 * se, abs=0.1)
    assert cmp.ci_high == pytest.approx(2.0 + 1.96 * se, abs=0.1)
    boot = stats.paired_bootstrap_ci(a, b, n_boot=20_000)  # the kept bootstrap agrees here
    assert boot == pytest.approx((cmp.ci_low, cmp.ci_high), abs=0.25)
    # MDD at 80% power from the discordance rate: (1.96 + 0.84) * sqrt(q / n)
    assert cmp.mdd == pytest.approx((1.959964 + 0.841621) * 100 * math.sqrt(q / n), rel=1e-4)


def test_mdd_shrinks_with_more_items_and_has_a_floor():
    small = stats.paired_comparison(*[_rng_vector(200, 0.7, s) for s in (1, 2)])
    big = stats.paired_comparison(*[_rng_vector(2000, 0.7, s) for s in (1, 2)])
    assert big.mdd < small.mdd
    same = stats.paired_comparison(np.ones(100, int), np.ones(100, int))
    assert same.mdd > 0  # zero discordant items: floored at one, not an MDD of zero


def test_seed_spread_widens_the_one_seed_interval_and_says_so():
    a, b = _counts(300, 30, 12, both=150)
    items = stats.paired_comparison(a, b)
    wide = stats.paired_comparison(a, b, seed_sd=2.0)
    zc = stats._z(0.975)
    s2 = 2 * 2.0 ** 2  # two independent runs, 2 points each
    assert wide.ci_low == pytest.approx(items.diff - math.sqrt((items.diff - items.ci_low) ** 2 + zc * zc * s2))
    assert wide.ci_high == pytest.approx(items.diff + math.sqrt((items.ci_high - items.diff) ** 2 + zc * zc * s2))
    assert wide.p >= items.p and wide.mdd > items.mdd and wide.assumed_sd == (2.0, 2.0)
    assert items.verdict() == "holds" and wide.verdict().startswith("cannot tell")
    assert "item noise only" in stats.describe(items, "EAS", "LoRA")
    text = stats.describe(wide, "EAS", "LoRA")
    assert "widened by a seed spread of 2.0 points" in text and "item noise only" not in text
    # a pair gives each method its own spread
    assert stats.paired_comparison(a, b, seed_sd=(1.0, 3.0)).ci_low == pytest.approx(
        stats.paired_comparison(a, b, seed_sd=math.sqrt(5.0)).ci_low)
    with pytest.raises(stats.StatsError, match="seed_sd"):
        stats.paired_comparison(a, b, seed_sd=-1)


# ----------------------------------------------------------------------------- seeds

def test_seeds_one_each_is_the_paired_comparison():
    a, b = _rng_vector(150, 0.7, 1), _rng_vector(150, 0.6, 2)
    assert stats.seeds_comparison(a[None], b[None]) == stats.paired_comparison(a, b)
    assert stats.seeds_comparison(a[None], b[None], seed_sd=2.0) == stats.paired_comparison(a, b, seed_sd=2.0)


def test_t_distribution_against_known_quantiles():
    # table values of Student's t
    assert stats.t_ppf(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_ppf(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert stats.t_ppf(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert stats.t_ppf(0.95, 10) == pytest.approx(1.8125, abs=1e-4)
    assert stats.t_ppf(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert stats.t_ppf(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    for df in (1.5, 3.3, 17.0):
        for q in (0.6, 0.9, 0.995):
            assert stats.t_sf(stats.t_ppf(q, df), df) == pytest.approx(1 - q, rel=1e-8)


def test_seeds_t_interval_by_hand():
    rng = np.random.default_rng(11)
    A = (rng.random((3, 120)) < np.array([[0.70], [0.75], [0.66]])).astype(int)
    B = (rng.random((2, 120)) < 0.6).astype(int)
    cmp = stats.seeds_comparison(A, B)
    acc_a, acc_b = 100 * A.mean(1), 100 * B.mean(1)
    seed_a, seed_b = acc_a.var(ddof=1) / 3, acc_b.var(ddof=1) / 2
    item = 1e4 * max(0.0, (A.mean(0) - B.mean(0)).var(ddof=1) - A.var(0, ddof=1).mean() / 3
                     - B.var(0, ddof=1).mean() / 2) / 120
    se = math.sqrt(seed_a + seed_b + item)
    df = se ** 4 / (seed_a ** 2 / 2 + seed_b ** 2 / 1 + (item ** 2 / 119 if item else 0))
    tq = stats.t_ppf(0.975, df)
    assert cmp.diff == pytest.approx(acc_a.mean() - acc_b.mean())
    assert (cmp.ci_low, cmp.ci_high) == pytest.approx((cmp.diff - tq * se, cmp.diff + tq * se))
    assert cmp.df == pytest.approx(df) and cmp.p_kind.startswith("t test")
    assert cmp.p == pytest.approx(2 * stats.t_sf(abs(cmp.diff) / se, df))
    assert list(cmp.acc_a_seeds) == pytest.approx(list(acc_a)) and cmp.seed_sd_a == pytest.approx(acc_a.std(ddof=1))
    # interval and test agree by construction
    assert (cmp.verdict() == "holds") == (cmp.ci_low > 0) == (cmp.p < 0.05 and cmp.diff > 0)
    assert "per seed" in stats.describe(cmp) and "training seeds (measured over 3 and 2 seeds)" in stats.describe(cmp)


def test_one_seed_on_one_side_borrows_or_takes_the_given_spread():
    rng = np.random.default_rng(3)
    A = (rng.random((3, 200)) < np.array([[0.70], [0.76], [0.64]])).astype(int)
    b = (rng.random((1, 200)) < 0.6).astype(int)
    borrowed = stats.seeds_comparison(A, b)
    assert "B's single seed assumed to spread like A's" in borrowed.noise
    given = stats.seeds_comparison(A, b, seed_sd=(0.0, 0.5))
    assert "spread 0.5 points measured elsewhere" in given.noise and given.assumed_sd == (0.0, 0.5)
    assert (given.ci_high - given.ci_low) < (borrowed.ci_high - borrowed.ci_low)


def test_seed_variance_widens_the_interval():
    # items are the same; the two methods differ by 5 points on average, but A's seeds disagree a lot
    rng = np.random.default_rng(0)
    n = 400
    base = (rng.random(n) < 0.6).astype(int)
    B = np.stack([base] * 3)
    steady = np.stack([np.where(rng.random(n) < 0.25, 1, base)] * 3)  # ~10 points better, every seed
    noisy = []
    for shift in (0.0, 0.25, 0.5):  # seed-to-seed accuracy differences of several points
        noisy.append(np.where(rng.random(n) < shift, 1, base))
    noisy = np.stack(noisy)
    tight = stats.seeds_comparison(steady, B)
    wide = stats.seeds_comparison(noisy, B)
    assert tight.seeds_a == 3 and tight.p_kind.startswith("t test over seed means")
    assert wide.seed_sd_a > tight.seed_sd_a == 0
    assert (wide.ci_high - wide.ci_low) > (tight.ci_high - tight.ci_low)
    assert tight.verdict() == "holds"
    assert len(wide.acc_a_seeds) == 3 and wide.acc_a == pytest.approx(np.mean(wide.acc_a_seeds))


def test_identical_seeds_contain_zero():
    A = np.stack([_rng_vector(200, 0.7, s) for s in range(3)])
    cmp = stats.seeds_comparison(A, A.copy())
    assert cmp.diff == 0 and cmp.ci_low <= 0 <= cmp.ci_high
    assert cmp.verdict().startswith("cannot tell") or cmp.verdict() == "does not hold"


# ----------------------------------------------------------------------------- verdicts and errors

def test_verdict_rules():
    assert stats.verdict(0.5, 3.0) == "holds"
    assert stats.verdict(-3.0, -0.5) == "does not hold"
    assert stats.verdict(-1.24, 2.0) == "cannot tell, the interval is [-1.2, +2.0]"
    # non-inferiority with a 2-point margin
    assert stats.verdict(-1.5, 1.0, claim="no_worse", margin=2.0) == "holds"
    assert stats.verdict(-6.0, -2.5, claim="no_worse", margin=2.0) == "does not hold"
    assert stats.verdict(-3.0, 1.0, claim="no_worse", margin=2.0).startswith("cannot tell")
    # the test of no difference must agree before "better" is decided
    assert stats.verdict(0.5, 4.0, p=0.125) == ("cannot tell, the interval is [+0.5, +4.0] but the test of no "
                                                "difference gives p = 0.125 >= 0.05")
    assert stats.verdict(0.5, 4.0, p=0.01) == "holds"
    assert stats.verdict(-4.0, -0.5, p=0.2).startswith("cannot tell")
    with pytest.raises(stats.StatsError):
        stats.verdict(0, 1, claim="worse")
    with pytest.raises(stats.StatsError):
        stats.verdict(2, 1)
    with pytest.raises(stats.StatsError, match="NaN"):
        stats.verdict(math.nan, math.nan)
    with pytest.raises(stats.StatsError, match="NaN"):
        stats.verdict(0.0, float("nan"))
    with pytest.raises(stats.StatsError, match="margin"):
        stats.verdict(0, 1, claim="better", margin=1.0)


def test_bad_inputs_are_named():
    with pytest.raises(stats.StatsError, match="same items"):
        stats.paired_comparison([1, 0], [1, 0, 1])
    with pytest.raises(stats.StatsError, match="0/1"):
        stats.paired_comparison([2, 0], [1, 0])
    with pytest.raises(stats.StatsError, match="same items"):
        stats.seeds_comparison(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(stats.StatsError, match="NaN"):
        stats.paired_comparison([1.0, np.nan], [1, 0])
    with pytest.raises(stats.StatsError, match="non-empty"):
        stats.paired_comparison([], [])
    for call in (lambda: stats.paired_bootstrap_ci([1, 0], [0, 1], n_boot=0),
                 lambda: stats.two_level_bootstrap_ci([[1, 0]], [[0, 1]], n_boot=0),
                 lambda: stats.paired_comparison([1, 0], [0, 1], n_boot=0),
                 lambda: stats.seeds_comparison([[1, 0], [1, 1]], [[0, 1]], n_boot=-3)):
        with pytest.raises(stats.StatsError, match="n_boot"):
            call()


def test_row_and_sentence():
    a, b = _rng_vector(120, 0.8, 1), _rng_vector(120, 0.6, 2)
    cmp = stats.paired_comparison(a, b)
    row = cmp.to_row(claim="no_worse", margin=2.0)
    assert row["verdict"] == cmp.verdict("no_worse", 2.0) and row["claim"] == "no worse by more than 2"
    assert row["p_claim"] == cmp.claim_p("no_worse", 2.0) and row["claim_kind"] == "no_worse"
    text = stats.describe(cmp, "EAS", "LoRA")
    assert "EAS" in text and f"{cmp.mdd:.1f}" in text and cmp.verdict() in text


# ----------------------------------------------------------------------------- pairing by item id

def _run(uids, correct):
    return pd.DataFrame({"uid": uids, "correct": correct})


def test_pair_by_item_follows_ids_not_rows():
    a = _run(["q0", "q1", "q2"], [True, False, True])
    b = _run(["q2", "q0", "q1"], [False, True, True])
    paired = stats.pair_by_item(a, b)
    assert paired.ids == ("q0", "q1", "q2")
    assert paired.a.tolist() == [1, 0, 1] and paired.b.tolist() == [1, 1, 0]
    assert "every one scored" in paired.note
    seeds = stats.pair_by_item([a, _run(["q1", "q2", "q0"], [1, 1, 1])], [b])
    assert seeds.a.shape == (2, 3) and seeds.b.shape == (1, 3) and seeds.a[1].tolist() == [1, 1, 1]
    # a Series by id and CSV spellings work too
    s = pd.Series(["True", "False", "true"], index=["q2", "q1", "q0"])
    assert stats.pair_by_item(a, s).b.tolist() == [1, 0, 1]
    cmp = stats.compare(a, b)
    assert cmp.a_only == 1 and cmp.b_only == 1


def test_pair_by_item_errors_name_the_items():
    a = _run(["q0", "q1", "q1", "q2"], [1, 0, 1, 1])
    b = _run(["q0", "q1", "q2"], [1, 0, 1])
    with pytest.raises(stats.StatsError, match=r"more than once: q1 \(x2\)"):
        stats.pair_by_item(a, b)  # one side: no shape error, the id is named
    with pytest.raises(stats.StatsError, match="q1"):
        stats.pair_by_item(a, a)  # both sides: no silent cross-pairing
    short = _run(["q0", "q1"], [1, 0])
    with pytest.raises(stats.StatsError, match=r"1 item \(q2\) of B's"):
        stats.pair_by_item(short, b)
    dropped = stats.pair_by_item(short, b, missing="drop")
    assert dropped.ids == ("q0", "q1") and dropped.only_b == ("q2",) and "dropped 0 items" in dropped.note
    with pytest.raises(stats.StatsError, match=r"no correctness for 1 item \(q1\)"):
        stats.pair_by_item(_run(["q0", "q1"], [True, None]), short)
    with pytest.raises(stats.StatsError, match=r"no correctness .*q1"):
        stats.pair_by_item(_run(["q0", "q1"], [1.0, np.nan]), short)
    with pytest.raises(stats.StatsError, match=r"q1='maybe'"):
        stats.pair_by_item(_run(["q0", "q1"], [1, "maybe"]), short)
    with pytest.raises(stats.StatsError, match="share no items"):
        stats.pair_by_item(_run(["x"], [1]), _run(["y"], [1]), missing="drop")
    with pytest.raises(stats.StatsError, match="no column"):
        stats.pair_by_item(pd.DataFrame({"id": ["q0"], "correct": [1]}), short)


# ----------------------------------------------------------------------------- multiplicity

def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # ascending 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert stats.holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]).tolist() == [0.5]
    assert stats.holm([0.3, 0.9]).tolist() == pytest.approx([0.6, 0.9])
    with pytest.raises(stats.StatsError):
        stats.holm([0.1, math.nan])


def test_correct_family_downgrades_what_the_family_cannot_carry():
    clear = stats.paired_comparison(*_counts(300, 40, 10, both=150))     # p ~ 1e-5
    marginal = stats.paired_comparison(*_counts(300, 22, 9, both=150))   # p ~ 0.03
    null = stats.paired_comparison(*_counts(300, 10, 10, both=150))
    rows = {"clear": clear.to_row(), "marginal": marginal.to_row(), "null": null.to_row(),
            "timing": {"p": math.nan, "verdict": "holds", "ci_low": 1.0, "ci_high": 2.0}}
    assert marginal.verdict() == "holds"
    fam = stats.correct_family(rows, family="02_redundancy", headline=["clear"])
    assert fam.loc["clear", "verdict"] == "holds" and fam.loc["clear", "headline"]
    assert fam.loc["marginal", "verdict_unadjusted"] == "holds"
    assert fam.loc["marginal", "verdict"].startswith("cannot tell after Holm over 3 claims of 02_redundancy")
    assert fam.loc["marginal", "p_adjusted"] == pytest.approx(2 * marginal.claim_p())
    assert fam.loc["timing", "verdict"] == "holds" and fam.loc["timing", "correction"] == "none (no test)"
    assert set(fam.correction) == {"holm over 3", "none (no test)"} and (fam.family == "02_redundancy").all()
    note = stats.family_note(fam)
    assert "3 tested verdicts" in note and "headline, pre-registered: clear" in note and "turned 1" in note
    with pytest.raises(stats.StatsError, match="not in family"):
        stats.correct_family(rows, family="x", headline=["nope"])
    with pytest.raises(stats.StatsError, match="no claims"):
        stats.correct_family([], family="x")


# ----------------------------------------------------------------------------- selection on held-out items

def test_split_items_is_stable_and_seeded():
    ids = [f"q{i}" for i in range(1000)]
    sel, cmp = stats.split_items(ids)
    assert sorted(sel + cmp) == sorted(ids) and not set(sel) & set(cmp)
    assert 430 < len(sel) < 570
    assert stats.split_items(ids) == (sel, cmp)
    # an item's side depends on its id and the seed only, not on which other items are present
    sub_sel, _ = stats.split_items(ids[::3])
    assert set(sub_sel) == set(sel) & set(ids[::3])
    assert stats.split_items(ids, seed=1)[0] != sel
    assert len(stats.split_items(ids, fraction=0.25)[0]) < 330
    with pytest.raises(stats.StatsError, match="repeat"):
        stats.split_items(["a", "b", "a"])
    with pytest.raises(stats.StatsError, match="fraction"):
        stats.split_items(ids, fraction=1.0)


def test_select_then_compare_picks_on_one_half_and_compares_on_the_other():
    ids = [f"q{i}" for i in range(400)]
    sel, cmp_ids = stats.split_items(ids, seed=0)
    in_sel = np.array([i in set(sel) for i in ids])
    ref = pd.Series(np.ones(400, int), index=ids)
    good_on_selection = pd.Series(in_sel.astype(int), index=ids)        # right exactly on the selection half
    fair = pd.Series(_rng_vector(400, 0.5, 1), index=ids)
    out = stats.select_then_compare(ref, {"fair": fair, "lucky": good_on_selection})
    assert out.best == "lucky" and out.selection_accuracy["lucky"] == 100.0
    assert out.n_selection == len(sel) and out.n_comparison == len(cmp_ids)
    assert out.comparison.n_items == len(cmp_ids) and out.comparison.acc_b == 0.0  # fresh items: it misses all
    assert out.verdict() == "holds" and out.to_row()["best"] == "lucky"
    # A among the candidates and best on the selection half: nothing to compare
    top = stats.select_then_compare("ref", {"ref": ref, "fair": fair})
    assert top.best == "ref" and top.comparison is None and "nothing to compare" in top.verdict()
    # with seeds: only the winner's are asked for
    asked = []
    def seeds(label):
        return asked.append(label) or [fair, pd.Series(_rng_vector(400, 0.5, 2), index=ids)]
    out = stats.select_then_compare(ref, {"fair": fair, "lucky": good_on_selection},
                                    a_seeds=[ref, ref], candidate_seeds=seeds, claim="no_worse", margin=2.0)
    assert asked == ["lucky"] and out.comparison.seeds_a == 2 and out.comparison.n_items == len(cmp_ids)


# ----------------------------------------------------------------------------- simulations (issue 22)
#
# Each reproduces one of the issue's measurements with a modest number of replications and a fixed seed,
# and asserts the figure within a few Monte-Carlo standard errors of what the procedure should give.
# Items have difficulties p_i ~ U(0.3, 0.8); a training run of a method answers item i right with
# probability p_i + (its effect) + tau, tau ~ N(0, seed spread) drawn once per run (a run that is better or
# worse on every item), independently per item otherwise.

def _items(rng, n):
    return rng.uniform(0.3, 0.8, n)


def _train(rng, p, effect, seed_sd):
    tau = rng.normal(0.0, seed_sd / 100) if seed_sd else 0.0
    return (rng.random(p.size) < np.clip(p + effect + tau, 0, 1)).astype(int)


def test_simulation_one_seed_interval_covers_item_noise():
    # the paired counts drawn directly: coverage of the true p10 - p01 by the 95% Tango interval
    rng = np.random.default_rng(20)
    reps = 4000
    for n, p10, p01 in [(200, 0.08, 0.05), (200, 0.02, 0.005), (500, 0.10, 0.10), (200, 0.15, 0.03)]:
        counts = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=reps)
        lo, hi = stats.tango_interval(counts[:, 0], counts[:, 1], np.full(reps, n))
        cover = float(((lo <= 100 * (p10 - p01)) & (100 * (p10 - p01) <= hi)).mean())
        assert 0.925 <= cover <= 0.975, (n, p10, p01, cover)   # 0.948, 0.933, 0.946, 0.951 here; MC SE ~0.0035


def test_simulation_seed_spread_one_seed_widened_interval_covers_the_method_difference():
    # issue 22.1: with a 4-point seed spread the item-only interval covers the methods' difference ~0.6-0.8
    # of the time; widened by the (known) spread it covers ~0.95
    rng = np.random.default_rng(21)
    reps, n, delta, sd = 600, 200, 3.0, 4.0
    plain = widened = 0
    for _ in range(reps):
        p = _items(rng, n)
        a, b = _train(rng, p, delta / 200, sd), _train(rng, p, -delta / 200, sd)
        one, wide = stats.paired_comparison(a, b), stats.paired_comparison(a, b, seed_sd=sd)
        plain += one.ci_low <= delta <= one.ci_high
        widened += wide.ci_low <= delta <= wide.ci_high
    assert plain / reps < 0.85               # 0.765 here
    assert 0.925 <= widened / reps <= 0.985  # 0.953 here; MC SE ~0.009


def test_simulation_three_seeds_t_interval_covers_with_a_seed_spread():
    # issue 22.4: the two-level bootstrap covered 0.91 at a 4-point spread; the t interval over seed means
    rng = np.random.default_rng(22)
    reps, n, delta = 500, 200, 3.0
    for sd in (4.0, 0.0):
        cover = false_holds = 0
        for _ in range(reps):
            p = _items(rng, n)
            A = np.stack([_train(rng, p, delta / 200, sd) for _ in range(3)])
            B = np.stack([_train(rng, p, -delta / 200, sd) for _ in range(3)])
            cmp = stats.seeds_comparison(A, B)
            cover += cmp.ci_low <= delta <= cmp.ci_high
            A0 = np.stack([_train(rng, p, 0.0, sd) for _ in range(3)])  # and under the null, A0 against B0
            B0 = np.stack([_train(rng, p, 0.0, sd) for _ in range(3)])
            false_holds += stats.seeds_comparison(A0, B0).verdict() == "holds"
        assert cover / reps >= 0.92, (sd, cover / reps)              # 0.946 (spread 4), 0.962 (none) here
        assert false_holds / reps <= 0.04, (sd, false_holds / reps)  # meant <= 0.025; 0.016, 0.014 here


def test_simulation_selection_on_held_out_items_removes_the_winners_curse():
    # issue 22.2: five equal rivals, the best picked on the items it is compared on: "better: does not hold"
    # ~10% of the time where 2.5% is meant; picked on the other half, at most the meant rate
    rng = np.random.default_rng(23)
    reps, reps_split, n, k = 2000, 600, 500, 5  # the split arm is slower (pandas); it needs fewer
    ids = [f"q{i}" for i in range(n)]
    same = held_out = 0
    for r in range(reps):
        p = _items(rng, n)
        runs = (rng.random((k + 1, n)) < p).astype(int)
        ref, rivals = runs[0], runs[1:]
        best = int(np.argmax(rivals.mean(axis=1)))
        same += stats.paired_comparison(ref, rivals[best]).verdict() == "does not hold"
        if r < reps_split:
            out = stats.select_then_compare(pd.Series(ref, index=ids),
                                            {f"rule {j}": pd.Series(rivals[j], index=ids) for j in range(k)})
            held_out += out.verdict() == "does not hold"
    assert same / reps >= 0.065              # 0.0755 here (0.078-0.090 at 3000 replications); MC SE ~0.006
    assert held_out / reps_split <= 0.04     # meant <= 0.025; 0.025 here; MC SE ~0.006


def test_simulation_holm_keeps_the_family_wise_error():
    # issue 22.3: four per-rule verdicts against one reference, all methods equal: without correction some
    # verdict is decisive ~12% of the time; with Holm at most 5%
    rng = np.random.default_rng(24)
    reps, n, k = 600, 200, 4
    raw = corrected = 0
    for _ in range(reps):
        p = _items(rng, n)
        runs = (rng.random((k + 1, n)) < p).astype(int)
        rows = {f"rule {j}": stats.paired_comparison(runs[0], runs[j + 1]).to_row() for j in range(k)}
        raw += any(r["verdict"] in ("holds", "does not hold") for r in rows.values())
        fam = stats.correct_family(rows, family="sim")
        corrected += bool(fam.verdict.isin(["holds", "does not hold"]).any())
    assert raw / reps >= 0.07            # 0.13 here
    assert corrected / reps <= 0.06      # Holm: <= 0.05 (0.035 here); MC SE ~0.009


# ----------------------------------------------------------------------------- finished runs, paired by item

def _fake_run(spec, correct, uids=None):

    import pandas as pd

    from eas.core import io

    run = spec.run_dir()
    uids = uids or [f"q{i}" for i in range(len(correct))]
    io.save_frame(run / "generations.csv",
                  pd.DataFrame({"uid": uids, "prediction": "x", "correct": list(map(bool, correct))}))
    io.write_json(run / "row.json", {"studies": ["t"], "key": spec.key()})


def test_compare_runs_pairs_by_uid(tmp_path, monkeypatch):
    from eas.study.experiments import ExperimentError, ExperimentSpec, compare_runs, compare_seeds, item_correctness

    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    base = ExperimentSpec(task="vqa", method="lora", model="tiny", n_eval=6)
    a, b = base, base.replace(method="adapter")
    _fake_run(a, [1, 1, 1, 1, 0, 1])
    # B's generations in another order: pairing must follow the uids
    _fake_run(b, [0, 0, 1, 1, 0, 1], uids=["q5", "q4", "q3", "q2", "q1", "q0"])
    stored = item_correctness(b).set_index("uid").correct
    assert stored.loc["q0"] and not stored.loc["q5"]
    row = compare_runs(a, b)
    assert row["a_only"] == 2 and row["b_only"] == 0  # q1 and q5 right for A only; q4 wrong for both
    assert row["p"] == pytest.approx(0.5) and row["p_kind"] == "exact McNemar"
    assert row["verdict"].startswith("cannot tell")  # 2 vs 0 discordant: p = 0.5, never "holds"
    seeds_a = [a, a.replace(seed=1)]
    _fake_run(seeds_a[1], [1, 1, 1, 1, 1, 1])
    row = compare_seeds(seeds_a, [b], claim="no_worse", margin=5.0, n_boot=500)
    assert row["seeds_a"] == 2 and row["seeds_list_a"] == [0, 1] and row["interval"].startswith("t interval")
    with pytest.raises(ExperimentError, match="not finished"):
        compare_runs(a, base.replace(method="mam"))
    with pytest.raises(ExperimentError, match="different tasks"):
        compare_runs(a, base.replace(sizes={"test": 3}))
    # an empty correctness cell and a duplicated item are named, never counted or cross-paired
    c, d = base.replace(method="mam"), base.replace(method="full")
    _fake_run(c, [1, 1, 1, 1, 0, 1])
    frame = pd.read_csv(c.run_dir() / "generations.csv", dtype={"uid": str, "correct": object})
    frame.loc[2, "correct"] = None
    frame.to_csv(c.run_dir() / "generations.csv", index=False)
    with pytest.raises(stats.StatsError, match="q2"):
        compare_runs(c, a)
    _fake_run(d, [1, 1, 1, 1, 0, 1], uids=["q0", "q1", "q1", "q3", "q4", "q5"])
    with pytest.raises(stats.StatsError, match="q1"):
        compare_runs(d, a)
