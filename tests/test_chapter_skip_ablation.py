"""Chapter 3 (skip attention or skip the FFN, Table 5) on synthetic runs and per-item correctness: every count,
difference and verdict below is known by construction; the paper's numbers come from eas.study.paper."""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from eas.study import ledger, paper, profiles, report  # noqa: E402
from eas.study.chapters import skip_ablation  # noqa: E402

N = 200
IDS = [f"q{i:03d}" for i in range(N)]
KS = [4, 12]


def _run(values):
    return pd.DataFrame({"uid": IDS, "correct": np.asarray(values, dtype=int)})


def _correct(n_right, shift=0):
    """n_right items right, starting at item `shift`."""
    v = np.zeros(N, int)
    v[shift:shift + n_right] = 1
    return v


def _rows():
    """Results rows of six runs: three kinds at k = 4 and 12."""
    acc = {("mha", 4): 50.0, ("mha", 12): 49.0, ("ffn", 4): 45.0, ("ffn", 12): 36.0, ("mha_or_ffn", 4): 48.0,
           ("mha_or_ffn", 12): 45.0}
    out = []
    for kind, k in acc:
        mha = k if kind == "mha" else 0 if kind == "ffn" else k // 2
        out.append({"key": f"{kind}{k}", "task": "vqa", "kind": kind, "k": k, "n_layers": 30, "n_eval": N,
                    "skipped": json.dumps({"mha": list(range(mha)), "ffn": list(range(k - mha))}),
                    "Avg": acc[kind, k], "updated_params_pct": 0.1, "final_train_loss": 1.0, "search_wall_s": 5.0,
                    "train_wall_s": 9.0})
    return pd.DataFrame(out)


def _timing():
    ms = {"mha k=4": (9.0, 0.2), "mha k=12": (7.0, 0.2), "ffn k=4": (8.0, 0.2), "ffn k=12": (6.9, 0.2),
          "mha_or_ffn k=4": (8.5, 0.2), "mha_or_ffn k=12": (7.5, 0.2), "base": (10.0, 0.3)}
    return pd.DataFrame([{"label": label, "decode_ms_per_token": m, "decode_ms_per_token_iqr": iqr,
                          "time_vs_base": m / 10.0, "prefill_ms": 30.0, "prompt_len": 64}
                         for label, (m, iqr) in ms.items()])


def _runs():
    return skip_ablation.with_timing(skip_ablation.runs_table(_rows(), "Avg"), _timing())


# ----------------------------------------------------------------------------- the runs

def test_headline_k_budget_and_runs():
    assert skip_ablation.headline_k([4, 12]) == 12 and skip_ablation.headline_k([1, 2]) == 2
    P = profiles.SkipAblationParams(seeds=[0, 1, 2])
    text = skip_ablation.budget(P)
    assert "(24 warm-up steps of the supernet, then 8 comparisons of 3 sub-networks, 4 training steps apart)" in text
    assert "start 56 fine-tuning steps of 8 examples" in text and "k in [4, 12]" in text
    assert text.endswith("Training seeds: [0, 1, 2] for MHAs against FFNs at k=12, 0 for the rest.")
    runs = skip_ablation.runs_table(_rows(), "Avg")
    assert runs["MHAs skipped"].tolist() == [4, 12, 0, 0, 2, 6] and runs["FFNs skipped"].tolist() == [0, 0, 4, 12, 2, 6]
    assert runs.accuracy.tolist() == [50.0, 49.0, 45.0, 36.0, 48.0, 45.0]
    assert skip_ablation.runs_note(_rows()) == "6 runs on vqa (30 layers), 200 test examples each"
    labels = skip_ablation.run_labels(_rows())
    assert labels["mha12"] == "EAS, skip MHA" and labels["mha_or_ffn4"] == "EAS, skip MHA or FFN"


def test_template_text_reports_seen_and_held_out_templates():
    overlap = {"seen_template": 30, "test": 32, "seen_template_pct": 93.75, "seen_kind": 32, "duplicate": 1}
    gen = pd.DataFrame({"correct": [1, 0, 1, 1], "template_seen": [True, True, True, False]})
    text = skip_ablation.template_text(overlap, gen, 12)
    assert text.startswith("30 of 32 test questions (93.8%) share a template with a training question, 32 share a "
                           "question kind, 1 are duplicates")
    assert text.endswith("MHA k=12 accuracy: 100.0 on 1 held-out-template questions, 66.7 on 3 seen-template "
                         "questions.")
    only_seen = skip_ablation.template_text(overlap, gen.assign(template_seen=True), 12)
    assert "Every evaluated question's template occurs in training" in only_seen
    assert "Every evaluated question's template" in skip_ablation.template_text(overlap, gen[["correct"]], 12)


def test_timing_columns_and_base_note():
    runs = _runs()
    assert runs["ms / token"].tolist() == [9.0, 7.0, 8.0, 6.9, 8.5, 7.5]
    assert runs["time vs base"].tolist() == pytest.approx([0.9, 0.7, 0.8, 0.69, 0.85, 0.75])
    assert skip_ablation.base_note(_timing(), 16, 3) == ("base model: 30.0 ms prefill (64 tokens), 10.00 ms / token "
                                                         "(IQR 0.30), 16 tokens, 3 interleaved repeats")


def test_table5_puts_the_papers_numbers_beside_ours():
    table = skip_ablation.table5(_runs())
    ref = paper.TABLE5
    assert table.loc[("MHA", 12), "paper accuracy"] == ref["mha", 12].accuracy
    assert table.loc[("FFN", 4), "paper s / sample"] == ref["ffn", 4].seconds
    assert table.loc[("MHA or FFN", 12), "accuracy"] == 45.0
    shorter = skip_ablation.table5(_runs().assign(k=[1, 12, 1, 12, 1, 12]))
    assert np.isnan(shorter.loc[("MHA", 1), "paper accuracy"])  # the paper has no k=1 row


def test_table5_figure_draws_ours_and_the_paper():
    fig = skip_ablation.table5_figure(_runs(), N, metric="Avg", task="vqa", base_decode_ms=10.0)
    ours, time, theirs = fig.axes
    assert len(ours.containers) == 3 and list(ours.lines[0].get_ydata()) == [50.0, 49.0]
    assert list(time.containers[1].lines[0].get_ydata()) == [8.0, 6.9]  # FFN's decode time
    assert time.lines[-1].get_ydata()[0] == 10.0  # the base model, dotted
    papers = {line.get_label(): list(line.get_ydata()) for line in theirs.lines}
    assert papers["FFN"] == [paper.TABLE5["ffn", k].accuracy for k in (4, 8, 12)]
    seg = ours.containers[0].lines[2][0].get_segments()[0][:, 1]
    assert seg == pytest.approx([50 - 100 * np.sqrt(0.25 / N), 50 + 100 * np.sqrt(0.25 / N)])


# ----------------------------------------------------------------------------- verdicts

def _scenario(seeds=1):
    """MHA beats FFN by 30 items at k=12 (every seed) and ties at k=4; MHA at k=12 is 2 items below k=4."""
    correct = {("mha", 4): _run(_correct(100)), ("ffn", 4): _run(_correct(100, shift=1)),
               ("mha", 12): _run(_correct(98)), ("ffn", 12): _run(_correct(68))}
    head = {"mha": [correct["mha", 12]] + [_run(_correct(98 + 2 * s)) for s in range(1, seeds)],
            "ffn": [correct["ffn", 12]] + [_run(_correct(68 + 4 * s)) for s in range(1, seeds)]}
    return correct, head


def test_family_one_seed():
    correct, head = _scenario()
    rows, verdicts = skip_ablation.family(correct, head, KS, 2.0)
    assert list(rows) == ["MHA - FFN, k=4", "MHA - FFN, k=12", "MHA k=12 - MHA k=4 (no worse by 2)"]
    assert [v["claim"] for v in verdicts] == ["mha_beats_ffn_k4", "mha_beats_ffn_k12",
                                              "mha_largest_k_no_worse_than_smallest"]
    assert [v.get("headline", False) for v in verdicts] == [False, True, False]
    assert verdicts[2]["kind"] == "no_worse" and verdicts[2]["margin"] == 2.0
    assert verdicts[1]["method_a"] == "skip MHA k=12" and verdicts[1]["method_b"] == "skip FFN k=12"
    assert rows["MHA - FFN, k=12"]["diff"] == pytest.approx(15.0) and rows["MHA - FFN, k=4"]["diff"] == 0.0
    assert rows["MHA k=12 - MHA k=4 (no worse by 2)"]["diff"] == pytest.approx(-1.0)
    assert all(r["comparison"].noise == "items only" for r in rows.values())


def test_family_with_seeds_widens_the_one_seed_verdicts():
    correct, head = _scenario(seeds=3)
    rows, verdicts = skip_ablation.family(correct, head, KS, 2.0)
    headline = rows["MHA - FFN, k=12, 3 seeds"]["comparison"]
    assert (headline.seeds_a, headline.seeds_b) == (3, 3)
    assert headline.acc_a_seeds == pytest.approx((49.0, 50.0, 51.0))
    sd = (1.0, 2.0)  # sd of 49, 50, 51 and of 34, 36, 38
    assert rows["MHA - FFN, k=4"]["comparison"].assumed_sd == pytest.approx(sd)
    assert rows["MHA k=12 - MHA k=4 (no worse by 2)"]["comparison"].assumed_sd == pytest.approx((1.0, 1.0))
    one = skip_ablation.family(*_scenario(), KS, 2.0)[0]["MHA - FFN, k=4"]
    assert rows["MHA - FFN, k=4"]["ci_low"] < one["ci_low"]
    # one k only: no trend claim, the headline alone
    rows1, verdicts1 = skip_ablation.family({("mha", 12): correct["mha", 12], ("ffn", 12): correct["ffn", 12]},
                                            head, [12], 2.0)
    assert list(rows1) == ["MHA - FFN, k=12, 3 seeds"] and verdicts1[0]["headline"]


def test_claim_figure_and_verdict_table():
    correct, head = _scenario(seeds=2)
    rows, _ = skip_ablation.family(correct, head, KS, 2.0)
    shown = {label: {**r, "p_adjusted": 0.5} for label, r in rows.items()}
    fig = skip_ablation.claim_figure(shown, head_k=12, metric="Avg", seeds=[0, 1])
    seeds_ax, forest = fig.axes
    assert [t.get_text() for t in seeds_ax.get_xticklabels()] == ["MHA k=12", "FFN k=12"]
    assert [t.get_text() for t in forest.get_yticklabels()] == ["MHA - FFN, k=4", "MHA - FFN, k=12, 2 seeds"]
    assert seeds_ax.get_title() == "training seeds [0, 1]"
    table = skip_ablation.verdict_table(shown)
    assert list(table.index) == list(rows) and table["p (Holm)"].tolist() == [0.5] * 3


def test_decode_time_and_mixed_text():
    runs = _runs()
    text = skip_ablation.decode_time_text(runs, KS)
    # k=4: MHA 9.0 vs FFN 8.0 (slower beyond the IQRs); k=12: 7.0 vs 6.9 (within them)
    assert "faster than skipping as many FFNs, beyond the IQRs, at 0 of 2 values of k and slower at 1" in text
    assert "9.0 vs 8.0 ms / token at k=4, 7.0 vs 6.9 ms / token at k=12." in text
    assert "an FFN's three large matmuls" in text
    fast = runs.assign(**{"ms / token": [5.0, 4.0, 8.0, 6.9, 8.5, 7.5]})
    assert skip_ablation.decode_time_text(fast, KS).endswith("4.0 vs 6.9 ms / token at k=12.")
    assert skip_ablation.mixed_text(runs) == "When free to pick either kind, the bandit skipped MHAs for 2 of 4 at " \
                                             "k=4, 6 of 12 at k=12."


def test_conclusion_uses_the_corrected_verdicts(data_root):
    correct, head = _scenario()
    rows, verdicts = skip_ablation.family(correct, head, KS, 2.0)
    recorded = report.record_verdicts(verdicts, chapter=skip_ablation.CHAPTER, family=skip_ablation.FAMILY,
                                      task="vqa", metric="Avg", profile="test")
    stored = ledger.read_claims("test")
    assert len(stored) == 3 and set(stored.correction) == {"holm over 3"}
    assert stored.set_index("claim").headline.to_dict()["mha_beats_ffn_k12"]
    text = skip_ablation.conclusion(rows=rows, recorded=recorded, runs=_runs(), ks=KS, margin=2.0, seed=0)
    assert text.startswith("**The paper's claim that MHAs can be skipped with less loss than FFNs**, at k=12: "
                           "skipping MHAs 49.0 vs skipping FFNs 34.0: +15.0 points")
    assert "Verdict, after Holm's correction over the chapter's family: **holds**" in text
    assert ("At the other k, at seed 0 (one run each: the intervals cover item noise only, not the spread between "
            "training seeds): k=4 +0.0 points (cannot tell") in text
    ref = paper.table5_view()
    gap_mha, gap_ffn = ref["mha"][12][1] - ref["mha"][4][1], ref["ffn"][12][1] - ref["ffn"][4][1]
    assert (f"Between k=4 and k=12 the MHA runs change by -1.0 points and the FFN runs by -9.0 (paper, k=4 to 12: "
            f"{gap_mha:+.1f} and {gap_ffn:+.1f})") in text
    trend = recorded.set_index("claim").verdict["mha_largest_k_no_worse_than_smallest"]
    assert f"costs at most 2 points against 4: **{trend}**" in text
    assert "**Decode time:**" in text and "the bandit skipped MHAs for 2 of 4 at k=4" in text


def test_conclusion_never_says_holds_when_holm_does_not(data_root):
    """MHA beats FFN at k=12 by 8 items to 1 (p ~ 0.04 alone): 'holds' unadjusted, not after Holm over 3."""
    correct = {("mha", 4): _run(_correct(100)), ("ffn", 4): _run(_correct(100)),
               ("mha", 12): _run(_correct(100)), ("ffn", 12): _run(np.r_[np.zeros(8, int), np.ones(92, int),
                                                                         np.zeros(100, int)] + _correct(1, 150))}
    rows, verdicts = skip_ablation.family(correct, {"mha": [correct["mha", 12]], "ffn": [correct["ffn", 12]]}, KS,
                                          2.0)
    assert rows["MHA - FFN, k=12"]["verdict"] == "holds"
    recorded = report.record_verdicts(verdicts, chapter=skip_ablation.CHAPTER, family=skip_ablation.FAMILY,
                                      task="vqa", metric="Avg", profile="test")
    text = skip_ablation.conclusion(rows=rows, recorded=recorded, runs=_runs(), ks=KS, margin=2.0, seed=0)
    assert "family: **cannot tell after Holm over 3 claims" in text and "**holds**" not in text.split("Between")[0]
