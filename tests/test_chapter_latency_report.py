"""Chapter 6 (latency): the claims, sentences, roofline bound and ledger rows, from a synthetic latency frame whose
times are set by hand, so every ratio and verdict is known."""

import pandas as pd
import pytest

from eas.study import latency, report
from eas.study.chapters import latency_report


def _row(scale, batch, method, k=0, ms=100.0, iqr=0.01, **extra):
    return {"scale": scale, "batch": batch, "method": method, "k": k, "n_layers": 32, "primary": True,
            "gflops_counted": 10.0 - 0.3 * k, "delta_gflops": -0.3 * k, "task_ms_per_sample": ms, "merge_ms": 0.5,
            "decode_ms_per_token": 10.0, "decode_ms_per_token_iqr": 10.0 * iqr, "device": "cpu", "mha_ms": 1.0,
            "ffn_ms": 2.0, "attention_share": 0.2, **extra}


def _frame(eas_ms=80.0, mha_ms=(3.0, 1.0)):
    rows = []
    for scale, mha in zip(("mini-llava", "llama-1b"), mha_ms):
        for batch in (1, 4):
            rows += [_row(scale, batch, "base", ms=100.0, mha_ms=mha, attention_share=0.3),
                     _row(scale, batch, "lora", ms=101.0), _row(scale, batch, "adapter", ms=110.0),
                     _row(scale, batch, "das", 4, ms=120.0), _row(scale, batch, "das", 8, ms=118.0),
                     _row(scale, batch, "eas-merged", 8, ms=eas_ms + 5),
                     _row(scale, batch, "eas-merged", 12, ms=eas_ms)]
    frame = pd.DataFrame(rows)
    frame.loc[(frame.method == "das") & (frame.k == 4), "k"] = 12  # DAS and EAS share k = 8 and 12
    return frame


def _table1(eas_time: float, noise: float = 0.01) -> pd.DataFrame:
    rows = {"LLaVA-7B": ("LLaVA-7B", 1.0), "LoRA": ("LoRA", 1.01), "DAS_4": ("DAS_4", 0.97),
            "EAS_12": ("EAS_12", eas_time)}
    return pd.DataFrame([{"paper_row": k, "ours": o, "flops_vs_base": 1.0, "time_vs_base": t, "time_noise": noise,
                          "paper_flops_vs_base": 1.0, "paper_time_vs_base": 1.0, "merge_share": 0.0}
                         for k, (o, t) in rows.items()]).set_index("paper_row")


@pytest.mark.parametrize("eas_time, noise, expected, text", [
    (0.90, 0.01, "holds", "holds"), (1.05, 0.01, "does not hold", "does NOT hold"),
    (0.965, 0.01, "cannot tell (within timing noise)", "is within timing noise"),
    (0.90, 0.2, "cannot tell (within timing noise)", "is within timing noise")])
def test_table1_claim_follows_the_rule_table1_verdict_states(eas_time, noise, expected, text):
    t1 = _table1(eas_time, noise)
    fast = latency_report.table1_fastest(t1)
    assert fast["verdict"] == expected and (fast["eas"], fast["other"]) == ("EAS_12", "DAS_4")
    assert (fast["a"], fast["b"], fast["band"]) == (eas_time, 0.97, noise)
    assert f"every PETL method** -- {text} here" in latency.table1_verdict(t1)
    assert latency_report.table1_fastest(t1.drop(index="EAS_12")) is None


def test_verdicts_for_the_ledger_and_their_note(tmp_path, monkeypatch):
    frame = _frame()
    verdicts = latency_report.latency_verdicts(frame, ["mini-llava", "llama-1b"])
    claims = [(v["claim"], v["task"]) for v in verdicts]
    assert claims == [("eas_fastest", "mini-llava, batch 1"), ("eas_faster_than_das", "mini-llava, batch 1"),
                      ("eas_fastest", "llama-1b, batch 1"), ("eas_faster_than_das", "llama-1b, batch 1"),
                      ("mha_slower_than_ffn", "mini-llava, batch 1"), ("mha_slower_than_ffn", "mini-llava, batch 4"),
                      ("mha_slower_than_ffn", "llama-1b, batch 1"), ("mha_slower_than_ffn", "llama-1b, batch 4")]
    assert [v["headline"] for v in verdicts] == [True] + [False] * 7
    fastest = verdicts[0]["measured"]
    assert (fastest["a"], fastest["b"], fastest["verdict"]) == (0.8, 1.01, "holds")
    gaps = verdicts[1]["measured"]  # DAS 118 vs EAS 85 at k=8, 120 vs 80 at k=12
    assert gaps["a"] == pytest.approx(100 * (118 / 85 - 1)) and gaps["b"] == pytest.approx(50.0)
    assert gaps["verdict"] == "holds"
    mha = [v["measured"] for v in verdicts if v["claim"] == "mha_slower_than_ffn"]
    assert [m["a"] for m in mha] == [1.5, 1.5, 0.5, 0.5] and [m["verdict"] for m in mha] == [
        "holds", "holds", "does not hold", "does not hold"]

    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    recorded = report.record_family(verdicts, chapter=latency_report.CHAPTER, family=latency_report.FAMILY,
                                    profile="cpu")
    assert len(recorded) == 8 and recorded.p.isna().all() and (recorded.correction == "none (no test)").all()
    note = latency_report.ledger_note(recorded)
    assert "06_latency records 8 timing verdicts in the claims ledger: 6 hold, 2 do not hold, 0 cannot" in note
    assert "The headline, pre-registered: eas_fastest (EAS_12 vs LoRA, mini-llava, batch 1): holds." in note
    assert list(latency_report.ledger_view(recorded).columns) == latency_report.LEDGER_SHOWN
    slow = latency_report.latency_verdicts(_frame(eas_ms=130.0), ["mini-llava"])
    assert slow[0]["measured"]["verdict"] == "does not hold" and slow[1]["measured"]["verdict"] == "does not hold"
    assert "No timing verdict" in latency_report.ledger_note(pd.DataFrame())


def test_sentences_quote_the_paper_and_the_measurements():
    share = latency.attention_share(_frame())
    text = latency_report.attention_text(share)
    assert text.startswith("**Claim: an MHA costs more decode time than an FFN (paper: 1.35x)** -- does not hold")
    assert "1.50x (mini-llava, batch 1), 1.50x (mini-llava, batch 4), 0.50x (llama-1b, batch 1)" in text
    assert "attention takes 30%" in text
    assert "-- holds" in latency_report.attention_text(share[share.mha_over_ffn > 1])
    iva = pd.DataFrame({"scale": "tiny", "batch": 1, "method": ["skip-only", "eas-merged", "eas-merged", "das", "lora"],
                        "achieved_fraction": [0.9, 0.8, 0.6, 0.5, 3.0]})
    assert "tiny, batch 1: DAS 50%, EAS 70%, Skip-only 90%." in latency_report.achieved_text(iva)
    best = pd.DataFrame([{"scale": "tiny", "batch": 1, "best": "low_rank", "best_speedup_vs_base": 1.4,
                          "best_vs_per_example": 1.1, "runner_up": "per_example", "margin": 0.02, "noise": 0.05,
                          "resolved": False}])
    text = latency_report.strategy_text(best)
    assert "tiny, batch 1: low_rank (1.40x of base, 1.10x the per-example merge; a tie with per_example: 2.0% " \
           "apart, timing noise +/-5.0%)" in text
    assert "a tie" not in latency_report.strategy_text(best.assign(resolved=True))
    quotes = latency_report.paper_quotes()
    assert "an Adapter adds +0.5% FLOPs but +32% time; EAS_12 takes 0.83x" in quotes
    assert "1.35x an FFN's time" in quotes and "by 44-52%" in quotes


def test_the_roofline_bound_against_the_papers_speedups():
    assert latency_report.PAPER_K == 12
    bound = latency_report.roofline()
    assert (bound["k"], bound["layers"], bound["prompt"]) == (12, 32, 636)
    claims = bound["claims"]
    assert claims.speedup.tolist() == pytest.approx([2.19 / 1.82, 2.18, 2.94 / 1.69])
    assert not claims.fits.any()
    text = latency_report.roofline_text(bound)
    assert "skipping 12 of 32 MHAs bounds the batch-1 decode speed-up at 1.139x" in text
    assert "None fits the bound: Table 1's 1.20x needs 5% from elsewhere" in text
    assert "the 2.18x against LaVIN" in text and "Table 6's 1.74x from merging alone" in text
    small = latency_report.roofline("llama-1b", 2)
    assert small["layers"] == 22 and small["claims"].excess.iloc[0] > claims.excess.iloc[0]
