"""Chapter 2 (the redundancy search), and the shared verdict helpers it uses from eas.study.report, on synthetic
per-item correctness: every count, difference and verdict below is known by construction."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from eas.study import ledger, profiles, report, stats  # noqa: E402
from eas.study.chapters import redundancy  # noqa: E402

N = 200
IDS = [f"q{i:03d}" for i in range(N)]


def _run(values, ids=IDS):
    return pd.DataFrame({"uid": list(ids), "correct": np.asarray(values, dtype=int)})


def _pair(a_only, b_only, both=80, n=N):
    """Two runs on n items: a_only items only A gets right, b_only only B, `both` both, the rest neither."""
    a, b = np.zeros(n, int), np.zeros(n, int)
    a[:a_only] = 1
    b[a_only:a_only + b_only] = 1
    a[a_only + b_only:a_only + b_only + both] = b[a_only + b_only:a_only + b_only + both] = 1
    return a, b


# ----------------------------------------------------------------------------- text of the budget and runs

def test_budget_and_runs_note_state_the_parameters():
    P = profiles.RedundancyParams(seeds=[0, 1, 2])
    text = redundancy.budget(P)
    assert "profile `cpu`" in text and "task vqa" in text
    assert "40 warm-up steps with random skip sets, then 16 comparisons of 3 sub-networks, 4 training steps apart, " \
           "on 16 held-out examples" in text
    assert "80 fine-tuning steps of 8 examples" in text and "at most 200 test questions" in text
    assert "Training seeds: [0, 1, 2] for the bandit and the best simple rule, 0 for the other rules." in text
    rows = pd.DataFrame({"n_layers": [30] * 5, "n_eval": [200] * 5})
    note = redundancy.runs_note(P, rows)
    assert note.startswith("5 runs on vqa, k=12 of 30 MHAs skipped")
    assert "bandit search 104 supernet steps (40 warm-up)" in note and note.endswith("; 200 test examples")


def test_run_labels_name_each_selectors_set():
    rows = pd.DataFrame({"key": ["a", "b"], "selector": ["bandit", "last"]})
    assert redundancy.run_labels(rows) == {"a": "EAS, bandit set", "b": "EAS, last set"}


# ----------------------------------------------------------------------------- the search

def _trajectory():
    rows = []
    for c in range(3):
        for layer in range(4):
            rows.append({"comparisons": c, "layer": layer, "preference": (layer - 1.5) * 0.1 * c,
                         "mean_reward": 0.2 + 0.1 * c if c else np.nan})
    return pd.DataFrame(rows)


def test_search_preferences_note_and_figure():
    traj = _trajectory()
    final = redundancy.final_preferences(traj)
    assert final.to_dict() == pytest.approx({0: -0.3, 1: -0.1, 2: 0.1, 3: 0.3})
    assert redundancy.search_note(1, [0, 1]) == ("update sign used: +1 (+1: modules kept by better sub-networks gain "
                                                  "preference); skipped by the bandit: MHAs [0, 1]")
    fig = redundancy.search_figure(traj, [0, 1], 2)
    ax0, ax1, ax2 = fig.axes
    assert len(ax0.lines) == 4 + 2  # one per layer, two legend entries
    assert [line.get_color() for line in ax0.lines[:4]] == ["tab:red", "tab:red", "tab:blue", "tab:blue"]
    assert list(ax1.lines[0].get_ydata()) == pytest.approx([0.3, 0.4])  # comparison 0 has no reward
    heights = [p.get_height() for p in ax2.patches]
    assert heights == pytest.approx([-0.3, -0.1, 0.1, 0.3])
    red = matplotlib.colors.to_rgba("tab:red")
    assert [p.get_facecolor() == red for p in ax2.patches] == [True, True, False, False]
    assert ax2.get_title() == "final preference (red: the 2 skipped)"


# ----------------------------------------------------------------------------- the sets and their accuracy

def _rows():
    return pd.DataFrame({"Avg": [60.0, 50.0, 40.0], "Open": [55.0, 45.0, 35.0], "Closed": [65.0, 55.0, 45.0],
                         "eval_wall_s_per_sample": [0.1, 0.12, 0.11], "final_train_loss": [1.0, 1.1, 1.2]},
                        index=["random", "last", "bandit"])


def test_selection_table_and_figure():
    sets = {"bandit": [0, 1, 2], "random": [1, 2, 5], "last": [5, 6, 7]}
    table = redundancy.selection_table(sets, _rows(), "Avg")
    assert list(table.index) == ["bandit", "random", "last"]
    assert table["shared with bandit"].tolist() == [3, 2, 0]
    assert table.accuracy.tolist() == [40.0, 60.0, 50.0] and table.Open.tolist() == [35.0, 55.0, 45.0]
    assert table["eval s / sample"].tolist() == [0.11, 0.1, 0.12]
    fig = redundancy.selection_figure(sets, _rows().Avg, 8, 100, k=3, metric="Avg")
    grid, bar = fig.axes
    image = grid.get_images()[0].get_array()
    assert image.shape == (3, 8) and image[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0] and image[2, 5:].sum() == 3
    assert [p.get_width() for p in bar.patches] == [40.0, 60.0, 50.0]
    caps = bar.containers[0].lines[2][0].get_segments()  # the error bars: +/- one binomial SE at n = 100
    assert caps[0][:, 0] == pytest.approx([40 - 100 * np.sqrt(0.4 * 0.6 / 100), 40 + 100 * np.sqrt(0.4 * 0.6 / 100)])


# ----------------------------------------------------------------------------- the shared verdict helpers

def test_comparison_row_pairs_by_id_and_widens_by_a_seed_spread():
    a, b = _pair(20, 8)
    shuffled = _run(b).iloc[::-1]  # pairing goes by item id, not row order
    row = report.comparison_row(_run(a), shuffled)
    cmp = row["comparison"]
    assert (cmp.a_only, cmp.b_only, cmp.n_items) == (20, 8, N) and row["diff"] == pytest.approx(6.0)
    assert cmp.noise == "items only" and row["verdict"] == cmp.verdict()
    wide = report.comparison_row(_run(a), _run(b), seed_sd=(2.0, 1.0))["comparison"]
    assert wide.ci_low < cmp.ci_low and wide.ci_high > cmp.ci_high and wide.assumed_sd == (2.0, 1.0)
    assert wide.mdd > cmp.mdd
    seeds = report.comparison_row([_run(a), _run(b)], [_run(b), _run(b)])["comparison"]
    assert (seeds.seeds_a, seeds.seeds_b) == (2, 2)
    no_worse = report.comparison_row(_run(b), _run(a), claim="no_worse", margin=2.0)
    assert no_worse["claim_kind"] == "no_worse" and no_worse["margin"] == 2.0


def test_seed_spread_is_the_sd_of_per_seed_accuracy():
    a1, a2 = np.zeros(N, int), np.zeros(N, int)
    a1[:100], a2[:110] = 1, 1          # 50% and 55%
    b1, b2, b3 = np.zeros(N, int), np.zeros(N, int), np.zeros(N, int)
    b1[:80], b2[:90], b3[:100] = 1, 1, 1  # 40%, 45%, 50%
    sd = report.seed_spread([_run(a1), _run(a2)], [_run(b1), _run(b2), _run(b3)])
    assert sd == pytest.approx((np.std([50, 55], ddof=1), 5.0))
    assert report.seed_spread([_run(a1)], [_run(b1), _run(b2)]) is None
    with pytest.raises(stats.StatsError, match="do not score the same items"):
        report.seed_spread([_run(a1), _run(a2[:-1], IDS[:-1])], [_run(b1), _run(b2)])


def test_describe_corrected_replaces_only_the_verdict():
    cmp = stats.paired_comparison(*_pair(9, 1))
    assert cmp.verdict() == "holds"
    text = report.describe_corrected(cmp, "X", "Y", "cannot tell after Holm over 5 claims")
    assert text.startswith("X ") and "+4.0 points" in text
    assert text.endswith("Verdict, after Holm's correction over the chapter's family: **cannot tell after Holm over "
                         "5 claims**")
    assert "**holds**" not in text


def test_noise_note_says_what_the_interval_covers():
    a, b = _pair(20, 8)
    assert report.noise_note(stats.paired_comparison(a, b)).endswith("item noise only, not the spread between "
                                                                      "training seeds")
    assert "seed spread measured on the headline pair (2.0 and 1.5 points)" in report.noise_note(
        stats.paired_comparison(a, b, seed_sd=(2.0, 1.5)))
    assert report.noise_note(stats.seeds_comparison([a, b], [b, b])).startswith("2 and 2 training seeds")


def test_corrected_rows_take_the_recorded_verdicts_in_order():
    rows = {"x": report.comparison_row(*map(_run, _pair(9, 1))), "y": report.comparison_row(*map(_run, _pair(5, 5)))}
    recorded = pd.DataFrame({"claim": ["c1", "c2"], "difference": [4.0, 0.0], "verdict": ["v1", "v2"],
                             "p_adjusted": [0.2, 1.0]})
    out = report.corrected_rows(rows, recorded)
    assert [r["verdict"] for r in out.values()] == ["v1", "v2"] and out["x"]["p_adjusted"] == 0.2
    with pytest.raises(ValueError, match="not in the recorded order"):
        report.corrected_rows(rows, recorded.iloc[::-1])
    with pytest.raises(ValueError, match="2 rows but 1 recorded"):
        report.corrected_rows(rows, recorded.iloc[:1])


def test_verdicts_family_note_counts_what_holm_changed():
    decisive = stats.paired_comparison(*_pair(40, 2))   # p ~ 1e-10: survives any correction
    marginal = stats.paired_comparison(*_pair(8, 1))    # p ~ 0.04: holds alone, not second of 3 after Holm
    tie = stats.paired_comparison(*_pair(5, 5))
    assert marginal.verdict() == "holds" and 0.025 < marginal.p < 0.05
    verdicts = [{"claim": "c", "method_a": "A", "method_b": "B", "row": decisive, "headline": True},
                {"claim": "c", "method_a": "A", "method_b": "C", "row": {"comparison": marginal}},
                {"claim": "d", "method_a": "A", "method_b": "D", "row": tie, "kind": "no_worse", "margin": 2.0}]
    note = report.verdicts_family_note(verdicts, family="fam")
    assert note.startswith("fam makes 3 tested verdicts; Holm's correction")
    assert "(headline, pre-registered: c (A vs B))" in note
    assert 'it turned 1 decisive verdict into "cannot tell".' in note


# ----------------------------------------------------------------------------- selection on held-out items

def _selection_scenario():
    """The bandit at 60% everywhere; 'lucky' perfect on the selection half and wrong on the comparison half (50%
    overall); 'steady' at 70% everywhere, the best on all items but not on the selection half."""
    selection, _ = stats.split_items(IDS, seed=0)
    chosen = set(selection)
    sel_mask = np.array([i in chosen for i in IDS])
    rng = np.random.default_rng(0)
    bandit = (rng.random(N) < 0.6).astype(int)
    steady = (rng.random(N) < 0.7).astype(int)
    lucky = sel_mask.astype(int)
    return {"bandit": _run(bandit), "lucky": _run(lucky), "steady": _run(steady)}, sel_mask


def test_pick_best_rule_picks_on_the_selection_half_and_compares_on_the_other():
    correct, sel_mask = _selection_scenario()
    overall = {k: v.correct.mean() for k, v in correct.items()}
    assert overall["steady"] > overall["lucky"]  # picked on every item, 'steady' would win
    pick = redundancy.pick_best_rule(correct, split_seed=0)
    assert pick.best == "lucky" and pick.selection_accuracy["lucky"] == 100.0
    assert "bandit" not in pick.selection_accuracy
    assert (pick.n_selection, pick.n_comparison) == (sel_mask.sum(), N - sel_mask.sum())
    cmp = pick.comparison
    assert cmp.n_items == pick.n_comparison and cmp.acc_b == 0.0  # lucky on fresh items
    assert cmp.acc_a == pytest.approx(100 * correct["bandit"].correct[~sel_mask].mean())
    seeds = {"bandit": [correct["bandit"], correct["steady"]], "lucky": [correct["lucky"], correct["lucky"]]}
    with_seeds = redundancy.pick_best_rule(correct, split_seed=0, seeds=seeds)
    assert with_seeds.best == "lucky" and (with_seeds.comparison.seeds_a, with_seeds.comparison.seeds_b) == (2, 2)


def test_rule_comparisons_one_per_rule_with_the_seed_spread():
    a, b = _pair(20, 8)
    correct = {"random": _run(b), "bandit": _run(a), "last": _run(a)}
    rows = redundancy.rule_comparisons(correct)
    assert list(rows) == ["bandit - random", "bandit - last"]
    assert rows["bandit - random"]["diff"] == pytest.approx(6.0) and rows["bandit - last"]["diff"] == 0.0
    assert rows["bandit - random"]["comparison"].noise == "items only"
    wide = redundancy.rule_comparisons(correct, seed_sd=(3.0, 3.0))
    assert wide["bandit - random"]["comparison"].assumed_sd == (3.0, 3.0)
    assert wide["bandit - random"]["ci_low"] < rows["bandit - random"]["ci_low"]


# ----------------------------------------------------------------------------- the family and the prose

def _family_scenario():
    """bandit vs random: 40 vs 2 discordant (holds after Holm); vs last: 9 vs 1 (holds alone, p ~ 0.02, not after
    Holm over 5); vs greedy: a tie; the best rule on the selection half: last."""
    bandit = np.zeros(N, int)
    bandit[:120] = 1
    random_ = bandit.copy()
    random_[:40] = 0
    random_[150:152] = 1
    last = bandit.copy()
    last[40:49] = 0
    last[160] = 1
    greedy = bandit.copy()
    correct = {"random": _run(random_), "last": _run(last), "greedy": _run(greedy), "bandit": _run(bandit)}
    return correct


def test_verdicts_record_one_family_with_the_headline_and_corrected_prose(data_root):
    correct = _family_scenario()
    per_rule = redundancy.rule_comparisons(correct)
    pick = redundancy.pick_best_rule(correct, split_seed=0)
    assert pick.best in ("greedy", "last")  # both equal the bandit on most items; the pick is on half the items
    verdicts = redundancy.verdicts(per_rule, pick)
    assert [v["claim"] for v in verdicts] == ["bandit_beats_rule"] * 3 + ["bandit_beats_best_rule"]
    assert [v["method_b"] for v in verdicts] == ["random", "last", "greedy", pick.best]
    assert [v.get("headline", False) for v in verdicts] == [False, False, False, True]
    recorded = report.record_verdicts(verdicts, chapter=redundancy.CHAPTER, family=redundancy.FAMILY, task="vqa",
                                      metric="Avg", profile="test")
    stored = ledger.read_claims("test")
    assert len(stored) == 4 and set(stored.family) == {"02_redundancy"} and set(stored.correction) == {"holm over 4"}
    by_rule = recorded.set_index("method_b").verdict
    assert by_rule["random"] == "holds"
    assert per_rule["bandit - last"]["verdict"] == "holds" and by_rule["last"].startswith("cannot tell after Holm")
    # a re-run replaces the family instead of adding rows
    report.record_verdicts(verdicts, chapter=redundancy.CHAPTER, family=redundancy.FAMILY, task="vqa",
                           metric="Avg", profile="test")
    assert len(ledger.read_claims("test")) == 4

    shown = redundancy.shown_rows(per_rule, pick, recorded)
    labels = list(shown)
    assert labels[:3] == ["bandit - random", "bandit - last", "bandit - greedy"]
    assert labels[3] == f"bandit - {pick.best} (best rule, comparison half, 1 seed)"
    assert shown["bandit - last"]["verdict"].startswith("cannot tell after Holm")
    table = redundancy.verdict_table(shown)
    assert list(table.columns[-2:]) == ["p (Holm)", "verdict"]
    assert table.loc["bandit - random", "p (Holm)"] == pytest.approx(recorded.p_adjusted[0])

    sets = {"bandit": [0, 1, 2], "random": [1, 2, 3], "last": [0, 5, 6], "greedy": [0, 1, 2]}
    table = pd.DataFrame({"shared with bandit": [3, 2, 1, 3], "eval s / sample": [0.1, 0.1, 0.11, 0.12]},
                         index=list(sets))
    text = redundancy.conclusion(selection=pick, recorded=recorded, per_rule=per_rule, table=table,
                                 preferences=pd.Series([0.2, -0.01]), k=3, comparisons=16, seed=0)
    assert f"tested against the best simple rule ({pick.best}): bandit" in text
    assert f"selection half of the test questions ({pick.n_selection} items" in text
    assert f"the other {pick.n_comparison} questions, which that choice never saw" in text
    assert "(claim: the bandit's set is better; one run each: the intervals cover item noise only" in text
    assert "random +19.0 points (holds; detectable" in text
    assert "last +4.0 points (cannot tell after Holm over 4 claims" in text
    assert "(holds; detectable" in text and text.count("(holds;") == 1  # only the rule that survives Holm
    assert "shares 2 with random, 1 with last, 3 with greedy of its 3 MHAs" in text
    assert "the largest preference is 0.200 in size (all start at 0): the preferences have separated" in text
    assert "from 0.100 to 0.120 s across selectors (20% spread)" in text
    head = recorded[recorded.headline].verdict.iloc[0]
    assert f"Verdict, after Holm's correction over the chapter's family: **{head}**" in text
    still = redundancy.conclusion(selection=pick, recorded=recorded, per_rule=per_rule, table=table,
                                  preferences=pd.Series([0.01, -0.02]), k=3, comparisons=16, seed=0)
    assert "the preferences have barely moved" in still
