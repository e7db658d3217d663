"""Decode-step costs from shapes (bytes, FLOPs, ceilings, sequences per budget) and the long-context cache."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from eas.measure import serving
from eas.measure.shapes import shape_config
from eas.method.skip import SkipSet, apply_skips, kv_cache_bytes


def test_the_ceiling_rises_with_batch_and_context_as_kv_dominates():
    """The numbers of LLaMA-7B's shape (fp16, 16 KiB of KV per token per layer): skipping 12 of 32 MHAs is bounded
    near 1.14x at batch 1 and rises toward 32/20 = 1.6x as the KV cache dominates the bytes."""
    cfg = shape_config("llava-1.5-7b")
    assert serving.kv_bytes_per_token(cfg) == 16 * 1024
    small = serving.ceiling(cfg, "eas", 12, batch=1, context=636)
    assert 1.10 < small["bytes_bound"] < 1.16
    mid = serving.ceiling(cfg, "eas", 12, batch=32, context=1024)
    big = serving.ceiling(cfg, "eas", 12, batch=128, context=2048)
    assert small["bytes_bound"] < mid["bytes_bound"] < big["bytes_bound"] < 32 / 20
    assert 1.3 < mid["bytes_bound"] < 1.45 and big["bytes_bound"] > 1.5
    assert mid["ceiling"] == max(mid["bytes_bound"], mid["flops_bound"])
    # DAS removes whole blocks: more bytes per skipped layer than EAS at the same k
    assert serving.ceiling(cfg, "das", 4, batch=1, context=636)["bytes_bound"] > \
        serving.ceiling(cfg, "eas", 4, batch=1, context=636)["bytes_bound"]


def test_sequences_per_budget_follow_the_kept_attentions():
    cfg = shape_config("llava-1.5-7b")
    base = serving.sequences_per_budget(cfg, "base", 0, context=1024, budget_gb=16)
    eas = serving.sequences_per_budget(cfg, "eas", 12, context=1024, budget_gb=16)
    assert base == 16 * 2**30 // (32 * 1024 * 16 * 1024) == 32
    assert eas == 16 * 2**30 // (20 * 1024 * 16 * 1024) == 51
    with pytest.raises(ValueError, match="unknown variant kind"):
        serving.step_cost(cfg, "lora")
    with pytest.raises(ValueError, match="k=40"):
        serving.step_cost(cfg, "eas", 40)


def _tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def test_an_extended_cache_decodes_like_a_cache_that_long_and_holds_the_kept_layers_bytes():
    model = _tiny()
    apply_skips(model, SkipSet(mha=(0, 2)))
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        out = model(ids, use_cache=True, cache=DynamicCache(config=model.config))
    cache = out.cache
    serving.extend_cache(cache, 40, torch.Generator().manual_seed(1))
    assert [cache.get_seq_length(i) for i in range(4)] == [40] * 4
    # only the two kept attentions hold keys and values: 2 layers x 2 (k, v) x batch 2 x 2 heads x 40 x 8 x 4 B
    assert kv_cache_bytes(cache) == 2 * 2 * 2 * 2 * 40 * 8 * 4
    mask = torch.ones(2, 41, dtype=torch.long)
    with torch.no_grad():
        step = model(ids[:, -1:], attention_mask=mask, cache=cache, use_cache=True).logits
    assert step.shape == (2, 1, 64) and torch.isfinite(step).all()
    with pytest.raises(ValueError, match="cannot extend"):
        serving.extend_cache(cache, 10)
