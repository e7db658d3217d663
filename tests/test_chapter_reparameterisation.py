"""Chapter 5 (re-parameterisation): its sentences and figure, from small frames shaped like the benchmarks'
output, so every number is known."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from eas.study import paper
from eas.study.chapters import reparameterisation as ch


def exact_frame(fp32=2e-7, fp64=0.0, same=True):
    rows = []
    for dtype, diff in (("float32", fp32), ("float64", fp64)):
        for strategy in ("per_example", "two_matrix", "low_rank"):
            rows.append({"dtype": dtype, "max_abs_logit_diff": diff / (2 if strategy == "low_rank" else 1),
                         "logit_scale": 2.0, "tokens_identical": same, "strategy": strategy})
    return pd.DataFrame(rows)


def test_exactness_text_reads_float64_as_exact_and_fp32_against_the_bound():
    text = ch.exactness_text(exact_frame(), n_layers=30)
    assert "In float64 the largest logit difference is 0.0e+00" in text
    assert "In fp32 it is 2.0e-07 with logits up to 2.0 (relative 1.0e-07), within the 1e-4 bound" in text
    assert "through 30 layers" in text and "Greedy tokens identical in every case: True." in text
    worse = ch.exactness_text(exact_frame(fp32=3e-4, same=False), n_layers=4)
    assert "above the 1e-4 bound" in worse and "every case: False." in worse


def test_merge_cost_text_takes_the_worst_batch_and_names_strategies_within_the_target():
    costs = pd.DataFrame({"strategy": ["per_example", "per_example", "low_rank", "low_rank"], "batch": [1, 8, 1, 8],
                          "ratio": [0.02, 0.09, 0.01, 0.03]})
    text = ch.merge_cost_text(costs)
    assert "low_rank 3.0%, per_example 9.0%" in text and "(target: at most 5%; low_rank within it)." in text
    scale = pd.DataFrame({"strategy": ["per_example", "low_rank"], "prompt_len": [600, 600], "skip_hidden": [256, 256],
                          "k_full": [12, 12], "layers_full": [32, 32],
                          "merge_over_prefill_full_model": [0.0123, 0.0004]})
    text = ch.merge_cost_text(costs.assign(ratio=[0.2, 0.3, 0.1, 0.06]), scale)
    assert "(target: at most 5%; none within it)." in text
    assert "600-token prompt, PIA hidden 256), merging 12 layers costs 1.23% (per_example), 0.04% (low_rank) " \
           "of a 32-layer prefill." in text


def test_strategies_text_picks_the_fastest_per_sample_and_marks_ties():
    side = pd.DataFrame({
        "batch": [1] * 4, "variant": ["base", "skip-only", "per_example", "low_rank"],
        "ms_per_sample": [30.0, 20.0, 22.0, 21.0], "speedup": [1.0, 1.5, 1.36, 1.43],
        "decode_vs_skip_only": [1.5, 1.0, 1.05, 1.01], "decode_noise": [0.0, 0.0, 0.02, 0.03],
        "decode_resolved": [True, False, True, False], "merge_mb": [0.0, 0.0, 4.0, 0.5]})
    text = ch.strategies_text(side, exact_frame())
    assert text.startswith("**Strategies.** batch 1: fastest per sample low_rank (1.43x of base; per_example 1.36x)")
    assert "per_example +5.0% (IQR 2%), low_rank +1.0% (IQR 3%, a tie)" in text
    assert "merge memory per_example 4.0 MB, low_rank 0.5 MB" in text
    assert "per_example 0.0e+00, two_matrix 0.0e+00, low_rank 0.0e+00." in text


def core_frame():
    rows = [{"method": "base", "k": 0, "decode_ms_per_token": 10.0, "kv_cache_mb": 3.0, "prompt_len": 64,
             "decode_vs_skip_only": float("nan")}]
    for k in (4, 12):
        rows.append({"method": "skip-only", "k": k, "decode_ms_per_token": 10.0 - k / 2, "kv_cache_mb": 2.0,
                     "prompt_len": 64, "decode_vs_skip_only": 1.0})
        gap = 1.01 if k == 4 else 1.1
        rows.append({"method": "eas-merged", "k": k, "decode_ms_per_token": (10.0 - k / 2) * gap,
                     "kv_cache_mb": 3.0 * (1 - k / 30), "prompt_len": 64, "decode_vs_skip_only": gap})
    return pd.DataFrame(rows)


def test_merged_decode_text_and_figure():
    text = ch.merged_decode_text(core_frame())
    assert text.startswith("**Merged decode vs skip-only:** k=4: +1.0%, k=12: +10.0% (target: within 2%).")
    assert "Base decodes at 10.0 ms/token; k=4: 8.1, k=12: 4.4 ms/token merged." in text
    fig = ch.decode_figure(core_frame(), timing_batch=1, new_tokens=32)
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "KV cache after 32 tokens, prompt 64"
    assert [line.get_label() for line in fig.axes[0].get_lines()][:2] == ["skip-only", "eas-merged"]
    plt.close(fig)


def test_table6_text_puts_our_ratios_beside_the_papers():
    t6 = pd.DataFrame({"setting": ["Base", "+ Info. Exc.", "+ Frozen bias", "+ Re-param."],
                       "time_vs_base": [1.0, 1.2, 1.05, 0.9]})
    text = ch.table6_text(t6)
    ref = paper.TABLE6
    merged = ref["reparam"].seconds / ref["base"].seconds
    exchange = 100 * (ref["info_exchange"].seconds / ref["base"].seconds - 1)
    assert f"cuts time per sample to {merged:.2f}x of Base" in text and merged == pytest.approx(0.575, abs=1e-3)
    assert "**Here:** 0.90x of Base; information exchange costs +20.0% unmerged" in text
    assert f"(paper {exchange:+.1f}%)" in text
