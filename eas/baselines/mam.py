"""Mix-and-Match (He et al. 2022): learned prefixes on every kept attention + a parallel FFN adapter."""

from __future__ import annotations

import torch
from torch import nn

from eas.baselines.config import BaselineError, MAMConfig
from eas.baselines.layer import Bottleneck, Prefix
from eas.baselines.state import begin, check_config, factory_kwargs, finish
from eas.method.skip import SkipSet, apply_skips, count_tokens, eas_blocks
from eas.models import arch


def attach_mam(model: nn.Module, config: MAMConfig | None = None) -> list[nn.Module]:
    """A scaled parallel adapter beside every MLP and a learned prefix in front of every attention."""
    config = check_config(config, MAMConfig)
    begin(model)
    apply_skips(model, SkipSet())
    d = arch.text_config(model).hidden_size
    kv_heads, head_dim = arch.kv_shape(model)
    kw = factory_kwargs(model)
    modules, handles = [], []
    for blk in eas_blocks(model):
        blk.mam_adapter = Bottleneck(d, config.hidden, scale=config.scale, **kw)
        handles.append(arch.layer_parts(blk).mlp.register_forward_hook(_parallel_hook(blk.mam_adapter)))
        modules.append(blk.mam_adapter)
        if config.prefix_len > 0:
            blk.mam_prefix = Prefix(kv_heads, config.prefix_len, head_dim, **kw)
            modules.append(blk.mam_prefix)
    if config.prefix_len > 0:
        text = arch.text_model(model)
        handles.append(text.register_forward_pre_hook(_prefix_pre_hook(config.prefix_len), with_kwargs=True))

    def undo():
        for h in handles:
            h.remove()
        for blk in eas_blocks(model):
            for name in ("mam_adapter", "mam_prefix"):
                if hasattr(blk, name):
                    delattr(blk, name)

    return finish(model, "mam", config, modules, undo=[undo])


def _parallel_hook(adapter: nn.Module):
    def hook(mlp, args, output):
        return output + adapter(args[0])  # MLP(n) + s * up(relu(down(n))), same input n
    return hook


def _prefix_pre_hook(prefix_len: int):
    """A forward pre-hook on the decoder stack that fills a new cache with the learned prefixes.

    At the first forward of a sequence (no cache, or an empty one; with or without use_cache, so that
    training reaches the prefix parameters through the cache), every kept attention's cache entry
    starts with its prefix, and the attention mask gets `prefix_len` ones on the left. Later forwards
    on that cache (cached decoding) get the same ones. Position ids are the caller's, counted over
    the real tokens only: the prefix has no position."""
    from transformers import DynamicCache

    def hook(text_model, args, kwargs):
        cache = kwargs.get("cache")
        if cache is None or (getattr(cache, "_eas_prefix_len", 0) == 0 and cache.get_seq_length() == 0):
            inputs = kwargs.get("inputs_embeds")
            inputs = inputs if inputs is not None else kwargs.get("input_ids", args[0] if args else None)
            batch = inputs.shape[0]
            cache = cache if cache is not None else DynamicCache(config=text_model.config)
            for i, blk in enumerate(text_model.layers):
                if blk.skip_attn:  # its entry counts the prefix's positions too, holding nothing
                    count_tokens(cache, blk.original_attn_idx, text_model.norm.weight.new_empty(batch, prefix_len))
                    continue
                prefix = getattr(blk, "mam_prefix", None)
                if prefix is None:
                    raise BaselineError(f"layer {i}'s attention is kept but has no MAM prefix (it was skipped "
                                        "when MAM was attached): attach MAM again after changing the skips.")
                dtype = text_model.norm.weight.dtype  # fp32 prefixes beside a 16-bit base join its cache in its dtype
                cache.update(*(t.to(dtype) for t in prefix.expanded(batch)), blk.block.self_attn.layer_idx)
            cache._eas_prefix_len = prefix_len
            kwargs["cache"] = cache
        if getattr(cache, "_eas_prefix_len", 0):
            mask = kwargs.get("attention_mask")
            if mask is not None:
                kwargs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], prefix_len), mask], dim=1)
        return args, kwargs

    return hook
