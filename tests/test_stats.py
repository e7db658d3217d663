"""eas.stats: paired comparisons with known answers."""

import math

import numpy as np
import pytest

from eas import stats


def _rng_vector(n, p, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(int)


def test_identical_methods_interval_contains_zero():
    a = _rng_vector(200, 0.7, 1)
    cmp = stats.paired_comparison(a, a.copy())
    assert cmp.diff == 0 and cmp.ci_low <= 0 <= cmp.ci_high
    assert cmp.p == 1.0 and cmp.a_only == cmp.b_only == 0
    assert cmp.verdict("better") == "does not hold"          # [0, 0]: not better
    assert cmp.verdict("no_worse", margin=1.0) == "holds"    # and certainly no worse by a point


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


def test_deterministic_with_a_seed_and_varies_without_the_same_one():
    a, b = _rng_vector(300, 0.7, 3), _rng_vector(300, 0.65, 4)
    one = stats.paired_bootstrap_ci(a, b, seed=5)
    assert one == stats.paired_bootstrap_ci(a, b, seed=5)
    # another seed draws other replicates (the percentiles may still land on the same 1/n lattice point)
    assert not np.array_equal(stats._paired_replicates(a, b, 100, 5), stats._paired_replicates(a, b, 100, 6))
    A, B = np.stack([a, _rng_vector(300, 0.7, 7)]), np.stack([b, _rng_vector(300, 0.65, 8)])
    assert stats.two_level_bootstrap_ci(A, B, seed=5, n_boot=500) == stats.two_level_bootstrap_ci(A, B, seed=5, n_boot=500)


def test_bootstrap_interval_matches_the_normal_approximation():
    # 60 vs 40 discordant items out of 1000: SE of the mean difference = sqrt(q/n - d^2/n)
    n = 1000
    a = np.zeros(n, int); b = np.zeros(n, int)
    a[:60] = 1; b[60:100] = 1; a[100:700] = 1; b[100:700] = 1
    cmp = stats.paired_comparison(a, b, n_boot=20_000)
    d, q = 0.02, 0.1
    se = 100 * math.sqrt((q - d * d) / n)
    assert cmp.diff == pytest.approx(2.0)
    assert cmp.ci_low == pytest.approx(2.0 - 1.96 * se, abs=0.25)
    assert cmp.ci_high == pytest.approx(2.0 + 1.96 * se, abs=0.25)
    # MDD at 80% power from the discordance rate: (1.96 + 0.84) * sqrt(q / n)
    assert cmp.mdd == pytest.approx((1.959964 + 0.841621) * 100 * math.sqrt(q / n), rel=1e-4)


def test_mdd_shrinks_with_more_items_and_has_a_floor():
    small = stats.paired_comparison(*[_rng_vector(200, 0.7, s) for s in (1, 2)])
    big = stats.paired_comparison(*[_rng_vector(2000, 0.7, s) for s in (1, 2)])
    assert big.mdd < small.mdd
    same = stats.paired_comparison(np.ones(100, int), np.ones(100, int))
    assert same.mdd > 0  # zero discordant items: floored at one, not an MDD of zero


def test_seeds_one_each_is_the_paired_comparison():
    a, b = _rng_vector(150, 0.7, 1), _rng_vector(150, 0.6, 2)
    assert stats.seeds_comparison(a[None], b[None]) == stats.paired_comparison(a, b)


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
    tight = stats.seeds_comparison(steady, B, n_boot=4000)
    wide = stats.seeds_comparison(noisy, B, n_boot=4000)
    assert tight.seeds_a == 3 and tight.p_kind == "two-level bootstrap"
    assert wide.seed_sd_a > tight.seed_sd_a == 0
    assert (wide.ci_high - wide.ci_low) > (tight.ci_high - tight.ci_low)
    assert tight.verdict() == "holds"
    assert len(wide.acc_a_seeds) == 3 and wide.acc_a == pytest.approx(np.mean(wide.acc_a_seeds))


def test_identical_seeds_contain_zero():
    A = np.stack([_rng_vector(200, 0.7, s) for s in range(3)])
    cmp = stats.seeds_comparison(A, A.copy(), n_boot=2000)
    assert cmp.diff == 0 and cmp.ci_low <= 0 <= cmp.ci_high
    assert cmp.verdict().startswith("cannot tell") or cmp.verdict() == "does not hold"


def test_verdict_rules():
    assert stats.verdict(0.5, 3.0) == "holds"
    assert stats.verdict(-3.0, -0.5) == "does not hold"
    assert stats.verdict(-1.24, 2.0) == "cannot tell, the interval is [-1.2, +2.0]"
    # non-inferiority with a 2-point margin
    assert stats.verdict(-1.5, 1.0, claim="no_worse", margin=2.0) == "holds"
    assert stats.verdict(-6.0, -2.5, claim="no_worse", margin=2.0) == "does not hold"
    assert stats.verdict(-3.0, 1.0, claim="no_worse", margin=2.0).startswith("cannot tell")
    with pytest.raises(stats.StatsError):
        stats.verdict(0, 1, claim="worse")
    with pytest.raises(stats.StatsError):
        stats.verdict(2, 1)


def test_bad_inputs_are_named():
    with pytest.raises(stats.StatsError, match="same items"):
        stats.paired_comparison([1, 0], [1, 0, 1])
    with pytest.raises(stats.StatsError, match="0/1"):
        stats.paired_comparison([2, 0], [1, 0])
    with pytest.raises(stats.StatsError, match="same items"):
        stats.seeds_comparison(np.ones((2, 3)), np.ones((2, 4)))


def test_row_and_sentence():
    a, b = _rng_vector(120, 0.8, 1), _rng_vector(120, 0.6, 2)
    cmp = stats.paired_comparison(a, b)
    row = cmp.to_row(claim="no_worse", margin=2.0)
    assert row["verdict"] == cmp.verdict("no_worse", 2.0) and row["claim"] == "no worse by more than 2"
    text = stats.describe(cmp, "EAS", "LoRA")
    assert "EAS" in text and f"{cmp.mdd:.1f}" in text and cmp.verdict() in text


# ----------------------------------------------------------------------------- finished runs, paired by item

def _fake_run(spec, correct, uids=None):
    import json

    import pandas as pd

    from eas import io

    run = spec.run_dir()
    uids = uids or [f"q{i}" for i in range(len(correct))]
    io.save_frame(run / "generations.csv", pd.DataFrame({"uid": uids, "prediction": "x", "correct": list(map(bool, correct))}))
    io.write_json(run / "row.json", {"studies": ["t"], "key": spec.key()})


def test_compare_runs_pairs_by_uid(tmp_path, monkeypatch):
    from eas.experiments import ExperimentError, ExperimentSpec, compare_runs, compare_seeds, item_correctness

    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    base = ExperimentSpec(task="vqa", method="lora", model="tiny", n_eval=6)
    a, b = base, base.replace(method="adapter")
    _fake_run(a, [1, 1, 1, 1, 0, 1])
    # B's generations in another order: pairing must follow the uids
    _fake_run(b, [0, 0, 1, 1, 0, 1], uids=["q5", "q4", "q3", "q2", "q1", "q0"])
    assert item_correctness(b).loc["q0"] == 1 and item_correctness(b).loc["q5"] == 0
    row = compare_runs(a, b)
    assert row["a_only"] == 2 and row["b_only"] == 0  # q1 and q5 right for A only; q4 wrong for both
    assert row["p"] == pytest.approx(0.5) and row["p_kind"] == "exact McNemar"
    assert row["verdict"] in ("holds",) or row["verdict"].startswith("cannot tell")
    seeds_a = [a, a.replace(seed=1)]
    _fake_run(seeds_a[1], [1, 1, 1, 1, 1, 1])
    row = compare_seeds(seeds_a, [b], claim="no_worse", margin=5.0, n_boot=500)
    assert row["seeds_a"] == 2 and row["seeds_list_a"] == [0, 1] and row["interval"].startswith("two-level")
    with pytest.raises(ExperimentError, match="not finished"):
        compare_runs(a, base.replace(method="mam"))
    with pytest.raises(ExperimentError, match="different tasks"):
        compare_runs(a, base.replace(sizes={"test": 3}))
