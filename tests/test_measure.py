"""Measurement: timing mechanics (no timed assertions), FLOPs vs the analytic count, KV bytes, shapes."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eas.measure import cost, shapes
from eas.method.skip import SkipSet, apply_skips, kv_cache_bytes
from eas.models import causal_lm
from eas.models.generate import greedy_generate
from eas.models.mini_llava import Batch
from eas.study import paper

CFG = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=1)


@pytest.fixture()
def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**CFG)).eval()


def left_padded(B=2, T=12, pad=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, CFG["vocab_size"], (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :pad], ids[0, :pad] = 0, 0
    return Batch(ids, mask, mask.bool())


# ----------------------------------------------------------------------------- targets

def test_causal_lm_target_matches_hf_generate(llama):
    batch = left_padded()
    ours = greedy_generate(causal_lm.CausalLMTarget(llama), batch, 8, ignore_eos=True).tokens
    hf = llama.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                        max_new_tokens=8, min_new_tokens=8, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours, hf[:, batch.input_ids.shape[1]:])


def test_causal_lm_target_unwraps_for_arch(llama):
    t = causal_lm.CausalLMTarget(llama)
    assert causal_lm.model_of(t) is llama and t.lm_head is llama.lm_head and t.eos_token_id == 1
    assert causal_lm.device_of(t).type == "cpu"


# ----------------------------------------------------------------------------- timing

def test_time_generation_is_sane_and_fixed_length(llama):
    target = causal_lm.CausalLMTarget(llama)
    batch = left_padded()
    # Make EOS the token generated first: a generator that stops at EOS would stop at once.
    target.eos_token_id = int(greedy_generate(target, batch, 1).tokens[0, 0])
    calls = []

    def hook(model, b):
        calls.append(model)
        return lambda: calls.append("undo")

    t = cost.time_generation(target, batch, 6, warmup=1, repeats=3, after_prefill=hook)
    assert t.generated == 6 and t.new_tokens == 6 and t.batch_size == 2 and t.prompt_len == 12
    for m in t.metrics:
        vals = getattr(t, m)
        assert len(vals) == 3 and all(v >= 0 and math.isfinite(v) for v in vals)
    assert all(v > 0 for v in t.prefill_ms + t.decode_ms_per_token)
    s = t.summary()
    assert s["prefill_ms_min"] <= s["prefill_ms"] <= s["prefill_ms_max"] and s["decode_ms_per_token_iqr"] >= 0
    assert s["ms_per_sample"] == pytest.approx(s["total_ms"] / 2)
    assert calls == [llama, "undo"] * 4  # the hook gets the unwrapped model, once per run (warm-up included)
    # 2 layers' worth of K and V over prompt + 5 decoded tokens: the cache after the last step.
    assert t.kv_cache_bytes == 2 * 4 * 2 * (12 + 5) * 2 * 16 * 4
    assert t.peak_bytes is None  # CPU: documented as not measurable


def test_compare_interleaves_round_robin(llama):
    target = causal_lm.CausalLMTarget(llama)
    made = []

    def variant(name, skips):
        def make():
            made.append(name)
            apply_skips(llama, skips)
            return target, None
        return make

    variants = {"base": variant("base", SkipSet()), "eas": variant("eas", SkipSet(mha=(0, 2))),
                "ffn": variant("ffn", SkipSet(ffn=(1,)))}
    df = cost.compare(variants, left_padded(), 4, repeats=2, baseline="base")
    # warm-up round then two repeats, each starting one variant later
    expected = ["base", "eas", "ffn", "eas", "ffn", "base", "ffn", "base", "eas"]
    assert df.attrs["schedule"] == expected == made
    assert list(df.index) == ["base", "eas", "ffn"]
    assert df.loc["base", "speedup"] == pytest.approx(1.0) and (df["speedup"] > 0).all()
    assert df.loc["eas", "kv_cache_ratio"] == pytest.approx(0.5) and df.loc["ffn", "kv_cache_ratio"] == 1.0
    assert (df["repeats"] == 2).all()


# ----------------------------------------------------------------------------- FLOPs

@pytest.mark.parametrize("skips", [SkipSet(), SkipSet(mha=(0, 2)), SkipSet(mha=(0,), ffn=(1, 3)),
                                   SkipSet(layer=(0,), mha=(2,))])
def test_counted_flops_match_analytic(llama, skips):
    apply_skips(llama, skips)
    batch = left_padded()
    counted = cost.counted_flops(causal_lm.CausalLMTarget(llama), batch, 6)
    analytic = cost.analytic_flops(llama.config, skips, prompt_len=12, new_tokens=6, batch=2)
    # Stated tolerance 2%; with SDPA counted on the query heads the two agree exactly on CPU.
    for part in ("prefill", "decode", "total"):
        assert getattr(counted, part) == pytest.approx(getattr(analytic, part), rel=0.02), part
    assert counted.merge == 0


def test_attention_flops_are_counted_on_cpu(llama):
    # Without the custom entry for the CPU flash kernel, attention would count 0: the prefill
    # total would then equal the projections alone.
    apply_skips(llama, SkipSet())
    c = cost.counted_flops(causal_lm.CausalLMTarget(llama), left_padded(), 2)
    attention = 4 * 12 * 12 * 64 * 4 * 2  # 4 T^2 d_attn, 4 layers, batch 2
    projections_only = cost.analytic_flops(llama.config, None, 12, 2, 2).prefill - attention
    assert c.prefill == projections_only + attention


def test_flops_frame_reports_delta(llama):
    base = cost.analytic_flops(llama.config, None, 12, 6)
    eas = cost.analytic_flops(llama.config, SkipSet(mha=(0, 1)), 12, 6)
    df = cost.flops_frame({"base": base, "eas": eas})
    assert df.loc["base", "delta_gflops"] == 0 and df.loc["eas", "delta_gflops"] < 0
    assert df.loc["eas", "label"].endswith("G)") and "(-" in df.loc["eas", "label"]
    assert df.loc["eas", "gmacs_per_sample"] == pytest.approx(df.loc["eas", "gflops_per_sample"] / 2)


def test_counted_flops_on_mini_llava_include_projector(tiny_mini_llava):
    model = tiny_mini_llava
    ids = torch.tensor([[5] * 3 + [model.image_token_id] * 4 + [7] * 5])
    batch = Batch(ids, torch.ones_like(ids), torch.ones_like(ids).bool(), torch.randn(1, 4, model.vision_dim))
    apply_skips(model, SkipSet(mha=(0,)))
    counted = cost.counted_flops(model, batch, 3)
    analytic = cost.analytic_flops(model.config, SkipSet(mha=(0,)), 12, 3, visual_tokens=4,
                                      vision_dim=model.vision_dim)
    assert counted.total == pytest.approx(analytic.total, rel=0.02)


# ----------------------------------------------------------------------------- memory

def test_kv_bytes_scale_with_kept_attentions(llama):
    target = causal_lm.CausalLMTarget(llama)
    batch = left_padded()
    sizes = {}
    for k in (0, 1, 3):
        skips = SkipSet(mha=range(k))
        apply_skips(llama, skips)
        gen = greedy_generate(target, batch, 5, ignore_eos=True)
        sizes[k] = kv_cache_bytes(gen.cache)
        assert sizes[k] == cost.kv_bytes_analytic(llama.config, skips, 12 + 4, batch=2)
    assert sizes[0] * 1 == sizes[3] * 4 and sizes[1] * 4 == sizes[0] * 3


# ----------------------------------------------------------------------------- ideal vs achieved

def test_ideal_speedup_arithmetic():
    assert cost.ideal_speedup(100.0, 25.0) == pytest.approx(4 / 3)
    assert cost.ideal_speedup(100.0, 0.0) == 1.0
    assert cost.achieved_fraction(100.0, 85.0, 25.0) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        cost.ideal_speedup(10.0, 10.0)
    times = cost.ModuleTimes([2.0] * 4, [3.0] * 4, base_decode_ms=40.0, method="test")
    skips = SkipSet(mha=(0, 1), ffn=(3,))
    assert times.removed_ms(skips) == 7.0 and times.ideal_speedup(skips) == pytest.approx(40 / 33)
    assert math.isnan(times.removed_prefill_ms(skips))  # not measured
    timed = cost.ModuleTimes([2.0] * 4, [3.0] * 4, 40.0, "test", mha_prefill_ms=[5.0] * 4,
                                ffn_prefill_ms=[7.0] * 4, base_prefill_ms=100.0)
    assert timed.removed_prefill_ms(skips) == 17.0
    assert cost.sample_ms(100.0, 3.0, 40.0, tokens=11) == 100.0 + 3.0 + 400.0
    rep = cost.speedup_report(times, {"eas": (skips, 36.5)})
    assert rep.loc["eas", "achieved_fraction"] == pytest.approx(0.5)
    assert rep.loc["eas", "achieved_speedup"] == pytest.approx(40 / 36.5)


@pytest.mark.parametrize("method", ["ablation", "hooks"])
def test_module_times_restore_and_shape(llama, method):
    target = causal_lm.CausalLMTarget(llama)
    apply_skips(llama, SkipSet())
    times = cost.module_times(target, left_padded(), 4, method=method, repeats=2)
    assert len(times.mha_ms) == len(times.ffn_ms) == 4 and times.method == method
    assert times.base_decode_ms > 0 and all(math.isfinite(v) for v in times.mha_ms + times.ffn_ms)
    if method == "hooks":
        assert all(v > 0 for v in times.mha_ms + times.ffn_ms)
    else:  # the ablation's prefill clocks give the prefill side of the ideal bound
        assert len(times.mha_prefill_ms) == 4 and times.base_prefill_ms > 0
    from eas.method.skip import current_skips

    assert current_skips(llama).count() == 0
    apply_skips(llama, SkipSet(mha=(1,)))
    with pytest.raises(ValueError, match="base model"):
        cost.module_times(target, left_padded(), 4)


# ----------------------------------------------------------------------------- shapes

def test_named_shapes_have_the_published_sizes():
    assert shapes.param_count(shapes.shape_config("llama-1b")) == 1_100_048_384  # TinyLlama-1.1B
    assert shapes.param_count(shapes.shape_config("llama-3.2-1b")) == 1_235_814_400
    assert round(shapes.param_count(shapes.shape_config("llava-1.5-7b")) / 1e9, 2) == 6.74
    with pytest.raises(KeyError, match="unknown shape"):
        shapes.shape_config("gpt-9")


@pytest.mark.parametrize("shape", ["llava-1.5-7b", "llama-3.2-1b"])
def test_random_llama_builder_scaled_down(shape):
    small = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=344, num_attention_heads=4, vocab_size=1000)
    small["num_key_value_heads"] = 4 if shape == "llava-1.5-7b" else 2
    model = shapes.random_llama(shape, torch.bfloat16, "cpu", **small)
    assert sum(p.numel() for p in model.parameters()) == shapes.param_count(model.config)
    assert model.config.tie_word_embeddings == (shape == "llama-3.2-1b")
    assert model.dtype == torch.bfloat16 and not any(p.requires_grad for p in model.parameters())
    w = model.model.layers[0].mlp.gate_proj.weight.float()
    assert 0.015 < w.std() < 0.025 and torch.all(model.model.norm.weight == 1)
    # builds a prompt of LLaVA-1.5's length and runs it (the rotary buffers were built, not left empty)
    batch = shapes.llava_prompt(1000, batch=1, visual_tokens=24, text_tokens=6)
    assert batch.input_ids.shape == (1, 30) and shapes.llava_prompt(10).input_ids.shape[1] == 636
    gen = greedy_generate(causal_lm.CausalLMTarget(model), batch, 3, ignore_eos=True)
    assert gen.tokens.shape == (1, 3)
    assert torch.isfinite(model.model.rotary_emb.inv_freq).all()


def test_roofline_bounds_from_the_shapes():
    """At batch 1 a 7B LLaMA's attention projections are about a third of its weight bytes, so skipping 12 of
    32 MHAs bounds a memory-bound decode near 1.14x (1.15x with the KV cache of a 636-token prompt)."""
    cfg = shapes.shape_config("llava-1.5-7b")
    weights_only = shapes.decode_bound(cfg, 12, context=0)
    assert weights_only["attn_weight_share"] == pytest.approx(0.325, abs=0.001)
    assert weights_only["bound"] == pytest.approx(1.139, abs=0.001)
    assert weights_only["weight_bytes"] == 2 * (shapes.param_count(cfg) - cfg.vocab_size * cfg.hidden_size
                                                - cfg.num_hidden_layers * 2 * cfg.hidden_size - cfg.hidden_size)
    assert 1.139 < shapes.decode_bound(cfg, 12)["bound"] < 1.15
    assert shapes.decode_bound(cfg, 0)["bound"] == 1.0
    assert 1.14 < shapes.prefill_bound(cfg, 12)["bound"] < 1.16
    claims = shapes.speedups_vs_bound(paper.shapes_speedups())
    assert not claims.fits.any() and (claims.excess > 1.04).all()  # every reported speed-up exceeds the bound
    assert claims.excess.iloc[1] == pytest.approx(2.18 / claims.prefill_bound.iloc[1])
