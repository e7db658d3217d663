"""Chapter 7 (EAS against the PETL baselines): every table, sentence and verdict built from synthetic runs whose
per-item correctness is set by hand, so the selection, the comparisons and Holm's correction are known."""

import math
from types import SimpleNamespace

import matplotlib
import pandas as pd
import pytest

from eas.study import ledger, report, stats
from eas.study.chapters import methods

matplotlib.use("Agg")

IDS = [f"q{i}" for i in range(400)]
SELECTION, COMPARISON = stats.split_items(IDS)
LORA_GAP = -100 * (len(SELECTION) - round(0.5 * len(SELECTION))) / len(IDS)  # EAS_12 - LoRA over every item


def _run(correct: dict) -> pd.DataFrame:
    return pd.DataFrame({"uid": list(correct), "correct": [int(v) for v in correct.values()]})


def _pattern(sel_rate: float, comp_rate: float, shift: int = 0) -> pd.DataFrame:
    """Right on the first `rate` share of each half's items (rotated by `shift`)."""
    out = {}
    for part, rate in ((SELECTION, sel_rate), (COMPARISON, comp_rate)):
        k = round(rate * len(part))
        for j, uid in enumerate(part):
            out[uid] = ((j + shift) % len(part)) < k
    return _run({uid: out[uid] for uid in IDS})


@pytest.fixture()
def runs():
    """EAS_12 right on half of each half; LoRA right on every selection item but, on the comparison half, exactly
    where EAS is (so the held-out comparison has no discordant item); Adapter and MAM worse; DAS_4 best overall."""
    eas = _pattern(0.5, 0.5)
    lora = _pattern(1.0, 0.5)
    return {"EAS_12": eas, "LoRA": lora, "Adapter": _pattern(0.6, 0.4, shift=7), "MAM": _pattern(0.55, 0.45, shift=3),
            "DAS_4": _pattern(0.9, 0.95, shift=11)}


def test_labels_budget_and_the_papers_rows():
    eas, petl = methods.method_labels(["LoRA", "Adapter", "MAM", "DAS_4", "DAS_2", "Full FT", "EAS_8", "EAS_12"], 4)
    assert eas == ["EAS_8", "EAS_12"] and petl == ["LoRA", "Adapter", "MAM", "DAS_4"]
    P = SimpleNamespace(profile="cpu", model="mini-llava", task="vqa", methods=["lora", "eas"], eas_ks=[12], das_k=4,
                        steps=80, batch_size=8, lr=1e-3, warmup_steps=8, bandit_warmup_steps=40, bandit_comparisons=16,
                        n_eval=200, seed=0, parity_margin=2.0)
    text = methods.budget(P, [0, 1, 2])
    assert "profile `cpu`" in text and "80 fine-tuning steps of 8" in text and "[0, 1, 2] for EAS" in text
    assert "at most 2 points worse" in text
    text = methods.budget(SimpleNamespace(**{**vars(P), "method_lr": {"eas": 0.002},
                                             "lr_grid": {"lora": [0.001, 0.002]}}), [0])
    assert "learning rate 0.001, eas 0.002, lora the best on the val split of 0.001, 0.002 after" in text
    sqa = methods.paper_columns("scienceqa", ["Avg"])
    assert sqa.loc["LoRA", "paper time vs base"] == pytest.approx(2.34 / 2.19)
    assert sqa.loc["EAS_12", "paper FLOPs vs base"] == pytest.approx(1 - 603.0 / 5018.4)
    assert sqa.loc["MAM", "paper Avg"] == 88.9 and sqa.loc["EAS_12", "paper params %"] == 0.90
    vqa = methods.paper_columns("vqa", ["Open", "Closed"])
    assert vqa["paper time vs base"].isna().all() and vqa.loc["DAS_4", "paper Closed"] == 86.5
    assert methods.paper_time_ratios() == "EAS_12 0.83x, LoRA 1.07x, Adapter 1.32x, MAM 1.31x, DAS_4 1.16x"
    assert methods.paper_gap("scienceqa", "Avg") == pytest.approx(0.8)  # EAS_12 88.1 against MAM 88.9
    assert math.isnan(methods.paper_gap("vqa", "Avg"))  # Table 3 has no Slake average per row


def _timing(times: dict, noise: float = 0.01) -> pd.DataFrame:
    rows = [{"label": k, "gflops_per_sample": g, "ms_per_sample": 100 * t, "time_vs_base": t,
             "decode_ms_per_token": 10.0, "decode_ms_per_token_iqr": 10.0 * noise} for k, (g, t) in times.items()]
    return pd.DataFrame(rows).set_index("label")


def _rows(labels, acc=50.0) -> pd.DataFrame:
    return pd.DataFrame({"updated_params_pct": 0.5, "Open": acc, "Closed": acc, "Avg": acc, "n_eval": 400,
                         "train_wall_s": 8.0, "train_steps": 80, "key": [f"k-{label}" for label in labels],
                         "task": "vqa", "method": "m", "k": 0, "seed": 0, "chance": 30.0}, index=list(labels))


def test_method_table_ratios_and_the_timing_claims():
    timing = _timing({"base": (2.0, 1.0), "LoRA": (2.0, 1.02), "Adapter": (2.05, 1.2), "DAS_4": (1.7, 0.97),
                      "EAS_12": (1.8, 0.80)})
    rows = _rows(["LoRA", "Adapter", "DAS_4", "EAS_12"])
    table = methods.method_table(rows, timing, "vqa")
    assert table.loc["Adapter", "FLOPs vs base"] == pytest.approx(1.025)
    assert table.loc["EAS_12", "time vs base"] == pytest.approx(0.8) and table.loc["EAS_12", "noise"] == 0.01
    assert table.loc["Adapter", "paper Open"] == 77.5 and "paper time vs base" not in table  # Table 3: no times
    assert "2.00 GFLOPs / sample, 100 ms / sample" in methods.base_line(timing, 16, 3)
    claims = methods.timing_claims(table, ["EAS_12"], ["LoRA", "Adapter", "DAS_4"])
    assert claims["eas_fastest"] == "holds" and claims["fastest_other"] == "DAS_4"
    assert claims["others_slower"] == "does not hold" and claims["below_base"] == ["DAS_4"]
    slow = table.assign(**{"time vs base": table["time vs base"].replace({0.8: 1.1})})
    assert methods.timing_claims(slow, ["EAS_12"], ["LoRA", "Adapter", "DAS_4"])["eas_fastest"] == "does not hold"
    tie = table.assign(**{"time vs base": table["time vs base"].replace({0.8: 0.965})})
    assert methods.timing_claims(tie, ["EAS_12"], ["LoRA", "Adapter", "DAS_4"])["eas_fastest"].startswith("cannot tell")
    fig = methods.tradeoff_figure(table, rows, "Avg", "vqa")
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 2 * len(table)


def test_the_best_baseline_is_picked_on_the_selection_half(runs):
    petl = {b: runs[b] for b in ("LoRA", "Adapter", "MAM", "DAS_4")}
    sel = methods.headline_selection([runs["EAS_12"]], petl, margin=2.0)
    # DAS_4 is the best over all items, LoRA on the selection half: the pick is LoRA
    assert sel.best == "LoRA" and sel.selection_accuracy["LoRA"] == 100.0
    assert sel.n_selection == len(SELECTION) and sel.comparison.n_items == len(COMPARISON)
    assert sel.comparison.diff == 0 and sel.comparison.a_only == sel.comparison.b_only == 0  # same items right
    # with seeds: the winner's seeds are used, the pick does not change
    seeded = methods.headline_selection([runs["EAS_12"], _pattern(0.5, 0.52)], petl, margin=2.0,
                                        seed_runs={"LoRA": [runs["LoRA"], _pattern(1.0, 0.47)]})
    assert seeded.best == "LoRA" and (seeded.comparison.seeds_a, seeded.comparison.seeds_b) == (2, 2)
    assert "held-out half, 2/2 seeds" in methods.headline_label(seeded, "EAS_12")
    accs = methods.seed_accuracies({"LoRA": [runs["LoRA"], runs["Adapter"]]})
    assert accs["LoRA"] == pytest.approx([100 * (len(SELECTION) + 0.5 * len(COMPARISON)) / 400,
                                          100 * (0.6 * len(SELECTION) + 0.4 * len(COMPARISON)) / 400], abs=0.3)


def test_baseline_comparisons_use_every_item_and_widen_by_the_seed_spread(runs):
    eas = {"EAS_12": runs["EAS_12"]}
    petl = {b: runs[b] for b in ("LoRA", "MAM")}
    plain = methods.baseline_comparisons(eas, petl, margin=2.0)
    assert list(plain) == ["EAS_12 - LoRA", "EAS_12 - MAM"]
    row = plain["EAS_12 - LoRA"]
    assert row["name_a"] == "EAS_12" and row["name_b"] == "LoRA" and row["comparison"].n_items == 400
    assert row["diff"] == pytest.approx(LORA_GAP)
    wide = methods.baseline_comparisons(eas, petl, margin=2.0, seed_sd=(3.0, 3.0))["EAS_12 - MAM"]
    assert wide["ci_high"] - wide["ci_low"] > plain["EAS_12 - MAM"]["ci_high"] - plain["EAS_12 - MAM"]["ci_low"] + 1
    shown = methods.comparison_display(plain)
    assert "verdict" not in shown and list(shown.columns) == methods.COMPARISON_SHOWN


def _family(runs, tmp_path, monkeypatch, *, t3=True):
    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    petl = {b: runs[b] for b in ("LoRA", "Adapter", "MAM", "DAS_4")}
    sel = methods.headline_selection([runs["EAS_12"]], petl, margin=2.0)
    shown = methods.baseline_comparisons({"EAS_12": runs["EAS_12"]}, petl, margin=2.0)
    timing = {"times": {"EAS_12": 0.8, "LoRA": 1.02, "Adapter": 1.2, "MAM": 1.19, "DAS_4": 0.97}, "band": 0.01,
              "fastest_other": "DAS_4", "fastest_eas": "EAS_12", "eas_fastest": "holds", "below_base": ["DAS_4"],
              "others_slower": "does not hold"}
    t3_sel = methods.table3_selections({"AID 20%": runs}, ["EAS_12"], list(petl), margin=2.0) if t3 else {}
    t3_tasks = {"AID 20%": "classification"}
    verdicts = methods.family_verdicts("vqa", "EAS_12", sel, shown, timing, margin=2.0, t3_selections=t3_sel,
                                       t3_tasks=t3_tasks, n_items=400)
    recorded = report.record_family(verdicts, chapter=methods.CHAPTER, family=methods.FAMILY, profile="cpu",
                                    task="vqa", metric="Avg")
    return sel, shown, timing, t3_sel, t3_tasks, recorded


def test_one_family_corrected_recorded_and_stated(runs, tmp_path, monkeypatch):
    sel, shown, timing, t3_sel, t3_tasks, recorded = _family(runs, tmp_path, monkeypatch)
    assert list(recorded.claim) == ["eas_no_worse_than_best_petl", *["eas_vs_baseline"] * 4,
                                    "table3_aid_20_no_worse_than_best_petl", "eas_fastest", "others_slower_than_base"]
    assert recorded.headline.tolist() == [True] + [False] * 7
    assert set(recorded.family) == {"07_methods"}
    assert recorded.loc[recorded.claim == "eas_fastest", "task"].item() == "vqa"
    assert recorded.loc[recorded.claim.str.startswith("table3"), "task"].item() == "classification"
    # the headline holds before the correction (no discordant item on the held-out half, p ~ 0.04), not after it
    head = recorded.iloc[0]
    assert head.verdict_unadjusted == "holds" and head.p < 0.05 <= head.p_adjusted
    assert head.verdict.startswith("cannot tell after Holm over 6 claims")
    # the timing claims carry no test: outside Holm's count, verdicts as measured
    timed = recorded[recorded.claim.isin(["eas_fastest", "others_slower_than_base"])]
    assert timed.p.isna().all() and (timed.correction == "none (no test)").all()
    assert timed.verdict.tolist() == ["holds", "does not hold"]
    note = stats.family_note(recorded)
    assert "07_methods makes 6 tested verdicts" in note
    assert "turned 2 decisive verdicts" in note  # the headline and Table 3's comparison
    assert "eas_no_worse_than_best_petl (EAS_12 vs LoRA)" in note
    # stored once per key: a re-run replaces the family's rows
    _family(runs, tmp_path, monkeypatch)
    stored = ledger.read_claims("cpu")
    assert len(stored) == 8 and stored.loc[stored.headline, "verdict"].item() == head.verdict

    text = methods.table1_text(recorded, sel, shown, timing, pd.DataFrame({"FLOPs vs base": [1.05, 0.9]},
                                                                        index=["Adapter", "EAS_12"]),
                               task="vqa", head="Avg", top="EAS_12", margin=2.0, seed=0, n_items=400)
    claim = text.split("**Claim: EAS is the fastest")[0]
    assert "Verdict, after Holm's correction over the chapter's family: **cannot tell after Holm" in claim
    assert "**holds**" not in claim  # never the uncorrected verdict
    assert f"selection half of the test items ({len(SELECTION)} items" in claim and f"other {len(COMPARISON)}" in claim
    assert f"EAS_12 - LoRA: {LORA_GAP:+.1f} (does not hold)" in claim
    assert "item noise only" in claim
    assert "**Claim: EAS is the fastest method** -- holds here: EAS_12 0.80x" in text
    assert "paper, ScienceQA: EAS_12 0.83x, LoRA 1.07x" in text
    assert "does not hold here: DAS_4 also runs faster" in text and "Adapter +5.0%, EAS_12 -10.0%" in text

    t3_text = methods.table3_text(recorded, t3_sel, t3_tasks, margin=2.0)
    assert "0 of 1 comparisons hold after Holm's correction" in t3_text
    assert "AID 20%: EAS_12 - LoRA +0.0 points on" in t3_text and "cannot tell after Holm" in t3_text
    view = methods.ledger_view(recorded)
    assert list(view.columns) == methods.LEDGER_SHOWN


def test_a_measured_verdict_must_be_a_verdict():
    with pytest.raises(ValueError, match="must start with"):
        report.measured_verdict("eas_fastest", "EAS_12", "LoRA", a=0.8, b=1.0, verdict="faster")


def test_table3_frame_claims_and_figures(runs):
    t3_rows = {"Slake": _rows(["LoRA", "EAS_12"], acc=40.0).assign(Open=[30.0, 35.0], Closed=[50.0, 55.0]),
               "AID 20%": _rows(["LoRA", "EAS_12"]).assign(Acc=[90.0, 80.0])}
    t3 = methods.table3_frame(t3_rows)
    assert t3.loc["EAS_12", "Average"] == pytest.approx((35 + 55 + 80) / 3)
    assert t3.loc["LoRA", "paper AID 20%"] == 96.9 and t3.loc["EAS_12", "paper Slake Closed"] == 87.5
    assert "2 columns x 2 methods, 320 fine-tuning steps" in methods.table3_line(t3_rows, 320)
    assert methods.table3_claim("AID 50%") == "table3_aid_50_no_worse_than_best_petl"
    assert "Table 1 above already is the Slake (VQA) analog" in methods.table3_skipped("cpu", "vqa")
    sels = methods.table3_selections({"Slake": runs}, ["EAS_12"], ["Adapter", "DAS_4"], margin=2.0)
    sel = sels["Slake"]["EAS_12"]
    assert sel.best == "DAS_4" and sel.comparison.n_items == len(COMPARISON)
    shown = methods.table3_rows(sels)
    assert list(shown) == ["Slake: EAS_12 - DAS_4"]
    assert len(methods.table3_figure(shown, 2.0).axes) == 1
    fig = methods.comparisons_figure(sel, methods.baseline_comparisons({"EAS_12": runs["EAS_12"]},
                                                                       {"LoRA": runs["LoRA"]}, margin=2.0),
                                     {"EAS_12": [50.0], "DAS_4": [92.0]}, top="EAS_12", head="Avg", margin=2.0)
    assert len(fig.axes) == 2 and len(fig.axes[1].get_yticklabels()) == 2


def test_evaluated_runs_once_each_with_their_labels():
    main = _rows(["LoRA", "EAS_12"])
    seeds = _rows(["EAS_12", "EAS_12"]).assign(key=["k-EAS_12", "k-EAS_12-s1"], seed=[0, 1])
    aid = _rows(["LoRA"]).assign(key=["k-aid-LoRA"], task="classification")
    out = methods.evaluated_runs([main, seeds], {"Table 3, AID 20%": aid, "ScienceQA check": None})
    assert out.label.tolist() == ["LoRA", "EAS_12", "EAS_12", "LoRA [Table 3, AID 20%]"]
    assert out.key.tolist() == ["k-LoRA", "k-EAS_12", "k-EAS_12-s1", "k-aid-LoRA"]


def test_scienceqa_check_table_and_sentence():
    checks = {"LoRA": {"accuracy": 33.0, "chance": 34.0, "z": -0.2, "n": 200, "above_chance": False}}
    sqa_rows = _rows(["LoRA"]).assign(train_wall_s=30.0, train_steps=8)
    rows = _rows(["LoRA", "EAS_12"], acc=61.0)
    sqa = methods.scienceqa_table(checks, sqa_rows, rows, "vqa", "Avg")
    assert sqa.loc["LoRA", "train s / step"] == 3.75 and sqa.loc["LoRA", "vqa accuracy"] == 61.0
    text = methods.scienceqa_text(checks, sqa, rows, task="vqa", steps=80, batch_size=8)
    assert "LoRA 33.0% against 34.0% chance (z = -0.2)" in text and "No method is above chance" in text
    assert "took 3.75 s here, against 0.10 s for a vqa step" in text
    assert "letter alone" not in text  # runs from before the letter monitor
    with_letters = methods.scienceqa_table(checks, sqa_rows.assign(val_letter_acc=0.36), rows, "vqa", "Avg")
    assert with_letters.loc["LoRA", "val letter acc"] == pytest.approx(36.0)
    assert "the answer letter alone was right 36% (LoRA) of the time" in methods.scienceqa_text(
        checks, with_letters, rows, task="vqa", steps=80, batch_size=8)
    learned = {"LoRA": {**checks["LoRA"], "z": 3.0, "above_chance": True}}
    assert "Above chance (z > 2) for LoRA." in methods.scienceqa_text(learned, sqa, rows, task="vqa", steps=80,
                                                                      batch_size=8)


def test_table1_rows_take_the_rate_chosen_on_the_val_split(monkeypatch):
    from eas.study import experiments
    from eas.study.profiles import notebook_params, profile_values

    P = notebook_params("07_methods", {**profile_values("cpu", "07_methods"), "method_lr": {},
                                       "lr_grid": {"eas": [0.001, 0.002]}})
    ran, val = [], {0.001: 50.0, 0.002: 55.0}
    monkeypatch.setattr(experiments, "run_all", lambda specs, **k: ran.extend(specs))
    monkeypatch.setattr(experiments, "validation_accuracy",
                        lambda s, n, **k: {"val_accuracy": val[s.lr], "n_val": n, "val_chance": 35.0})
    monkeypatch.setattr(experiments, "build_model", lambda *a, **k: SimpleNamespace(eval=lambda: None))
    specs, choice = methods.table1_specs(P)
    assert [s.lr for s in ran] == [0.001, 0.002] and specs["EAS_12"] == P.method_spec("eas", 12, lr=0.002)
    assert specs["LoRA"] == P.method_spec("lora")  # not in the grid: the profile's rate
    assert list(choice.index) == [("EAS_12", "lr 0.001"), ("EAS_12", "lr 0.002")]
    assert list(choice.chosen) == [False, True]
    text = methods.rate_choice_text(choice)
    assert "chosen on 200 val items" in text and "EAS_12 0.002 (55.0%)" in text
    assert "not chosen by this run" in methods.rate_choice_text(None)
    assert methods.table1_specs(notebook_params("07_methods", profile_values("cpu", "07_methods")))[1] is None
