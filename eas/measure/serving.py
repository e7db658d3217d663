"""What a decode step costs where models are served: many sequences, long prompts.

Per decode step a LLaMA-style model reads every kept weight once and the KV cache of every kept attention,
and does about two FLOPs per weight per sequence plus the attention over the context. At batch 1 the
weights dominate the bytes; at batch B with context L the KV cache grows as B x L while the weights do
not, so the attention layers' share of the bytes (and the ceiling on what skipping them can give) rises.
This module computes both costs from a config's shapes, the speed-up ceiling each implies, how many
sequences fit a memory budget, and extends a real cache to a long context without running the prefill
(decode time depends on the cache's length, not on what is in it).

    step_cost(config, "eas", k=12, batch=32, context=1024)   # bytes and FLOPs of one decode step
    ceiling(config, "eas", 12, batch=32, context=1024)       # max(bytes ratio, FLOPs ratio) against the base
    sequences_per_budget(config, "eas", 12, context=1024, budget_gb=16)
    extend_cache(cache, 1024)                                # a prefilled cache made `1024` positions long
"""

from __future__ import annotations

import torch

from eas.measure.shapes import module_params
from eas.method.skip import CountingLayer

KINDS = ("base", "eas", "das")  # what a variant removes: nothing, k MHAs (+ KV), k whole blocks (+ KV)


def _check(kind: str, k: int, config) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown variant kind {kind!r}; expected one of {', '.join(KINDS)}.")
    n = config.num_hidden_layers
    if not 0 <= k < n or (kind == "base" and k):
        raise ValueError(f"k={k} for {kind!r}: expected 0 <= k < {n} layers (and k=0 for base).")


def kv_bytes_per_token(config, bytes_per: int = 2) -> int:
    """Keys and values of one token in one attention layer."""
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_key_value_heads * hd * bytes_per


def step_cost(config, kind: str = "base", k: int = 0, *, batch: int = 1, context: int = 1024,
              bytes_per: int = 2) -> dict:
    """Bytes read and FLOPs of one decode step of `batch` sequences at `context` cached tokens: weights (the
    embedding table excluded: one row per token), KV cache of the kept attentions, matmul FLOPs (2 per weight
    per sequence) and attention FLOPs (scores and weighted sum: 4 x context x query width per kept layer)."""
    _check(kind, k, config)
    m, n = module_params(config), config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kept_attn = n - k if kind in ("eas", "das") else n
    kept_mlp = n - k if kind == "das" else n
    weights = kept_attn * m["attn"] + kept_mlp * m["mlp"] + m["head"]
    kv = kept_attn * batch * context * kv_bytes_per_token(config, bytes_per)
    attn_flops = kept_attn * batch * 4 * context * config.num_attention_heads * hd
    return {"weight_bytes": weights * bytes_per, "kv_bytes": kv, "bytes": weights * bytes_per + kv,
            "flops": 2 * weights * batch + attn_flops, "kv_share": kv / (weights * bytes_per + kv)}


def ceiling(config, kind: str, k: int, *, batch: int, context: int, bytes_per: int = 2) -> dict:
    """The speed-up bound of a variant over the base: bytes ratio (memory-bound step), FLOPs ratio
    (compute-bound step) and the ceiling, the larger of the two (which one binds depends on the machine)."""
    base = step_cost(config, "base", 0, batch=batch, context=context, bytes_per=bytes_per)
    ours = step_cost(config, kind, k, batch=batch, context=context, bytes_per=bytes_per)
    by_bytes, by_flops = base["bytes"] / ours["bytes"], base["flops"] / ours["flops"]
    return {"bytes_bound": by_bytes, "flops_bound": by_flops, "ceiling": max(by_bytes, by_flops),
            "kv_share_base": base["kv_share"]}


def sequences_per_budget(config, kind: str, k: int, *, context: int, budget_gb: float, bytes_per: int = 2) -> int:
    """How many sequences of `context` tokens fit `budget_gb` GiB of KV cache (weights not counted)."""
    _check(kind, k, config)
    kept = config.num_hidden_layers - (k if kind in ("eas", "das") else 0)
    per_sequence = kept * context * kv_bytes_per_token(config, bytes_per)
    return int(budget_gb * 2**30 // per_sequence)


@torch.no_grad()
def extend_cache(cache, length: int, generator: torch.Generator | None = None) -> None:
    """Make a prefilled transformers DynamicCache `length` positions long by putting random keys and values in
    front of what it holds (in place). Every entry grows, kept and skipped alike (a skipped layer's counting
    entry only counts), so the next decode step attends over `length` positions: what its time depends on.
    Extend the attention mask to match (ones in front)."""
    for layer in cache.layers:
        have = layer.get_seq_length()
        if length < have:
            raise ValueError(f"cannot extend a cache of {have} positions to {length}.")
        extra = length - have
        if isinstance(layer, CountingLayer):
            layer.cumulative_length += extra
            continue
        if getattr(layer, "is_sliding", False):
            raise ValueError("extend_cache supports full-attention layers only (a sliding window caps the context).")
        keys, values = layer.keys, layer.values
        shape = (keys.shape[0], keys.shape[1], extra, keys.shape[3])
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(keys.device, keys.dtype)
        layer.keys = torch.cat([noise, keys], dim=-2)
        layer.values = torch.cat([noise.clone(), values], dim=-2)
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length += extra
