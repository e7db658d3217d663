"""Chapter 1 (the base model): the zero-shot table, its chance check and ledger rows, and the removal probe's
summary, from small frames shaped like eas.study.runs.score_sets' and eas.method.probe's output."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from eas.study import ledger, paper
from eas.study.chapters import base_model as ch


def zero_shot():
    zs = {"scienceqa:Avg": 40.0, "scienceqa:NAT": 41.0, "scienceqa:G1-6": 39.0, "scienceqa:chance": 33.3,
          "scienceqa:chance_z": 2.5, "vqa:Open": 20.0, "vqa:Open (exact)": 5.0, "vqa:Closed": 60.0,
          "classification (20%):Acc": 10.0, "classification (20%):chance": 3.3, "classification (20%):chance_z": 1.5,
          "classification (50%):Acc": 12.0, "classification (50%):chance": 3.3, "classification (50%):chance_z": 3.0}
    vqa = pd.DataFrame({"answer_type": ["open"] * 4 + ["closed"] * 16,
                        "correct": [True] * 4 + [True] * 12 + [False] * 4})
    details = {"scienceqa": pd.DataFrame({"correct": [True] * 10}), "vqa": vqa,
               "classification (20%)": pd.DataFrame({"correct": [False] * 7}),
               "classification (50%)": pd.DataFrame({"correct": [False] * 8})}
    return zs, details


def test_zero_shot_table_sets_ours_beside_chance_and_the_papers_zs_row():
    zs, _ = zero_shot()
    table = ch.zero_shot_table(zs)
    assert list(table.columns) == ["ours (ZS)", "chance", "paper LLaVA-7B (ZS)"]
    assert table["ours (ZS)"].tolist() == [40.0, 20.0, 5.0, 60.0, 10.0, 12.0]
    assert table.loc["VQA Closed", "chance"] == 50.0 and math.isnan(table.loc["VQA Open", "chance"])
    ref = paper.TABLE3["LLaVA-7B-ZS"]
    assert table.loc["VQA Open", "paper LLaVA-7B (ZS)"] == ref.slake_open
    assert table.loc["VQA Closed", "paper LLaVA-7B (ZS)"] == ref.slake_closed
    assert table.loc["Classification (50%)", "paper LLaVA-7B (ZS)"] == ref.aid_50
    assert math.isnan(table.loc["ScienceQA-format Avg", "paper LLaVA-7B (ZS)"])  # the paper has no ZS ScienceQA row
    breakdown = ch.scienceqa_breakdown(zs)
    assert list(breakdown.columns) == ["Avg", "NAT", "G1-6"] and breakdown.loc["ours (ZS)", "NAT"] == 41.0


def test_closed_z_counts_standard_deviations_above_a_coin():
    assert ch.closed_z([True] * 12 + [False] * 4) == pytest.approx((12 - 8) / 2)
    assert ch.closed_z([True, False]) == 0.0 and math.isnan(ch.closed_z([]))
    zs, details = zero_shot()
    z = ch.chance_z(zs, details)
    assert z == {"ScienceQA-format Avg": 2.5, "VQA Closed": 2.0, "Classification (20%)": 1.5,
                 "Classification (50%)": 3.0}


def test_zero_shot_text_judges_each_column_against_chance():
    zs, details = zero_shot()
    table = ch.zero_shot_table(zs)
    text = ch.zero_shot_text(table, ch.chance_z(zs, details), n_eval=100, profile="cpu")
    assert text.startswith("**Zero-shot vs chance (100 test examples per task, profile `cpu`).**")
    assert "ScienceQA-format Avg: 40.0 vs 33.3 chance, z = +2.5 (clearly above chance)" in text
    assert "VQA Closed: 60.0 vs 50.0 chance, z = +2.0 (not clearly above chance)" in text
    assert "Classification (20%): 10.0 vs 3.3 chance, z = +1.5 (not clearly above chance)" in text
    assert "its score (20.0) counts replies" in text


def test_zero_shot_accuracy_rows_count_each_columns_items(tmp_path):
    zs, details = zero_shot()
    rows = ch.zero_shot_accuracy_rows(ch.zero_shot_table(zs), details, seed=0, profile="cpu")
    by = {r["method"]: r for r in rows}
    assert len(by) == 6 and {r["chapter"] for r in rows} == {ch.CHAPTER} and {r["k"] for r in rows} == {0}
    assert (by["base model, zero-shot"]["task"], by["base model, zero-shot"]["items"]) == ("scienceqa", 10)
    assert (by["base model, zero-shot (open)"]["items"], by["base model, zero-shot (closed)"]["items"]) == (4, 16)
    assert by["base model, zero-shot (closed)"]["chance"] == 50.0
    assert by["base model, zero-shot (50% split)"]["items"] == 8
    assert by["base model, zero-shot (20% split)"]["accuracy"] == 10.0
    path = tmp_path / "accuracy.csv"
    ledger.record_accuracy(rows, path)
    ledger.record_accuracy(rows, path)  # a re-run replaces its rows
    assert len(ledger.read_accuracy("cpu", path)) == 6


def removal_frame(mha_costs, ffn_costs, full_loss=2.0):
    rows = [{"kind": "none", "layer": -1, "loss": full_loss, "delta_loss": 0.0, "delta_token_acc": 0.0}]
    for kind, costs in (("mha", mha_costs), ("ffn", ffn_costs)):
        rows += [{"kind": kind, "layer": i, "loss": full_loss + c, "delta_loss": c, "delta_token_acc": -c}
                 for i, c in enumerate(costs)]
    return pd.DataFrame(rows)


def test_removal_summary_and_premise_text():
    removal = removal_frame([0.01, 0.05, 0.2, 0.5, 0.02, 0.03], [0.5, 1.0, 0.09, 2.0, 0.3, 0.4])
    summary = ch.removal_summary(removal)
    assert summary.loc["MHA", "median loss increase"] == pytest.approx(0.04)
    assert summary.loc["FFN", "max loss increase"] == 2.0
    assert summary.loc["MHA", "modules costing < 5% loss"] == 4  # below 0.05 * 2.0 = 0.1
    assert summary.loc["FFN", "modules costing < 5% loss"] == 1
    assert summary.loc["MHA", "most redundant (lowest cost) layers"] == [0, 4, 5, 1, 2]
    assert summary.round(3).loc["MHA", "median loss increase"] == 0.04  # numeric columns stay numeric
    text = ch.premise_text(removal, "scienceqa")
    assert text.startswith("**Removing one module, untrained, agrees with the paper's premise here:**")
    assert "raises the scienceqa loss by 0.040 at the median, removing a single FFN by 0.450" in text
    assert "4 of 6 MHAs and 1 of 6 FFNs can be removed alone for less than 5% extra loss" in text
    assert "holds" not in text and "not one of the book's verdicts" in text
    other = ch.premise_text(removal_frame([1.0, 2.0], [0.1, 0.2]), "vqa")
    assert "disagrees with the paper's premise" in other
    fig = ch.removal_figure(removal, "scienceqa")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "scienceqa: task loss"
    plt.close(fig)
