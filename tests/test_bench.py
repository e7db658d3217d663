"""The benchmark runs under the smoke profile and writes the columns it promises (no timing checks)."""

import pandas as pd

from eas.study import bench


def test_core_benchmark_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("EAS_DATA", str(tmp_path / "data"))
    from eas.core import io

    monkeypatch.setenv("EAS_CACHE", str(io.REPO_ROOT / "data" / "cache"))
    assert bench.main(["--profile", "smoke", "--out", str(tmp_path / "bench")]) == 0
    throughput = pd.read_csv(tmp_path / "bench" / "throughput.csv")
    assert (throughput.train_tokens_per_s > 0).all() and (throughput.decode_ms_per_token_batch1 > 0).all()
    core = pd.read_csv(tmp_path / "bench" / "core.csv")
    assert set(bench.CORE_COLUMNS) <= set(core.columns)
    # base once per batch size, then skip-only / eas-unmerged / eas-merged for each k
    assert len(core) == 2 * (1 + 4 * 2)  # per batch: base, then 4 methods for each of 2 ks
    assert (core.prefill_ms > 0).all() and (core.decode_ms_per_token > 0).all()
    assert set(core.method) == {"base", "skip-only", "eas-unmerged", "eas-merged", "eas-merged-static"}
    merged = core[core.method.str.startswith("eas-merged")]
    assert (merged.merge_ms > 0).all()
    # fewer attentions, smaller cache: exactly proportional to the kept layers
    base = core[(core.method == "base") & (core.batch == 1)].kv_cache_mb.iloc[0]
    k2 = core[(core.method == "skip-only") & (core.k == 2) & (core.batch == 1)].kv_cache_mb.iloc[0]
    assert abs(k2 / base - 2 / 4) < 1e-9


def test_timing_skip_set_bounds():
    import pytest

    assert bench.timing_skip_set(30, 12).mha == tuple(range(17, 29))
    with pytest.raises(ValueError, match="k=29"):
        bench.timing_skip_set(30, 29)


def test_merge_cost_at_scale_runs_on_a_shrunk_shape():
    from eas.method.pia import PIAConfig

    frame = bench.merge_cost_at_scale(2, config=PIAConfig(skip_hidden=4, adapt_hidden=2), repeats=1,
                                      prompt={"visual_tokens": 8, "text_tokens": 4}, hidden_size=32,
                                      intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
                                      vocab_size=128)
    assert list(frame.strategy) == list(bench.MERGE_SCALE_STRATEGIES)
    for row in frame.itertuples():
        assert row.layers_built == 2 and row.prompt_len == 12
        assert row.merge_ms_measured > 0 and row.prefill_ms_measured > 0 and row.merge_over_prefill_full_model > 0


def test_strategies_suite_smoke(tmp_path):
    """Before (the paper's per-example merge) and after (low_rank), side by side: the rows it promises."""
    out = tmp_path / "bench"
    assert bench.main(["--profile", "smoke", "--suite", "strategies", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "strategies.csv")
    # a second entry of the same shape (`shape: tiny`) times only the strategies it names
    assert set(frame[frame.scale == "tiny-batch2"].variant) == {"base", "skip-only", "low_rank"}
    frame = frame[frame.scale == "tiny"]
    assert set(frame.variant) == {"base", "skip-only", "per_example", "low_rank", "static_router"}
    assert set(frame.batch) == {1, 2}
    merged = frame[frame.variant.isin(["per_example", "low_rank", "static_router"])]
    assert (merged.merge_ms > 0).all() and (frame[frame.variant == "base"].merge_mb == 0).all()
    assert (frame[frame.variant == "base"].speedup_typical == 1).all()
    # each decode ratio carries its noise, and one inside it is not called a difference
    assert (frame.decode_noise >= 0).all()
    resolved = frame[frame.decode_resolved]
    assert ((resolved.decode_vs_skip_only - 1).abs() > resolved.decode_noise).all()
    assert not frame[frame.variant == "skip-only"].decode_resolved.any()
    # low_rank never copies the gate/up weights: it holds less than one per-example copy per row
    held = frame.set_index(["variant", "batch"]).merge_mb
    assert held[("low_rank", 2)] < held[("per_example", 2)]
