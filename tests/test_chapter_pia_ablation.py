"""Chapter 4 (the PIA's design switches, k, hidden size): tables, selection, the family of verdicts and its prose,
built from synthetic per-item correctness, so every number is known."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from eas.study import ledger, paper, report, stats
from eas.study.chapters import pia_ablation as ch

N = 200
IDS = [f"q{i}" for i in range(N)]
SELECTION, COMPARISON = stats.split_items(IDS, seed=0)


def run(correct_ids) -> pd.DataFrame:
    """A run's per-item correctness (uid, correct): right exactly on `correct_ids`."""
    right = set(correct_ids)
    return pd.DataFrame({"uid": IDS, "correct": [i in right for i in IDS]})


def first(ids, share: float) -> list:
    return list(ids)[:round(share * len(ids))]


def timing_row(ms_token, ms_sample, iqr=0.0, vs_base=1.0) -> dict:
    return {"decode_ms_per_token": ms_token, "ms_per_sample": ms_sample, "decode_ms_per_token_iqr": iqr,
            "time_vs_base": vs_base}


@pytest.fixture()
def ledger_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- labels and tables

def test_labels_read_the_skip_hidden_size_from_the_results_row():
    assert ch.skip_hidden('{"skip_hidden": 32, "adapt_hidden": 8}') == 32
    assert ch.skip_hidden({"skip_hidden": 8}) == 8 and ch.skip_hidden(16) == 16
    rows = pd.DataFrame({"key": ["a", "b"], "hidden": ['{"skip_hidden": 32, "adapt_hidden": 8}', '{"skip_hidden": 8}'],
                         "pia_setting": ["reparam", "base"], "k": [12, 4]})
    assert ch.run_labels(rows) == {"a": "32-hidden reparam k=12", "b": "8-hidden base k=4"}


def test_runs_table_takes_each_runs_timing_by_its_label():
    rows = pd.DataFrame({"key": ["a", "b"], "hidden": ['{"skip_hidden": 32}', '{"skip_hidden": 8}'],
                         "pia_setting": ["reparam", "base"], "k": [12, 4], "final_train_loss": [0.5, 0.7],
                         "train_wall_s": [10.0, 11.0], "eval_wall_s": [1.0, 2.0]}).set_index("key")
    timing = pd.DataFrame({"decode_ms_per_token": [9.0, 3.0, 4.0], "ms_per_sample": [90.0, 30.0, 40.0]},
                          index=["base", "8-hidden base k=4", "32-hidden reparam k=12"])
    table = ch.runs_table(rows, timing, {"a": "32-hidden reparam k=12", "b": "8-hidden base k=4"})
    assert table["ms / token"].tolist() == [4.0, 3.0] and table["ms / sample"].tolist() == [40.0, 30.0]
    assert table.hidden.tolist() == [32, 8]


def test_table6_sets_ours_beside_the_papers_table6_with_times_relative_to_the_first_row():
    t6 = ch.table6({"base": 50.0, "info_exchange": 60.0, "reparam": 59.0},
                   {"base": timing_row(4.0, 100.0, iqr=0.4), "info_exchange": timing_row(5.0, 120.0),
                    "reparam": timing_row(3.0, 80.0)})
    assert list(t6.index) == ["Base", "+ Info. Exc.", "+ Re-param."]
    assert t6["time vs first row"].tolist() == pytest.approx([1.0, 1.2, 0.8])
    assert t6.loc["Base", "noise"] == pytest.approx(0.1)
    assert t6["paper accuracy"].tolist() == [paper.TABLE6[r].accuracy for r in ("base", "info_exchange", "reparam")]
    assert t6.loc["+ Re-param.", "paper time vs first row"] == pytest.approx(
        paper.TABLE6["reparam"].seconds / paper.TABLE6["base"].seconds)


def test_table7_and_table8_leave_nan_where_the_paper_has_no_row():
    t7 = ch.table7({4: 50.0, 12: 55.0, 13: 40.0}, {k: timing_row(5.0 - k / 10, 1.0, 0.2, 0.9) for k in (4, 12, 13)},
                   {4: 0.1, 12: 0.2, 13: 0.3})
    assert t7.loc[12, "paper accuracy"] == paper.TABLE7[12].accuracy
    assert t7.loc[4, "paper s / sample"] == paper.TABLE7[4].seconds
    assert math.isnan(t7.loc[13, "paper accuracy"]) and t7.loc[13, "updated params %"] == 0.3
    t8 = ch.table8({8: 50.0, 20: 52.0}, {8: 0.1, 20: 0.2}, {8: 1000, 20: 2000})
    assert t8.loc[8, "paper accuracy"] == paper.TABLE8[8].accuracy
    assert t8.loc[8, "paper updated params %"] == paper.TABLE8[8].params_pct
    assert math.isnan(t8.loc[20, "paper accuracy"]) and t8.loc[20, "trainable params"] == 2000


def test_tables_figure_draws_three_panels_and_two_twin_axes():
    t6 = ch.table6({"base": 50.0, "reparam": 55.0}, {"base": timing_row(4, 100), "reparam": timing_row(3, 80)})
    t7 = ch.table7({4: 50.0, 12: 55.0}, {4: timing_row(5, 1), 12: timing_row(4, 1)}, {4: 0.1, 12: 0.2})
    t8 = ch.table8({8: 50.0, 64: 52.0}, {8: 0.1, 64: 0.2}, {8: 1, 64: 2})
    fig = ch.tables_figure(t6, t7, t8, n=N, metric="Avg", k=12)
    assert len(fig.axes) == 5 and fig.axes[0].get_title() == "Table 6 (k=12)"
    plt.close(fig)


# ----------------------------------------------------------------------------- selection and the family

def table7_runs():
    """k=4 is best on the selection half, k=12 best over all items: the held-out choice must pick k=4."""
    return {4: run(SELECTION + first(COMPARISON, 0.5)),
            12: run(first(SELECTION, 0.6) + COMPARISON),
            16: run(first(SELECTION, 0.5) + first(COMPARISON, 0.5))}


def test_best_k_is_picked_on_the_selection_half_and_compared_on_the_other():
    sel = ch.best_k_selection(table7_runs(), margin=2.0)
    assert sel.best == "k=4"  # over all items k=12 is best: the choice saw only the selection half
    assert sel.selection_accuracy["k=12"] == pytest.approx(100 * round(0.6 * len(SELECTION)) / len(SELECTION))
    cmp = sel.comparison
    assert cmp.n_items == len(COMPARISON) == sel.n_comparison
    assert cmp.acc_a == cmp.acc_b == pytest.approx(100 * round(0.5 * len(COMPARISON)) / len(COMPARISON))
    assert cmp.a_only == cmp.b_only == 0
    # the largest k best on the selection half: nothing to compare
    runs = {4: run(first(SELECTION, 0.2)), 16: run(SELECTION)}
    assert ch.best_k_selection(runs, margin=2.0).comparison is None


def headline_runs(seeds: int):
    """A with information exchange: right on 60-61% of items over seeds; B without: 40-41%."""
    a = [run(IDS[:120 + s]) for s in range(seeds)]
    b = [run(IDS[:80 + s]) for s in range(seeds)]
    return a, b


def correct_for(seeds=3, hidden_big=None):
    a, b = headline_runs(seeds)
    merged = run(IDS[:100])
    correct6 = {"base": b, "info_exchange": a, "frozen_bias": [merged], "reparam": [merged]}
    correct8 = {8: run(IDS[:100]), 64: hidden_big if hidden_big is not None else run(IDS[:110])}
    return correct6, table7_runs(), correct8


def test_family_states_each_claim_once_with_the_headline_flagged():
    correct6, correct7, correct8 = correct_for()
    static = run(IDS[:99])
    rows, verdicts, selection = ch.family(correct6, correct7, correct8, margin=2.0, static=static)
    assert [v["claim"] for v in verdicts] == [ch.HEADLINE, ch.MERGE, ch.STATIC, ch.LARGEST_K, ch.HIDDEN]
    assert [v.get("headline", False) for v in verdicts] == [True, False, False, False, False]
    assert [v.get("kind", "better") for v in verdicts] == ["better", "no_worse", "no_worse", "no_worse", "better"]
    assert {v["claim"]: (v["method_a"], v["method_b"]) for v in verdicts}[ch.LARGEST_K] == ("k=16", "k=4")
    assert list(rows) == ["+ Info. Exc. - Base, 3 seeds", "+ Re-param. - + Frozen bias (no worse by 2)",
                          "static router - per-prompt router (no worse by 2)",
                          "k=16 - k=4 (other half; no worse by 2)", "hidden 64 - hidden 8"]
    head = rows["+ Info. Exc. - Base, 3 seeds"]
    assert head["seeds_a"] == 3 and head["diff"] == pytest.approx(100 * (121 - 81) / N)
    assert selection.best == "k=4"
    # the one-run verdicts are widened by the information-exchange side's seed spread; same-model ones are not
    sd = float(np.std([100 * (120 + s) / N for s in range(3)], ddof=1))
    assert ch.one_run_spread(correct6) == pytest.approx((sd, sd))
    assert rows["hidden 64 - hidden 8"]["comparison"].assumed_sd == pytest.approx((sd, sd))
    assert rows["k=16 - k=4 (other half; no worse by 2)"]["comparison"].assumed_sd == pytest.approx((sd, sd))
    assert rows["+ Re-param. - + Frozen bias (no worse by 2)"]["comparison"].assumed_sd == ()
    assert rows["static router - per-prompt router (no worse by 2)"]["diff"] == pytest.approx(-0.5)


def test_one_seed_family_covers_item_noise_only_and_missing_rows_drop_their_claims():
    correct6, correct7, correct8 = correct_for(seeds=1)
    assert ch.one_run_spread(correct6) is None
    rows, verdicts, _ = ch.family(correct6, correct7, correct8, margin=2.0)
    assert rows["hidden 64 - hidden 8"]["comparison"].assumed_sd == ()
    assert ch.STATIC not in [v["claim"] for v in verdicts]
    rows, verdicts, selection = ch.family({"reparam": correct6["reparam"]}, {12: correct7[12]}, {8: correct8[8]},
                                          margin=2.0)
    assert rows == {} and verdicts == [] and selection is None


def test_recorded_family_corrects_the_prose_and_never_says_holds_past_holm(ledger_dir):
    # hidden 64 vs 8: 13 items only 64 gets right, 3 only 8: holds alone (p < 0.05), not after Holm over 5
    big = run(IDS[:100][3:] + IDS[100:113])
    correct6, correct7, correct8 = correct_for(hidden_big=big)
    rows, verdicts, selection = ch.family(correct6, correct7, correct8, margin=2.0, static=run(IDS[:100]))
    raw = rows["hidden 64 - hidden 8"]
    assert raw["verdict"] == "holds" and 0.01 < raw["p"] < 0.05
    recorded = report.record_verdicts(verdicts, chapter=ch.CHAPTER, family=ch.FAMILY, task="vqa", metric="Avg",
                                      profile="test")
    assert len(ledger.read_claims("test")) == 5
    shown, by_claim = ch.corrected(rows, recorded)
    assert by_claim[ch.HIDDEN]["verdict"].startswith("cannot tell after Holm over 5 claims")
    assert by_claim[ch.HEADLINE]["verdict"] == "holds"
    t6 = ch.table6({r: 50.0 for r in ("base", "info_exchange", "frozen_bias", "reparam")},
                   {r: timing_row(4.0, 100.0, iqr=0.2) for r in ("base", "info_exchange", "frozen_bias", "reparam")})
    t7 = ch.table7({k: 50.0 + k for k in (4, 12, 16)}, {k: timing_row(10.0 - k / 4, 1.0) for k in (4, 12, 16)},
                   {k: 0.1 for k in (4, 12, 16)})
    t8 = ch.table8({8: 50.0, 64: 55.0}, {8: 0.1, 64: 0.4}, {8: 10, 64: 40})
    text = ch.conclusion(by_claim, t6=t6, t7=t7, t8=t8, selection=selection, margin=2.0,
                         seed_sd=ch.one_run_spread(correct6))
    gain = paper.TABLE6["info_exchange"].accuracy - paper.TABLE6["base"].accuracy
    assert f"The paper's gain from information exchange ({gain:+.1f} points)" in text
    assert "after Holm's correction over the chapter's family: **holds**" in text  # the headline
    assert "hidden 64 against 8" in text and "**cannot tell after Holm over 5 claims" in text
    assert text.count("**holds**") == 1
    assert f"selection half of the test items ({len(SELECTION)} items" in text and "peaks at k=4" in text
    assert "Merging changes accuracy by +0.0 points (none, as an exact merge should" in text
    assert "within timing noise, the merge neither saves nor costs time here" in text
    assert "Decode time falls with every added group of skipped MHAs" in text
    assert "widened by the training-seed spread" in text
    table = ch.verdict_table(shown)
    assert table["p (Holm)"].tolist() == pytest.approx(recorded.p_adjusted.tolist())
    # a re-run replaces the family's rows rather than adding to them
    report.record_verdicts(verdicts, chapter=ch.CHAPTER, family=ch.FAMILY, task="vqa", metric="Avg", profile="test")
    assert len(ledger.read_claims("test")) == 5
    fig = ch.claim_figure(shown, seeds=[0, 1, 2], metric="Avg", margin=2.0)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["+ Info. Exc.", "Base"]
    plt.close(fig)


def test_table7_text_when_the_largest_k_is_best_or_alone():
    t7 = ch.table7({4: 50.0, 16: 60.0}, {4: timing_row(5.0, 1.0), 16: timing_row(6.0, 1.0)}, {4: 0.1, 16: 0.2})
    sel = ch.best_k_selection({4: run(first(SELECTION, 0.2)), 16: run(SELECTION)}, margin=2.0)
    text = ch.conclusion({}, t6=None, t7=t7, t8=None, selection=sel, margin=2.0)
    assert "the largest k=16 is the best there, so there is nothing to compare" in text
    assert "Decode time does not fall at every step of k" in text
    alone = ch.conclusion({}, t6=None, t7=t7.iloc[-1:], t8=None, selection=None, margin=2.0)
    assert "Only k=16 is run" in alone


def test_seed_note_says_what_the_one_run_intervals_cover():
    assert "item noise only" in ch.seed_note(None)
    assert "(1.5 points per run)" in ch.seed_note((1.5, 1.5))


# ----------------------------------------------------------------------------- the static router

def test_static_router_text_states_the_corrected_verdict_and_the_routers_spread():
    own, fixed = run(IDS[:100]), run(IDS[:98] + IDS[150:151])
    row = report.comparison_row(fixed, own, claim="no_worse", margin=2.0)
    static = {"calibration": 64, "Avg": row["acc_a"], "router_first_path_min": 0.49, "router_first_path_max": 0.52}
    text = ch.static_router_text(static, 50.0, {**row, "verdict": "cannot tell after Holm"}, margin=2.0, metric="Avg")
    assert "calibrated on 64 training prompts" in text and "score 49.5 against 50.0" in text
    assert "-0.5 points" in text and "1 only the fixed router gets right, 2 only per-prompt routing" in text
    assert "**cannot tell after Holm**" in text and "barely moved from even" in text
    far = ch.router_note({"router_first_path_min": 0.3, "router_first_path_max": 0.7})
    assert "between 0.300 and 0.700" in far and "barely" not in far
    acc = ch.static_accuracy_row(static, {"hidden": '{"skip_hidden": 32}', "pia_setting": "reparam", "k": 12,
                                          "task": "vqa", "seed": 0, "n_eval": N, "chance": 10.0},
                                 metric="Avg", profile="test")
    assert acc["method"] == "static router (64 prompts), 32-hidden reparam k=12"
    assert (acc["accuracy"], acc["items"], acc["k"], acc["chapter"]) == (49.5, N, 12, ch.CHAPTER)
