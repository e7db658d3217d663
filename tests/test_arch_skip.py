"""The architecture layer and skipping, on tiny random models of every supported family."""

import pytest
import torch
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from eas.method import skip
from eas.method.skip import SkipError, SkipSet
from eas.models import arch

SMALL = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=1)


def tiny(family: str):
    torch.manual_seed(0)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**SMALL, sliding_window=None)).eval()
    if family == "llava":
        cfg = LlavaConfig(
            text_config=LlamaConfig(**SMALL).to_dict(),
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
                               projection_dim=32),
            image_token_index=127,
        )
        return LlavaForConditionalGeneration(cfg).eval()
    raise ValueError(family)


FAMILIES = ["llama", "qwen2", "mistral", "llava"]


@pytest.mark.parametrize("family", FAMILIES)
def test_architecture_layer_finds_parts(family):
    model = tiny(family)
    layers = arch.decoder_layers(model)
    assert len(layers) == arch.num_layers(model) == 4
    parts = arch.layer_parts(layers[2])
    assert parts.attn is layers[2].self_attn and parts.mlp is layers[2].mlp
    assert parts.gate.weight.shape == (64, 32) and parts.down.weight.shape == (32, 64)
    assert arch.lm_head(model).weight.shape[0] == 128


def test_unsupported_family_is_named():
    with pytest.raises(arch.UnsupportedModelError, match="LlamaForCausalLM.*Qwen2ForCausalLM"):
        arch.decoder_layers(nn.Linear(2, 2))


def test_layer_index_checked():
    model = tiny("llama")
    with pytest.raises(IndexError, match="out of range.*4 decoder layers"):
        arch.check_layer_index(model, 4)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("skips", [SkipSet(mha=(0,)), SkipSet(mha=(0, 2), ffn=(1,)), SkipSet(layer=(0, 3))])
def test_cached_equals_uncached_with_skips(family, skips):
    """HF's own generate: the cache layout must stay right when layer 0's attention is gone."""
    model = tiny(family)
    skip.apply_skips(model, skips)
    ids = torch.randint(2, 128, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(ids, use_cache=True, **kw)
    uncached = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(cached, uncached)


def test_skip_changes_output_and_remove_restores():
    model = tiny("llama")
    ids = torch.randint(2, 128, (1, 9))
    with torch.no_grad():
        ref = model(ids).logits
        skip.apply_skips(model, SkipSet(mha=(1,)))
        skipped = model(ids).logits
        skip.apply_skips(model, SkipSet())
        unskipped = model(ids).logits
        skip.remove_eas(model)
        removed = model(ids).logits
    assert not torch.allclose(ref, skipped)
    assert torch.allclose(ref, unskipped, atol=1e-6) and torch.equal(ref, removed)
    assert all(type(layer).__name__ == "LlamaDecoderLayer" for layer in arch.decoder_layers(model))
    assert [layer.self_attn.layer_idx for layer in arch.decoder_layers(model)] == [0, 1, 2, 3]


def test_skipped_attention_is_never_called_and_holds_no_cache():
    model = tiny("llama")
    skip.apply_skips(model, SkipSet(mha=(0, 2)))
    called = []
    for i, layer in enumerate(arch.decoder_layers(model)):
        layer.block.self_attn.register_forward_hook(lambda m, a, k, o, i=i: called.append(i), with_kwargs=True)
        layer.block.input_layernorm.register_forward_hook(lambda m, a, o, i=i: called.append(f"norm{i}"))
    out = model(torch.randint(2, 128, (1, 5)), use_cache=True)
    assert sorted(map(str, called)) == ["1", "3", "norm1", "norm3"]
    full = tiny("llama")(torch.randint(2, 128, (1, 5)), use_cache=True)
    assert skip.kv_cache_bytes(out.cache) * 2 == skip.kv_cache_bytes(full.cache)


@pytest.mark.parametrize("bad, message", [
    (dict(mha=[4]), "out of range"),
    (dict(mha=[-1]), "out of range"),
    (dict(ffn=[1, 1]), "duplicate"),
    (dict(mha=[0, 1, 2, 3]), "at least one MHA"),
    (dict(attention=[1]), "unknown module kind"),
    (dict(mha=[1.5]), "not an integer"),
])
def test_bad_skip_sets(bad, message):
    with pytest.raises(SkipError, match=message):
        skip.make_skip_set(tiny("llama"), **bad)


def test_llava_text_layers_are_skipped():
    model = tiny("llava")
    skip.apply_skips(model, SkipSet(mha=(0, 3)))
    layers = arch.decoder_layers(model)
    assert isinstance(layers[0], skip.EASBlock) and layers[0].skip_attn and not layers[1].skip_attn
    ids = torch.randint(2, 120, (1, 6))
    with torch.no_grad():
        model(input_ids=ids)


# Families whose layers differ in attention type: the cache must follow each kept layer's own type.
MIXED = {
    "qwen2-max-window": lambda window: Qwen2ForCausalLM(Qwen2Config(
        **SMALL, use_sliding_window=True, sliding_window=window, max_window_layers=2)),
    "qwen2-alternating": lambda window: Qwen2ForCausalLM(Qwen2Config(
        **SMALL, use_sliding_window=True, sliding_window=window,
        layer_types=["sliding_attention", "full_attention"] * 2)),
    "mistral-window": lambda window: MistralForCausalLM(MistralConfig(**SMALL, sliding_window=window)),
}


def _mixed(name: str, window: int):
    torch.manual_seed(0)
    return MIXED[name](window).eval()


@pytest.mark.parametrize("name", list(MIXED))
@pytest.mark.parametrize("window", [4, 64])
@pytest.mark.parametrize("mha", [(0,), (1,), (0, 2), (1, 3), (0, 1, 2)])
def test_mixed_layer_types_cached_equals_uncached(name, window, mha):
    """Sliding-window and full-attention layers side by side: greedy decoding with and without the cache
    agree after skipping any MHAs, and the logits of every step agree too."""
    model = _mixed(name, window)
    skip.apply_skips(model, SkipSet(mha=mha))
    ids = torch.randint(2, 128, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    kw = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None,
              output_logits=True, return_dict_in_generate=True)
    cached = model.generate(ids, use_cache=True, **kw)
    uncached = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(torch.stack(cached.logits), torch.stack(uncached.logits), atol=1e-4)


@pytest.mark.parametrize("name", list(MIXED))
def test_mixed_layer_types_cache_layout_follows_the_layers(name):
    """Each cache entry has its own layer's type; a skipped layer's entry holds no bytes but still counts
    the tokens seen, so the cache's length and mask sizes never come from an empty entry."""
    from transformers import DynamicCache

    model = _mixed(name, 4)
    skip.apply_skips(model, SkipSet(mha=(0, 2)))
    with torch.no_grad():
        out = model(torch.randint(2, 128, (1, 6)), use_cache=True, cache=DynamicCache(config=model.config))
    cache = out.cache
    types = getattr(model.config, "layer_types", None) or ["sliding_attention"] * 4  # Mistral: every layer
    assert cache.is_sliding == [t == "sliding_attention" for t in types]
    assert [cache.get_seq_length(i) for i in range(4)] == [6] * 4
    held = [layer.keys.numel() > 0 for layer in cache.layers]
    assert held == [False, True, False, True]


def test_cache_from_a_bare_dynamic_cache_with_layer_zero_skipped():
    """A DynamicCache built without the config (layers appended on first update) also stays right."""
    from transformers import DynamicCache

    model = tiny("llama")
    skip.apply_skips(model, SkipSet(mha=(0, 1)))
    ids = torch.randint(2, 128, (1, 7))
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        cache = DynamicCache()
        model(ids[:, :-1], cache=cache, use_cache=True)
        step = model(ids[:, -1:], cache=cache, use_cache=True).logits[:, -1]
    assert torch.allclose(full, step, atol=1e-5)


def test_skip_set_rejects_non_integer_indices():
    """SkipSet itself (not only make_skip_set) refuses 1.5, True and '1'; apply_skips never rounds."""
    for bad in (1.5, True, "1"):
        with pytest.raises(SkipError, match="not an integer"):
            SkipSet(mha=(bad,))
    with pytest.raises(SkipError, match="not an integer"):
        skip.apply_skips(tiny("llama"), SkipSet(mha=(1.5,)))
    assert SkipSet(mha=(torch.tensor(2), 1)).mha == (1, 2)
