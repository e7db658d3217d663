"""The latency suite runs under the smoke profile and writes what it promises; its pure parts are right.
A benchmark, not a test of speed: nothing here asserts on a measured time."""

import dataclasses

import pandas as pd
import pytest
import torch

from eas.measure import cost
from eas.measure.shapes import llava_prompt, random_llama
from eas.method.skip import SkipSet
from eas.models import causal_lm
from eas.models.generate import greedy_generate
from eas.study import bench, latency
from eas.study.profiles import LatencyParams, ParameterError, notebook_params, profile_values

TOY = {"num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
       "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 256}


def toy_params(**changes) -> LatencyParams:
    p = notebook_params("latency", profile_values("smoke", "latency"))
    return dataclasses.replace(p, **changes)


def test_latency_suite_smoke(tmp_path, monkeypatch):
    from eas.core import io

    monkeypatch.setenv("EAS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EAS_CACHE", str(io.REPO_ROOT / "data" / "cache"))
    out = tmp_path / "bench"
    assert bench.main(["--profile", "smoke", "--suite", "latency", "--out", str(out)]) == 0
    assert not (out / "core.csv").exists()  # --suite latency runs the latency suite only
    df = pd.read_csv(out / "latency.csv")
    assert list(df.columns) == latency.LATENCY_COLUMNS
    # base, lora, adapter, mam, das x2, (skip-only, eas-unmerged, eas-merged) x2, and EAS merged with the two
    # other strategies at the largest k only (strategies_at) -- at batch 1 and 2
    assert len(df) == 2 * (4 + 2 + 3 * 2 + 2)
    assert set(df[~df.primary.astype(bool)].k) == {2}
    assert (df.prefill_ms > 0).all() and (df.decode_ms_per_token > 0).all() and df.peak_mb.isna().all()
    for png in ("latency_methods_tiny.png", "latency_das_vs_eas_tiny.png", "latency_ideal_vs_achieved.png"):
        assert (out / png).stat().st_size > 0
    # FLOPs: the counter agrees with the analytic count (merged EAS: up to its tiny merge products)
    exact = df[df.method != "eas-merged"]
    assert exact.flops_rel_diff.abs().max() < 1e-9
    assert df[df.method == "eas-merged"].flops_rel_diff.abs().max() < 0.01
    b1 = df[df.batch == 1].set_index("variant")
    assert b1.loc["base", "delta_gflops"] == 0 and b1.loc["lora", "delta_gflops"] == 0
    assert b1.loc["adapter", "delta_gflops"] > 0 and b1.loc["mam", "delta_gflops"] > 0
    assert b1.loc["das k=2", "delta_gflops"] < b1.loc["eas-merged k=2", "delta_gflops"] < 0
    # KV cache: proportional to the kept attentions; MAM's prefix adds to it
    assert b1.loc["skip-only k=2", "kv_cache_mb"] / b1.loc["base", "kv_cache_mb"] == pytest.approx(2 / 4)
    assert b1.loc["mam", "kv_cache_mb"] > b1.loc["base", "kv_cache_mb"]
    assert (b1.loc[["base", "lora", "adapter", "mam"], "ideal_speedup"] == 1).all()
    # per sample the ideal includes prefill: skipping saves there too
    assert (b1.loc[["skip-only k=2", "eas-merged k=2"], "ideal_sample_speedup"] > 1).all()
    # merge strategies: one row each, memory from tensor sizes (deterministic)
    b2 = df[df.batch == 2].set_index("variant")
    merged = df[df.method == "eas-merged"]
    assert set(merged.strategy) == {"per_example", "low_rank", "static_router"}
    assert set(merged[merged.primary].strategy) == {"low_rank"}  # the default; per_example is the reference
    assert (merged.merge_mb > 0).all() and df[df.method != "eas-merged"].merge_mb.eq(0).all()
    assert b2.loc["eas-merged k=2", "merge_mb"] < b2.loc["eas-merged[per_example] k=2", "merge_mb"]
    assert b2.loc["eas-merged k=2", "decode_memory_mb"] > b2.loc["skip-only k=2", "decode_memory_mb"]
    st = latency.strategies(df)
    assert len(st) == 2 * (2 + 2) and st.decode_vs_skip_only.notna().all() and (st.memory_vs_skip_only > 1).all()
    best = latency.best_strategy(df)
    assert list(best.batch) == [1, 2] and set(best.best) <= {"per_example", "low_rank", "static_router"}
    assert latency.table1(df, "tiny", 1).loc["EAS_12", "ours"] == "EAS_2"  # primary rows only


def _strategy_rows(times: dict, iqr: float) -> pd.DataFrame:
    """A latency frame with base, skip-only and EAS merged rows: only the columns `strategies` reads."""
    common = {"scale": "toy", "batch": 1, "merge_ms": 1.0, "merge_share_of_prefill": 0.01, "merge_mb": 1.0,
              "decode_memory_mb": 10.0, "ideal_sample_speedup": 1.2, "achieved_sample_fraction": 0.9}
    rows = [{**common, "method": "base", "k": 0, "strategy": None, "primary": True, "task_ms_per_sample": 100.0},
            {**common, "method": "skip-only", "k": 2, "strategy": None, "primary": True, "task_ms_per_sample": 80.0}]
    rows += [{**common, "method": "eas-merged", "k": 2, "strategy": name, "primary": name == "low_rank",
              "task_ms_per_sample": t} for name, t in times.items()]
    frame = pd.DataFrame(rows)
    return frame.assign(decode_ms_per_token=frame.task_ms_per_sample / 10, decode_ms_per_token_iqr=iqr)


def test_best_strategy_says_when_the_run_cannot_tell():
    times = {"per_example": 95.0, "low_rank": 82.0, "static_router": 84.0}
    clear = latency.best_strategy(_strategy_rows(times, iqr=0.08)).iloc[0]  # 1% noise, 2.4% margin
    assert (clear.best, clear.runner_up, clear.resolved) == ("low_rank", "static_router", True)
    assert clear.margin == pytest.approx(84 / 82 - 1) and clear.best_vs_per_example == pytest.approx(95 / 82)
    noisy = latency.best_strategy(_strategy_rows(times, iqr=0.4)).iloc[0]  # ~5% noise
    assert noisy.best == "low_rank" and not noisy.resolved


def test_random_llama_scale_runs_and_counts_flops():
    p = toy_params(scales={"toy": {"shape": "llama-1b", "overrides": TOY, "visual_tokens": 6, "text_tokens": 4,
                                   "batches": [2]}})
    df = latency.run_scale("toy", p, progress=False)
    # 4 + das x2 + (skip-only, unmerged, merged) x2 + the two other merge strategies at k=2 only
    assert len(df) == 14 and set(df.batch) == {2} and (df.prompt_len == 10).all()
    assert df[df.method != "eas-merged"].flops_rel_diff.abs().max() < 1e-9


def test_the_gpu_profiles_bf16_path_runs_on_a_toy_shape():
    """The gpu profile times LLaVA-1.5-7B's shape in bf16; the same code path (every method, the merge in
    bf16, FLOPs, module times) runs here on a toy shape of that family, so the GPU run cannot be its first."""
    p = toy_params(scales={"toy": {"shape": "llava-1.5-7b", "overrides": TOY, "dtype": "bfloat16",
                                   "visual_tokens": 6, "text_tokens": 4, "batches": [1]}})
    df = latency.run_scale("toy", p, progress=False)
    assert set(df.dtype) == {"bfloat16"} and set(df.method) == set(latency.METHODS)
    assert (df.decode_ms_per_token > 0).all() and (df.gflops_counted > 0).all()
    eas, skip = (df[(df.method == m) & (df.k == df.k.max())].iloc[0] for m in ("eas-merged", "skip-only"))
    assert eas.kv_cache_mb == skip.kv_cache_mb < df[df.method == "base"].kv_cache_mb.iloc[0]


def test_variant_specs():
    specs = latency.variant_specs(8, [2, 4], [1])
    names = [s.name for s in specs]
    assert names[0] == "base" and names[1:4] == ["lora", "adapter", "mam"]
    assert names.count("das k=1") == 1 and "eas-merged k=4" in names and len(specs) == 4 + 1 + 3 * 2
    by = {s.name: s for s in specs}
    assert by["das k=1"].skips == SkipSet(layer=(6,))
    assert by["eas-unmerged k=2"].skips == SkipSet(mha=(5, 6)) == by["skip-only k=2"].skips
    only = latency.variant_specs(8, [2], [1], methods=["eas-merged"])
    assert [s.name for s in only] == ["base", "eas-merged k=2"]
    per = latency.variant_specs(8, [2], [1], methods=["eas-merged"], strategies=["per_example", "low_rank"],
                                primary="low_rank")
    assert [(s.name, s.strategy, s.primary) for s in per[1:]] == [
        ("eas-merged k=2", "low_rank", True), ("eas-merged[per_example] k=2", "per_example", False)]
    largest = latency.variant_specs(8, [2, 4], [1], methods=["eas-merged"], strategies=["per_example", "low_rank"],
                                    primary="low_rank", strategy_ks=[4])
    assert [s.name for s in largest[1:]] == ["eas-merged k=2", "eas-merged k=4", "eas-merged[per_example] k=4"]
    with pytest.raises(ParameterError, match="unknown latency methods"):
        latency.variant_specs(8, [2], [1], methods=["prompt-tuning"])


def test_configure_then_reset_restores_the_model():
    model = random_llama("llama-1b", **TOY)
    target = causal_lm.CausalLMTarget(model)
    batch = llava_prompt(TOY["vocab_size"], batch=2, visual_tokens=6, text_tokens=4)
    latency.reset(model)  # the skip wrappers (EASBlock) stay from here on; with no skips they are the base model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = greedy_generate(target, batch, 4, ignore_eos=True).tokens
    p = toy_params()
    base_flops = cost.counted_flops(target, batch, 3).total
    for spec in latency.variant_specs(4, [1, 2], [1, 2]):
        hook = latency.configure(model, spec, p)
        flops = cost.counted_flops(target, batch, 3, hook).total
        if spec.method in ("adapter", "mam"):
            assert flops > base_flops, spec.name  # the method really is attached
        elif spec.k:
            assert flops < base_flops, spec.name  # and really skips
        latency.reset(model)
        after = model.state_dict()
        assert set(after) == set(before), spec.name
        assert all(torch.equal(after[k], before[k]) for k in before), spec.name
        assert torch.equal(greedy_generate(target, batch, 4, ignore_eos=True).tokens, reference), spec.name


def test_extrapolated_decode_flops_equal_counting_every_step():
    """counted_flops counts three decode steps and extends them (a step's FLOPs are affine in its position):
    for every method of the suite, merged EAS included, that equals counting each of the steps."""
    model = random_llama("llama-1b", **TOY)
    target = causal_lm.CausalLMTarget(model)
    batch = llava_prompt(TOY["vocab_size"], batch=2, visual_tokens=6, text_tokens=4)
    latency.reset(model)
    p = toy_params()
    for spec in latency.variant_specs(4, [2], [1], strategies=["per_example", "low_rank", "static_router"],
                                      primary="low_rank"):
        counts = []
        for every_step in (True, False):
            hook = latency.configure(model, spec, p, target, batch)
            counts.append(cost.counted_flops(target, batch, 9, hook, every_step=every_step))
            latency.reset(model)
        assert counts[0] == counts[1], spec.name
        assert counts[0].decode > 0 and counts[0].merge == counts[1].merge, spec.name


def test_analytic_flops_of_adapters():
    from eas.measure.shapes import shape_config

    cfg = shape_config("llama-1b", **TOY)
    p = toy_params(adapter_hidden=8)
    base = latency.analytic_variant_flops(cfg, latency.Spec("base"), 10, 3, 1, p)
    adapter = latency.analytic_variant_flops(cfg, latency.Spec("adapter"), 10, 3, 1, p)
    # one adapter per block: 2 FLOPs x (d h + h d) per token, on 10 prompt + 2 decode tokens
    assert adapter.total - base.total == 4 * 4 * 64 * 8 * (10 + 2)
    eas = latency.Spec("eas-merged", 1, SkipSet(mha=(2,)), strategy="per_example")
    merged = latency.analytic_variant_flops(cfg, eas, 10, 3, 1, p)
    unmerged = latency.analytic_variant_flops(cfg, dataclasses.replace(eas, method="eas-unmerged"), 10, 3, 1, p)
    assert merged.prefill == unmerged.prefill and merged.decode < unmerged.decode
    # low_rank decodes (n Wd1) B on top: 2 d r + 2 r 2 d_ff per token and skipped MHA, 2 decode steps
    low = latency.analytic_variant_flops(cfg, dataclasses.replace(eas, strategy="low_rank"), 10, 3, 1, p)
    r = p.skip_hidden
    assert low.decode - merged.decode == 2 * (2 * 64 * r + 2 * r * 2 * 128) < unmerged.decode - merged.decode


def test_ideal_and_achieved_arithmetic():
    assert cost.ideal_speedup(10.0, 2.5) == pytest.approx(10 / 7.5)
    assert cost.achieved_fraction(10.0, 8.0, 2.5) == pytest.approx(0.8)
    times = cost.ModuleTimes([1.0] * 4, [0.5] * 4, 10.0, "ablation")
    assert times.removed_ms(SkipSet(layer=(1, 2))) == pytest.approx(3.0)  # DAS: MHA and FFN per block
    assert times.removed_ms(SkipSet(mha=(1, 2))) == pytest.approx(2.0)
    assert times.ideal_speedup(SkipSet(mha=(1, 2))) == pytest.approx(10 / 8)


def test_table1_maps_the_papers_k_by_depth():
    assert latency._nearest([4, 8, 12], 8 * 30 / 32) == 8
    assert latency._nearest([1, 2], 12 * 4 / 32) == 2  # 1.5: ties go to the larger k
    assert latency._nearest([], 3) is None


def test_bad_latency_parameters_are_named():
    values = profile_values("smoke", "06_latency")
    with pytest.raises(ParameterError, match="ks="):
        notebook_params("06_latency", {**values, "ks": [0]})
    with pytest.raises(ParameterError, match="new_tokens=1 must be >= 2"):
        notebook_params("06_latency", {**values, "new_tokens": 1})
    with pytest.raises(ParameterError, match="merge_strategies"):
        notebook_params("06_latency", {**values, "merge_strategies": ["low-rank"]})
    with pytest.raises(ParameterError, match="strategies_at='largest'; expected one of largest_k, every_k"):
        notebook_params("06_latency", {**values, "strategies_at": "largest"})
    with pytest.raises(ParameterError, match="unknown keys"):
        latency.scale_settings("tiny", toy_params(scales={"tiny": {"prompt": 3}}))


def test_scale_settings_override_the_global_ones():
    p = toy_params(module_repeats=4, scales={"tiny": {}, "big": {"shape": "llama-1b", "module_repeats": 2,
                                                                  "batches": [4]}})
    tiny, big = latency.scale_settings("tiny", p), latency.scale_settings("big", p)
    assert (tiny["shape"], tiny["module_repeats"], tiny["batches"]) == ("tiny", 4, p.batches)
    assert (big["shape"], big["module_repeats"], big["batches"]) == ("llama-1b", 2, [4])
    # each scale's own settings key its cached rows
    assert latency.scale_params(p, "big")["module_repeats"] == 2 != latency.scale_params(p, "tiny")["module_repeats"]


def _table1_rows(adapter_time: float, noise: float = 0.01) -> pd.DataFrame:
    """A Table 1 view as `latency.table1` returns it: only the columns the verdict reads."""
    rows = {"LLaVA-7B": ("LLaVA-7B", 1.0, 1.0), "Adapter": ("Adapter", 1.04, adapter_time),
            "DAS_4": ("DAS_1", 0.97, 0.975), "EAS_12": ("EAS_12", 0.98, 0.92)}
    return pd.DataFrame([{"paper_row": k, "ours": o, "flops_vs_base": f, "time_vs_base": t, "time_noise": noise,
                          "paper_flops_vs_base": 1.005, "paper_time_vs_base": 1.32, "merge_share": 0.0}
                         for k, (o, f, t) in rows.items()]).set_index("paper_row")


def test_table1_verdicts_follow_the_numbers_and_their_noise():
    # +4% FLOPs and +10% time: adapters cost more time than FLOPs
    assert "larger share of time than of FLOPs** -- holds" in latency.table1_verdict(_table1_rows(1.10))
    # +4% FLOPs and -2.5% time: the claim must not be printed as holding
    assert "does NOT hold" in latency.table1_verdict(_table1_rows(0.975)).split("adapter costs")[1]
    # the same gap inside the noise is a tie, not a verdict
    assert "within timing noise" in latency.table1_verdict(_table1_rows(0.99, noise=0.2)).split("adapter costs")[1]
    text = latency.table1_verdict(_table1_rows(1.10))
    assert "faster than the base model and every PETL method** -- holds" in text  # 0.92 vs DAS 0.99, noise 1%
    assert "give part of the saving back" not in text  # DAS: 3% FLOPs and 1% time saved, noise 1%: alike
