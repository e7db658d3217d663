"""Re-parameterisation: the merged model computes the unmerged one's function, and leaves no trace."""

from __future__ import annotations

import pytest
import torch

from eas.method import reparam
from eas.method.pia import (
    PIAConfig,
    PIAError,
    SkipPIA,
    adapt_adapters,
    attach_pia,
    prompt_context,
    skip_adapters,
    trainable_parameters,
)
from eas.method.reparam import forced_decode_logits
from eas.method.skip import SkipSet
from eas.models import arch
from eas.models.causal_lm import model_of
from eas.models.generate import greedy_generate, prefill
from eas.models.mini_llava import Batch, MiniLlava, load_tokenizer, tiny_language_model

CFG = PIAConfig(skip_hidden=8, adapt_hidden=4)
SKIPS = SkipSet(mha=(0, 2))  # includes layer 0 (DESIGN.md section 4)
A = 5


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def tiny_llava(tokenizer, config=CFG, skips=SKIPS, seed=1) -> MiniLlava:
    model = MiniLlava(tiny_language_model(seed=0, layers=4, hidden=64), tokenizer).eval()
    attach_pia(model, skips, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-looking adapters: an untrained PIA merges to nothing
        for p in trainable_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def prompt_batch(lens=(5, 9, 7), seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    W = max(lens)
    ids = torch.full((len(lens), W), 2)
    attn = torch.zeros(len(lens), W, dtype=torch.long)
    for b, n in enumerate(lens):
        ids[b, W - n:] = torch.randint(100, 5000, (n,), generator=g)
        attn[b, W - n:] = 1
    return Batch(ids, attn, attn.bool())


def merge_with(strategy):
    return lambda model, batch: reparam.merge_after_prefill(model, batch, strategy=strategy)


STRATEGIES = ["per_example", "two_matrix", "low_rank"]  # exact for any router weights (static_router: below)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("lens", [(5, 9, 7), (6,)], ids=["batch3-leftpad", "batch1"])
def test_merged_equals_unmerged(tokenizer, strategy, lens):
    model = tiny_llava(tokenizer)
    batch = prompt_batch(lens)
    answers = torch.randint(100, 5000, (len(lens), A), generator=torch.Generator().manual_seed(3))
    want = forced_decode_logits(model, batch, answers)
    got = forced_decode_logits(model, batch, answers, after_prefill=merge_with(strategy))
    assert want.abs().max() > 0.1
    assert (want - got).abs().max() <= 1e-4
    # Greedy tokens too, through generate's hook (which unmerges afterwards).
    plain = greedy_generate(model, batch, 8, ignore_eos=True).tokens
    for _ in range(2):  # the second merge reuses the per-example weight buffers
        merged = greedy_generate(model, batch, 8, ignore_eos=True, after_prefill=merge_with(strategy)).tokens
        assert torch.equal(plain, merged) and not reparam.is_merged(model)
    reparam.release_workspace(model)
    assert not reparam.prepare_reparam(model).workspace


def test_bias_uses_the_original_weights(tokenizer):
    """The reference code's bias (bp times the merged gate/up weight) is measurably wrong here."""
    model = tiny_llava(tokenizer)
    batch = prompt_batch()
    with prompt_context(batch.prompt_mask, batch.attention_mask), torch.no_grad():
        model(batch.input_ids, batch.attention_mask)
    pia = arch.decoder_layers(model)[2].ffn_adapter
    mlp = arch.layer_parts(arch.decoder_layers(model)[2]).mlp
    plan = reparam.prepare_reparam(model, strategy="per_example").ffn[2]
    alpha1, bp = pia.linear_form()
    n = torch.randn(3, 4, 64)
    with torch.no_grad():
        want = mlp(n + pia(n))
        merged = reparam.MergedMLP.build(mlp, plan, alpha1, bp, "per_example")
        torch.testing.assert_close(merged(n), want, atol=1e-5, rtol=1e-5)
        w = torch.addcmul(plan.base, alpha1.view(-1, 1, 1), plan.diff)
        buggy = reparam.MergedMLP(mlp, w, torch.einsum("bd,bdf->bf", bp, w))
        assert (buggy(n) - want).abs().max() > 1e-3


def test_decoding_runs_the_plain_skipped_model(tokenizer):
    """While merged, no adapter runs and the blocks hold merged MLPs / q,k,v; unmerge restores all."""
    model = tiny_llava(tokenizer)
    layers = arch.decoder_layers(model)
    originals = {i: (layers[i].block.mlp, layers[i].block.self_attn.q_proj) for i in range(4)}
    base = {k: v.clone() for k, v in model.state_dict().items() if "adapter" not in k}
    calls = []
    for p in [layers[i].ffn_adapter or layers[i].attn_adapter for i in range(4)]:
        p.register_forward_hook(lambda *a: calls.append(1))
    batch = prompt_batch()
    prefill(model, batch)
    n_prefill = len(calls)
    undo = reparam.merge_after_prefill(model, batch)
    assert reparam.is_merged(model)
    assert all(layers[i].ffn_adapter is None and layers[i].attn_adapter is None for i in range(4))
    merged_kinds = (reparam.MergedMLP, reparam.LowRankMLP)  # per the config's merge strategy
    assert isinstance(layers[0].block.mlp, merged_kinds) and isinstance(layers[2].block.mlp, merged_kinds)
    assert layers[1].block.self_attn.q_proj is not originals[1][1]
    with torch.no_grad():
        mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones(3, 1)], 1)
        _, cache = model(batch.input_ids, batch.attention_mask, use_cache=True)  # cache for a decode step
        model(torch.full((3, 1), 50), mask, cache=cache, use_cache=True)
    assert len(calls) == n_prefill
    undo()
    assert all(layers[i].block.mlp is originals[i][0] for i in range(4))
    assert layers[1].block.self_attn.q_proj is originals[1][1]
    assert isinstance(layers[0].ffn_adapter, SkipPIA)
    after = model.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)


def test_prefill_on_a_merged_model_is_refused(tokenizer):
    model = tiny_llava(tokenizer)
    batch = prompt_batch()
    prefill(model, batch)
    reparam.merge_after_prefill(model, batch)
    with pytest.raises(PIAError, match="unmerge"):
        prefill(model, batch)
    reparam.unmerge(model)
    prefill(model, batch)


def test_plan_is_rebuilt_after_training(tokenizer):
    model = tiny_llava(tokenizer)
    batch = prompt_batch()
    answers = torch.randint(100, 5000, (3, A), generator=torch.Generator().manual_seed(4))
    first = reparam.prepare_reparam(model)
    assert reparam.prepare_reparam(model) is first  # cached
    with torch.no_grad():
        for p in trainable_parameters(model):
            p.add_(0.05)  # an optimiser step, in place
    assert reparam.prepare_reparam(model) is not first
    want = forced_decode_logits(model, batch, answers)
    got = forced_decode_logits(model, batch, answers, after_prefill=reparam.merge_after_prefill)
    assert (want - got).abs().max() <= 1e-4


def test_reparam_hook_follows_the_config(tokenizer):
    assert reparam.reparam_hook(tiny_llava(tokenizer)) is reparam.merge_after_prefill
    no_merge = PIAConfig(skip_hidden=8, adapt_hidden=4, reparam=False)
    assert reparam.reparam_hook(tiny_llava(tokenizer, config=no_merge)) is None


def test_running_mean_pia_cannot_merge(tokenizer):
    model = tiny_llava(tokenizer, config=PIAConfig.ablation("info_exchange", skip_hidden=8, adapt_hidden=4))
    prefill(model, prompt_batch())
    with pytest.raises(PIAError, match="frozen bias"):
        reparam.merge_after_prefill(model)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_static_base_pia_merges_too(tokenizer, strategy):
    model = tiny_llava(tokenizer, config=PIAConfig.ablation("base", skip_hidden=8, adapt_hidden=4))
    batch = prompt_batch()
    answers = torch.randint(100, 5000, (3, A), generator=torch.Generator().manual_seed(5))
    want = forced_decode_logits(model, batch, answers)
    got = forced_decode_logits(model, batch, answers, after_prefill=merge_with(strategy))
    assert (want - got).abs().max() <= 1e-4


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_qwen2_qkv_biases_merge_exactly(strategy):
    """Qwen2 has q/k/v biases: the adaptation merge must add to them, not replace them."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    attach_pia(model, SkipSet(mha=(0,)), CFG)
    with torch.no_grad():
        for p in trainable_parameters(model):
            p.normal_(0, 0.3)
        ids = torch.randint(0, 300, (2, 6))
        nxt = torch.randint(0, 300, (2, 1))

        def run(merge: bool):
            with prompt_context(torch.ones(2, 6, dtype=torch.bool)):
                out = model(ids, use_cache=True)
            undo = reparam.merge_after_prefill(model, strategy=strategy) if merge else None
            logits = model(nxt, cache=out.cache, use_cache=True).logits
            if undo:
                undo()
            return logits

        assert (run(False) - run(True)).abs().max() <= 1e-4


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tiny_llava_for_conditional_generation_merges_exactly(strategy):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=16, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2),
        image_token_index=299, vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(cfg).eval()
    ids = torch.randint(0, 290, (2, 10), generator=torch.Generator().manual_seed(0))
    ids[:, 1:5] = 299  # 4 image patches
    pixels = torch.randn(2, 3, 16, 16)
    attach_pia(model, SkipSet(mha=(0,)), PIAConfig(skip_hidden=4, adapt_hidden=4))
    with torch.no_grad():
        for p in trainable_parameters(model):
            p.normal_(0, 0.3)

        def run(merge: bool):
            with prompt_context(torch.ones(2, 10, dtype=torch.bool)):
                out = model(input_ids=ids, pixel_values=pixels, use_cache=True)
            undo = reparam.merge_after_prefill(model, strategy=strategy) if merge else None
            logits = model(input_ids=ids[:, :1], cache=out.cache, use_cache=True).logits
            if undo:
                undo()
            return logits

        want = run(False)
        assert want.abs().max() > 0.05
        assert (want - run(True)).abs().max() <= 1e-4


def test_time_merge_reports_both_times(tokenizer):
    model = tiny_llava(tokenizer)
    t = reparam.time_merge(model, prompt_batch(), repeats=1)
    assert t["prefill_ms"] > 0 and t["merge_ms"] > 0 and t["prepare_ms"] > 0
    assert t["ratio"] == pytest.approx(t["merge_ms"] / t["prefill_ms"])
    assert not reparam.is_merged(model)


def test_static_router_merges_exactly_with_one_shared_weight(tokenizer, tmp_path):
    from eas.method.pia import PIAConfig as Cfg
    from eas.method.pia import load_adapters, save_adapters

    model = tiny_llava(tokenizer, config=Cfg(skip_hidden=8, adapt_hidden=4, merge_strategy="static_router"))
    batch = prompt_batch()
    with pytest.raises(PIAError, match="calibrate"):
        reparam.merge_after_prefill(model, (prefill(model, batch), batch)[1])
    alphas = reparam.calibrate_static_router(model, [batch, prompt_batch((4, 6), seed=1)])
    assert all(a.shape == (2,) and abs(a.sum().item() - 1) < 1e-6 for a in alphas.values())
    answers = torch.randint(100, 5000, (3, A), generator=torch.Generator().manual_seed(3))
    want = forced_decode_logits(model, batch, answers)
    seen = []

    def merge(m, b):
        undo = reparam.merge_after_prefill(m, b)
        seen.extend(layer.block.mlp.weight.dim() for layer in arch.decoder_layers(m)
                    if isinstance(layer.block.mlp, reparam.MergedMLP))
        return undo

    got = forced_decode_logits(model, batch, answers, after_prefill=merge)
    assert seen and set(seen) == {2}  # one (d, 2 d_ff) weight shared by the batch
    assert (want - got).abs().max() <= 1e-4 and want.abs().max() > 0.1
    # the calibrated router travels with the adapters
    save_adapters(model, tmp_path / "static")
    fresh = tiny_llava(tokenizer, config=Cfg(skip_hidden=8, adapt_hidden=4, merge_strategy="static_router"), seed=7)
    load_adapters(fresh, tmp_path / "static")
    assert torch.equal(forced_decode_logits(fresh, batch, answers), want)


# ----------------------------------------------------------------------------- every family, fp64 and fp32

def tiny_causal_lm(family: str):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    kw = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                             "mistral": (MistralConfig, MistralForCausalLM)}[family]
    torch.manual_seed(0)
    return model_cls(config_cls(**kw)).eval()


def family_target(family: str, dtype, tokenizer=None):
    """(generation target, left-padded batch of 3) with skip PIAs on layers 0 and 2, randomised adapters."""
    from eas.method.pia import randomise_adapters
    from eas.models.causal_lm import CausalLMTarget

    if family == "mini-llava":
        target = tiny_llava(tokenizer).to(dtype)
        return target, prompt_batch()
    model = tiny_causal_lm(family)
    attach_pia(model, SKIPS, CFG)
    randomise_adapters(model, scale=0.3, seed=1)
    batch = prompt_batch()
    ids = batch.input_ids % 300
    return CausalLMTarget(model.to(dtype)), Batch(ids, batch.attention_mask, batch.prompt_mask)


FAMILIES = ["llama", "qwen2", "mistral", "mini-llava"]  # LLaVA: test_tiny_llava_for_conditional_generation_...


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_strategy_is_exact_in_fp64_and_within_the_bound_in_fp32(tokenizer, family, strategy):
    for dtype, bound in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        target, batch = family_target(family, dtype, tokenizer)
        answers = torch.randint(100, 300, (3, A), generator=torch.Generator().manual_seed(3))
        want = forced_decode_logits(target, batch, answers)
        got = forced_decode_logits(target, batch, answers, after_prefill=merge_with(strategy))
        scale = float(want.abs().max())
        assert scale > 0.05, family
        assert float((want - got).abs().max()) <= bound * max(scale, 1.0), (family, dtype)


def test_low_rank_keeps_the_original_weights_and_no_copies(tokenizer):
    """low_rank decodes with the MLP's own gate/up weights at every batch size; per prompt it builds only
    (r, 2 d_ff) maps and biases, where per_example builds one (d, 2 d_ff) weight per example."""
    model = tiny_llava(tokenizer)
    batch = prompt_batch()
    layers = arch.decoder_layers(model)
    gate = {i: layers[i].block.mlp.gate_proj.weight for i in (0, 2)}
    sizes = {}
    for strategy in ("per_example", "low_rank"):
        prefill(model, batch)
        undo = reparam.merge_after_prefill(model, batch, strategy=strategy)
        sizes[strategy] = reparam.merge_bytes(model)
        if strategy == "low_rank":
            for i in (0, 2):
                mlp = layers[i].block.mlp
                assert isinstance(mlp, reparam.LowRankMLP) and mlp.gate_proj.weight is gate[i]
                # batch 3: the plan's shared (2r, 2 d_ff) maps, no per-example copy; a bias per example
                assert mlp.maps.shape == (2 * 8, 2 * 128) and mlp.bias.shape == (3, 2 * 128)
                assert mlp.maps is model._eas_reparam_plan.low_rank[i].stacked
        undo()
    d, f, r = 64, 128, 8
    attn = sum(  # the merged q/k/v copies: the same for every strategy
        t.numel() * t.element_size() for lins in reparam.prepare_reparam(model).attn.values()
        for lin in lins for t in (lin.weight, lin.bias))
    # per_example: per layer the plan's base and diff and a (3, d, 2f) buffer
    assert sizes["per_example"] - attn >= 2 * (2 + 3) * d * 2 * f * 4
    # low_rank: per layer [B2; B1 - B2] and two constants; per example only the bias and alpha1
    assert sizes["low_rank"] - attn == 2 * 4 * (2 * r * 2 * f + 2 * 2 * f + 3 * 2 * f + 3)
    assert reparam.merge_bytes(model) == 0  # unmerged


def test_low_rank_merge_and_decoding_are_cheap_in_flops(tokenizer):
    """Counted, not timed: the per-prompt merge is O(B r d_ff) per layer, never O(d d_ff)."""
    from eas.measure.cost import counted_flops

    model = tiny_llava(tokenizer)
    batch = prompt_batch()
    reparam.prepare_reparam(model, strategy="low_rank")  # per task: B_k = Wu_k @ G, outside the count
    merge = counted_flops(model, batch, 3, merge_with("low_rank")).merge
    d, f, r, B = 64, 128, 8, 3
    # per skipped layer and example: the bias [h0, alpha1 h0] @ [B2; B1 - B2] (2r x 2f), down2 on the prompt
    # mean (r d) and the router (2 d) -- far below one (d, 2f) weight per example
    per_layer = 2 * B * (2 * r * 2 * f + r * d + 2 * d)
    assert merge == 2 * per_layer < 2 * B * d * 2 * f


def test_bad_strategies_are_refused_with_low_rank_as_the_config(tokenizer):
    from eas.method.pia import PIAConfigError

    model = tiny_llava(tokenizer, config=PIAConfig(skip_hidden=8, adapt_hidden=4, merge_strategy="low_rank"))
    batch = prompt_batch()
    prefill(model, batch)
    with pytest.raises(PIAError, match="unknown merge strategy 'dense'"):
        reparam.merge_after_prefill(model, batch, strategy="dense")
    with pytest.raises(PIAError, match="calibrate"):
        reparam.merge_after_prefill(model, batch, strategy="static_router")
    with pytest.raises(PIAConfigError, match="merge_strategy"):
        PIAConfig(merge_strategy="lowrank")
    no_router = tiny_llava(tokenizer, config=PIAConfig.ablation("base", skip_hidden=8, adapt_hidden=4,
                                                                 merge_strategy="low_rank"))
    with pytest.raises(PIAError, match="router"):
        reparam.calibrate_static_router(no_router, [batch])


def test_low_rank_on_a_calibrated_static_router_is_exact(tokenizer):
    model = tiny_llava(tokenizer, config=PIAConfig(skip_hidden=8, adapt_hidden=4, merge_strategy="low_rank"))
    batch = prompt_batch()
    reparam.calibrate_static_router(model, [batch])
    answers = torch.randint(100, 5000, (3, A), generator=torch.Generator().manual_seed(3))
    want = forced_decode_logits(model, batch, answers)
    for strategy in ("low_rank", "static_router"):
        got = forced_decode_logits(model, batch, answers, after_prefill=merge_with(strategy))
        assert (want - got).abs().max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_folded_adaptation_is_exact_and_leaves_no_qkv_copies(tokenizer, family):
    """fold_adaptation (what deployment and every timed merged row do): the adaptation PIAs become q/k/v
    weights and biases once per task, the model's function is unchanged unmerged and merged, and the
    merge then holds no merged q/k/v copy beside the originals."""
    for dtype, bound in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        target, batch = family_target(family, dtype, tokenizer)
        model = model_of(target)
        answers = torch.randint(100, 300, (3, A), generator=torch.Generator().manual_seed(3))
        want = forced_decode_logits(target, batch, answers)
        prefill(target, batch)
        with reparam.merged(model, batch, "low_rank"):
            unfolded_bytes = reparam.merge_bytes(model)
        adapted = adapt_adapters(model)
        assert adapted
        layers = arch.decoder_layers(model)
        q_before = {i: layers[i].block.self_attn.q_proj for i in adapted}
        assert reparam.fold_adaptation(model, keep_originals=True) == len(adapted)
        assert not adapt_adapters(model) and skip_adapters(model)
        assert all(layers[i].block.self_attn.q_proj.bias is not None for i in adapted)
        scale = max(float(want.abs().max()), 1.0)
        unmerged = forced_decode_logits(target, batch, answers)
        merged = forced_decode_logits(target, batch, answers, after_prefill=merge_with("low_rank"))
        assert float((want - unmerged).abs().max()) <= bound * scale, (family, dtype)
        assert float((want - merged).abs().max()) <= bound * scale, (family, dtype)
        prefill(target, batch)
        with reparam.merged(model, batch, "low_rank"):
            folded_bytes = reparam.merge_bytes(model)
        copies = sum(lin.weight.numel() + lin.bias.numel() for i in adapted
                     for lin in (layers[i].block.self_attn.q_proj, layers[i].block.self_attn.k_proj,
                                 layers[i].block.self_attn.v_proj)) * want.new_empty(0, dtype=dtype).element_size()
        assert unfolded_bytes - folded_bytes == copies
        reparam.unfold_adaptation(model)  # the benchmark's way back to the unfolded model
        assert adapt_adapters(model).keys() == adapted.keys()
        assert all(layers[i].block.self_attn.q_proj is q_before[i] for i in adapted)
        assert float((want - forced_decode_logits(target, batch, answers)).abs().max()) == 0.0


def test_prepare_deployment_folds_then_plans(tokenizer):
    model = tiny_llava(tokenizer)
    batch = prompt_batch()
    answers = torch.randint(100, 5000, (3, A), generator=torch.Generator().manual_seed(3))
    want = forced_decode_logits(model, batch, answers)
    plan = reparam.prepare_deployment(model, strategy="low_rank")
    assert not plan.attn and set(plan.low_rank) == set(SKIPS.mha)  # nothing left to swap per prompt
    assert not adapt_adapters(model) and not getattr(model, "_eas_folded_adaptation")
    got = forced_decode_logits(model, batch, answers, after_prefill=merge_with("low_rank"))
    assert (want - got).abs().max() <= 1e-4
