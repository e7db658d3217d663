"""eas.study.ledger (the claims and accuracy ledgers) and eas.study.paper (the paper's numbers, once)."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from eas.study import ledger, paper, stats


def _cmp(a_only, b_only, n=200, both=100):
    a, b = np.zeros(n, int), np.zeros(n, int)
    a[:a_only] = 1
    b[a_only:a_only + b_only] = 1
    a[a_only + b_only:a_only + b_only + both] = b[a_only + b_only:a_only + b_only + both] = 1
    return stats.paired_comparison(a, b)


def _claims(chapter="03_skip_ablation", profile="cpu", best="FFN"):
    common = dict(chapter=chapter, task="vqa", metric="Avg", profile=profile)
    return [
        ledger.claim_row(_cmp(40, 10), claim="mha_beats_ffn_k12", method_a="MHA k=12", method_b=f"{best} k=12",
                         headline=True, **common),
        ledger.claim_row(_cmp(22, 9), claim="mha_beats_ffn_k4", method_a="MHA k=4", method_b=f"{best} k=4", **common),
        ledger.claim_row({"comparison": _cmp(10, 10)}, claim="mha_largest_k_no_worse_than_smallest",
                         method_a="MHA k=12", method_b="MHA k=4", kind="no_worse", margin=2.0, **common),
    ]


def _other_files(folder):
    return sorted(f for f in os.listdir(folder) if not f.endswith(".lock"))


# ----------------------------------------------------------------------------- claims

def test_claims_schema_and_holm(tmp_path):
    path = tmp_path / "claims.csv"
    written = ledger.record_claims(_claims(), path)
    stored = pd.read_csv(path)
    assert list(stored.columns) == ledger.CLAIM_COLUMNS and len(stored) == 3
    assert list(written.columns) == ledger.CLAIM_COLUMNS
    row = stored.set_index("claim").loc["mha_beats_ffn_k4"]
    assert row.correction == "holm over 3" and row.family == "03_skip_ablation"
    assert row.p_adjusted == pytest.approx(min(1.0, 2 * row.p))  # second smallest of three
    assert row.verdict.startswith("cannot tell after Holm")  # "holds" alone (p ~ 0.03), not in the family
    head = stored.set_index("claim").loc["mha_beats_ffn_k12"]
    assert head.verdict == "holds" and bool(head.headline) and head.seeds == 1 and head["items"] == 200
    assert head.difference == pytest.approx(head.a - head.b) == pytest.approx(15.0)
    assert ledger.read_claims("cpu", path).headline.tolist() == [True, False, False]
    # a headline given as text (a CSV round trip) means what it says
    again = ledger.record_claims([{**r, "headline": h} for r, h in zip(_claims(), ["True", "False", 0])], path)
    assert again.headline.tolist() == [True, False, False]


def test_rerun_replaces_rows_instead_of_duplicating(tmp_path):
    path = tmp_path / "claims.csv"
    ledger.record_claims(_claims(), path)
    ledger.record_claims(_claims(), path)
    assert len(pd.read_csv(path)) == 3
    # a new value under an existing key replaces the row; other chapters and profiles are kept
    changed = _claims()[:1]
    changed[0].update(a=99.0, verdict="does not hold")
    ledger.record_claims(_claims(chapter="04_pia_ablation"), path)
    ledger.record_claims(_claims(profile="gpu"), path)
    ledger.record_claims(changed, path, correct=False)
    stored = pd.read_csv(path)
    assert len(stored) == 9
    mine = stored[(stored.chapter == "03_skip_ablation") & (stored.profile == "cpu")].set_index("claim")
    assert mine.loc["mha_beats_ffn_k12", "a"] == 99.0 and len(mine) == 3
    assert not stored.duplicated(list(ledger.CLAIM_KEY)).any()


def test_replace_family_drops_stale_rows(tmp_path):
    path = tmp_path / "claims.csv"
    ledger.record_claims(_claims(best="FFN"), path)
    # the next run's rival differs: by key alone the old rows would linger
    ledger.record_claims(_claims(best="either"), path)
    assert len(pd.read_csv(path)) == 5
    ledger.record_claims(_claims(best="FFN"), path, replace="family")
    stored = pd.read_csv(path)
    assert len(stored) == 3 and not stored.method_b.str.startswith("either").any()


def test_failed_write_leaves_the_old_ledger(tmp_path, monkeypatch):
    path = tmp_path / "claims.csv"
    ledger.record_claims(_claims(), path)
    before = path.read_bytes()

    def half_then_fail(self, target, *args, **kwargs):
        with open(target, "w") as handle:
            handle.write("chapter,claim\n03_skip")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ledger.record_claims(_claims(chapter="04_pia_ablation"), path)
    assert path.read_bytes() == before
    assert _other_files(tmp_path) == ["claims.csv"]  # no temporary left behind


def test_bad_rows_are_refused(tmp_path):
    path = tmp_path / "claims.csv"
    rows = _claims()
    with pytest.raises(ledger.LedgerError, match="unknown claims columns"):
        ledger.record_claims([{**rows[0], "colour": "red"}], path)
    with pytest.raises(ledger.LedgerError, match="repeat the key"):
        ledger.record_claims([rows[0], dict(rows[0])], path)
    with pytest.raises(ledger.LedgerError, match="no method_a"):
        ledger.record_claims([{**rows[0], "method_a": ""}], path)
    with pytest.raises(ledger.LedgerError, match="no claims rows"):
        ledger.record_claims([], path)
    with pytest.raises(ledger.LedgerError, match="Comparison"):
        ledger.claim_row({"diff": 1.0}, chapter="x", claim="y", task="vqa", method_a="a", method_b="b",
                         metric="Avg", profile="cpu")
    assert not path.exists()


def test_default_paths_live_under_the_results_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    ledger.record_claims(_claims())
    ledger.record_accuracy([ledger.accuracy_row(chapter="07_methods", method="LoRA", task="vqa", k=None, seed=0,
                                                items=200, accuracy=70.5, chance=31.0, profile="cpu")])
    assert (tmp_path / "results" / "claims.csv").exists() and (tmp_path / "results" / "accuracy.csv").exists()


def test_claims_table_puts_the_paper_beside_each_claim(tmp_path):
    path = tmp_path / "claims.csv"
    rows = _claims() + [ledger.claim_row(_cmp(12, 14), chapter="07_methods", claim="eas_vs_baseline",
                                         task="scienceqa", method_a="EAS_12", method_b="MAM", metric="Avg",
                                         profile="cpu", kind="no_worse", margin=2.0),
                        ledger.claim_row(_cmp(12, 14), chapter="02_redundancy", claim="bandit_beats_rule",
                                         task="vqa", method_a="bandit", method_b="random", metric="Avg",
                                         profile="cpu")]
    ledger.record_claims(rows, path)
    table = ledger.claims_table("cpu", path).set_index("claim")
    assert list(table.columns[-5:]) == ledger.PAPER_COLUMNS
    assert table.loc["mha_beats_ffn_k12", "paper_value"] == pytest.approx(90.0 - 82.1)
    assert table.loc["mha_beats_ffn_k12", "paper_source"] == "Table 5, MHA vs FFN at k=12"
    assert table.loc["eas_vs_baseline", ["paper_a", "paper_b"]].tolist() == [88.1, 88.9]
    assert table.loc["bandit_beats_rule", "paper_source"] == "not in the paper"
    assert math.isnan(table.loc["bandit_beats_rule", "paper_value"])
    assert ledger.claims_table("gpu", path).empty


# ----------------------------------------------------------------------------- accuracy

def test_accuracy_schema_keys_and_rerun(tmp_path):
    path = tmp_path / "accuracy.csv"
    rows = [ledger.accuracy_row(chapter="07_methods", method="LoRA", task="vqa", k=None, seed=0, items=200,
                                accuracy=70.5, chance=31.0, profile="cpu"),
            ledger.accuracy_row(chapter="07_methods", method="EAS_12", task="vqa", k=12, seed=0, items=200,
                                accuracy=68.0, chance=31.0, profile="cpu")]
    ledger.record_accuracy(rows, path)
    ledger.record_accuracy(rows, path)
    stored = pd.read_csv(path)
    assert list(stored.columns) == ledger.ACCURACY_COLUMNS and len(stored) == 2
    assert sorted(stored.k.tolist()) == [0, 12]  # no k: 0, written as a whole number
    # k given as 0.0 (a float from a CSV) is the same key as None / 0: replaced, not added
    ledger.record_accuracy([{**rows[0], "k": 0.0, "accuracy": 72.0}], path)
    stored = ledger.read_accuracy("cpu", path).set_index("method")
    assert len(stored) == 2 and stored.loc["LoRA", "accuracy"] == 72.0
    ledger.record_accuracy([{**rows[1], "seed": 1}], path)  # another seed is another row
    assert len(pd.read_csv(path)) == 3
    with pytest.raises(ledger.LedgerError, match="whole number"):
        ledger.record_accuracy([{**rows[1], "k": 1.5}], path)
    with pytest.raises(ledger.LedgerError, match="no accuracy"):
        ledger.record_accuracy([{**rows[1], "accuracy": None}], path)


def test_accuracy_rows_from_results_rows():
    results = pd.DataFrame([{"key": "abc", "method": "eas", "task": "vqa", "k": 12, "seed": 1, "n_eval": 200,
                             "Avg": 66.0, "chance": 30.0},
                            {"key": "def", "method": "lora", "task": "classification", "k": 0, "seed": 0,
                             "n_eval": 100, "Acc": 40.0, "chance": 10.0}])
    rows = ledger.accuracy_rows(results, chapter="07_methods", profile="cpu", labels={"abc": "EAS_12"},
                                metric={"vqa": "Avg", "classification": "Acc"})
    assert [(r["method"], r["accuracy"], r["items"]) for r in rows] == [("EAS_12", 66.0, 200), ("lora", 40.0, 100)]
    with pytest.raises(ledger.LedgerError, match="metric"):
        ledger.accuracy_rows(results, chapter="07_methods", profile="cpu")


def test_accuracy_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "accuracy.csv"
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, target, *a, **k: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        ledger.record_accuracy([ledger.accuracy_row(chapter="c", method="m", task="vqa", k=0, seed=0, items=1,
                                                    accuracy=1.0, chance=0.0, profile="cpu")], path)
    assert _other_files(tmp_path) == []


# ----------------------------------------------------------------------------- the paper's numbers

def test_views_match_the_literals_the_callers_hold():
    # eas.study.latency's PAPER_TABLE1
    assert paper.latency_table1() == {
        ("base", 0): (5018.4, 2.19), ("lora", 0): (5018.4, 2.34), ("adapter", 0): (5041.6, 2.89),
        ("mam", 0): (5041.6, 2.87), ("das", 4): (4475.0, 2.53), ("eas-merged", 8): (4616.3, 1.98),
        ("eas-merged", 12): (4415.4, 1.82)}
    assert paper.table1_base() == (5018.4, 2.19) and paper.LLAVA_7B_LAYERS == 32
    # eas.study.bench's PAPER_TABLE6 and chapter 04's PAPER6
    assert paper.bench_table6() == {"base": (2.94, 87.1), "info_exchange": (3.23, 90.1),
                                    "frozen_bias": (2.97, 90.0), "reparam": (1.69, 90.0)}
    assert paper.table6_view() == {"base": ("Base", 87.1, 2.94), "info_exchange": ("+ Info. Exc.", 90.1, 3.23),
                                   "frozen_bias": ("+ Frozen bias", 90.0, 2.97), "reparam": ("+ Re-param.", 90.0, 1.69)}
    # eas.measure.shapes' PAPER_SPEEDUPS
    assert paper.shapes_speedups() == {
        "EAS_12 vs LLaVA-1.5-7B (Table 1: 2.19 s -> 1.82 s)": (2.19 / 1.82, "skipping 12 MHAs, adapters merged"),
        "EAS vs LaVIN (abstract: 2.18x)": (2.18, "skipping 12 MHAs + LaVIN's unmerged adapters removed"),
        "Re-param. vs Base PIA (Table 6: 2.94 s -> 1.69 s)": (2.94 / 1.69, "merging PIAs, same 12 MHAs skipped")}
    # chapter 03's PAPER, 04's PAPER7 and PAPER8
    assert paper.table5_view() == {"mha": {4: (2.08, 89.4), 8: (1.91, 89.8), 12: (1.69, 90.0)},
                                   "ffn": {4: (2.26, 88.3), 8: (2.18, 85.0), 12: (2.11, 82.1)},
                                   "mha_or_ffn": {4: (2.13, 88.4), 8: (2.09, 89.2), 12: (1.78, 88.6)}}
    assert paper.table7_view() == {4: (89.4, 2.08), 8: (89.8, 1.92), 12: (90.0, 1.69), 16: (88.4, 1.56)}
    assert paper.table8_view() == {8: (87.6, 0.04), 16: (88.0, 0.05), 32: (89.8, 0.08), 64: (90.1, 0.22)}
    # chapter 07's PAPER_BASE, PAPER and PAPER3, chapter 01's zero-shot column
    assert paper.methods_base() == {"scienceqa": (5018.4, 2.19), "vqa": (4904.0, None),
                                    "classification": (4869.9, None)}
    assert paper.methods_view("scienceqa") == {
        "LoRA": (0.62, 0.0, 2.34, {"Avg": 88.1}), "Adapter": (0.54, 23.2, 2.89, {"Avg": 88.4}),
        "MAM": (0.54, 23.2, 2.87, {"Avg": 88.9}), "DAS_4": (0.59, -543.4, 2.53, {"Avg": 88.4}),
        "EAS_8": (0.78, -402.1, 1.98, {"Avg": 88.7}), "EAS_12": (0.90, -603.0, 1.82, {"Avg": 88.1})}
    assert paper.methods_view("vqa") == {
        "LoRA": (0.61, 0.0, None, {"Open": 79.2, "Closed": 85.6}),
        "Adapter": (0.53, 22.7, None, {"Open": 77.5, "Closed": 87.3}),
        "MAM": (0.53, 22.7, None, {"Open": 77.4, "Closed": 87.7}),
        "DAS_4": (0.63, -531.0, None, {"Open": 79.2, "Closed": 86.5}),
        "EAS_10": (0.85, -491.1, None, {"Open": 78.1, "Closed": 87.0}),
        "EAS_12": (0.86, -589.3, None, {"Open": 77.4, "Closed": 87.5})}
    assert paper.methods_view("classification") == {
        "LoRA": (0.61, 0.0, None, {"Acc": 96.9}), "Adapter": (0.53, 22.5, None, {"Acc": 96.2}),
        "MAM": (0.53, 22.5, None, {"Acc": 96.2}), "DAS_4": (0.63, -527.0, None, {"Acc": 96.6}),
        "EAS_10": (0.85, -497.1, None, {"Acc": 97.5}), "EAS_12": (0.86, -561.1, None, {"Acc": 97.5})}
    assert paper.transfer_view() == {
        "LoRA": (79.2, 85.6, 96.9, 97.3), "Adapter": (77.5, 87.3, 96.2, 96.8), "MAM": (77.4, 87.7, 96.2, 97.7),
        "DAS_4": (79.2, 86.5, 96.6, 97.8), "EAS_10": (78.1, 87.0, 97.5, 98.0), "EAS_12": (77.4, 87.5, 97.5, 97.58)}
    assert paper.zero_shot_view() == {"VQA Open": 28.7, "VQA Closed": 56.5, "Classification (20%)": 25.5,
                                      "Classification (50%)": 25.6}
    # numbers quoted in prose: chapter 06's 1.35x, 44-52% and chapter 07's time ratios
    assert paper.TEXT["mha_over_ffn_time"].value == 1.35 and paper.TEXT["eas_vs_das_faster_pct"].value == (44.4, 51.6)
    ratios = {k: round(r.seconds / 2.19, 2) for k, r in paper.TABLE1.items() if k != "LLaVA-7B"}
    assert ratios == {"LoRA": 1.07, "Adapter": 1.32, "MAM": 1.31, "DAS_4": 1.16, "EAS_8": 0.9, "EAS_12": 0.83}


PRINTED_INCONSISTENT = {("Table 3", "EAS_10", "aid"), ("Table 4", "DAS_4", "flickr"),
                        ("Table 4", "Shallow Prompt", "avg")}  # see eas.study.paper's docstring


def test_tables_add_up_where_the_paper_is_consistent():
    # each FLOPs value minus the table's base row is its printed delta, to the printed rounding (+/-0.1 twice)
    tables = {"Table 1": (paper.TABLE1, [""]), "Table 3": (paper.TABLE3, ["slake_", "aid_", "avg_"]),
              "Table 4": (paper.TABLE4, ["vqa_", "nlvr_", "flickr_", "avg_"])}
    for name, (table, prefixes) in tables.items():
        base = next(iter(table.values()))
        for label, row in table.items():
            for pre in prefixes:
                g, dg, gb = (getattr(row, f"{pre}gflops"), getattr(row, f"{pre}delta_gflops"),
                             getattr(base, f"{pre}gflops"))
                if (name, label, pre.rstrip("_")) in PRINTED_INCONSISTENT:
                    assert abs(g - gb - dg) > 0.3
                else:
                    assert g - gb == pytest.approx(dg, abs=0.151), (name, label, pre)
    # the stated text figures follow from the tables
    t6 = paper.TABLE6
    assert t6["base"].accuracy - t6["info_exchange"].accuracy == pytest.approx(-3.0)
    assert paper.TABLE2["LaVIN-7B"].seconds / paper.TABLE2["LaVIN-EAS_12"].seconds == pytest.approx(2.18, abs=0.01)


def test_paper_claim_lookup_prefers_the_most_specific_entry():
    c = paper.paper_claim("eas_vs_baseline", "vqa", "EAS_12", "DAS_4")
    assert c.a == pytest.approx((77.4 + 87.5) / 2) and c.b == pytest.approx((79.2 + 86.5) / 2)
    best = paper.paper_claim("eas_no_worse_than_best_petl", "scienceqa", "EAS_12", "whatever the notebook picked")
    assert "EAS_12 vs the best PETL row (MAM)" in best.source and best.value == pytest.approx(88.1 - 88.9)
    assert paper.paper_claim("eas_no_worse_than_best_petl", "classification").a == 97.5
    assert paper.paper_claim("info_exchange_gain", "vqa").value == pytest.approx(3.0)
    assert paper.paper_claim("no such claim") is None
    assert paper.paper_claim("eas_vs_baseline", "vqa", "EAS_99", "LoRA") is None
    keys = [(c.claim, c.task, c.method_a, c.method_b) for c in paper.PAPER_CLAIMS]
    assert len(keys) == len(set(keys))


def test_every_table_and_figure_is_listed_with_a_status():
    names = [a.name for a in paper.PAPER_ARTIFACTS]
    assert names == [f"Table {i}" for i in range(1, 9)] + [f"Figure {i}" for i in range(1, 6)]
    for a in paper.PAPER_ARTIFACTS:
        assert a.status in paper.STATUSES and a.description and a.detail
        assert (a.status == "not reproduced") == (a.chapter == "")
    status = {a.name: a.status for a in paper.PAPER_ARTIFACTS}
    assert status["Table 2"] == status["Table 4"] == "not reproduced"
    assert "LaVIN" in paper.PAPER_ARTIFACTS[1].detail and "METER" in paper.PAPER_ARTIFACTS[3].detail
    table = ledger.artifacts_table()
    assert table.loc["Table 5", "chapter"] == "03_skip_ablation"
