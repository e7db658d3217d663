"""Skipping multi-head attentions (MHAs), FFNs or whole decoder layers.

`apply_skips(model, SkipSet(mha=[...]))` swaps each decoder layer for an `EASBlock` that runs
the original block's own modules, leaving out what is skipped. A skipped MHA costs nothing:
no norm, no q/k/v/o, no attention, and no KV-cache bytes.

The cache keeps one entry per decoder layer, at the layer's own index, so that each entry has the
type of its own layer (full or sliding-window attention: transformers builds a cache's layers from
`config.layer_types`, and Qwen2 / Mistral mix both kinds). A skipped layer's entry becomes a counting
entry of the same type: it stores nothing (zero bytes) but counts the tokens seen, so the cache's
sequence length (read from layer 0) and the mask sizes (read from the first full / first sliding
entry) are right whichever attentions are skipped, layer 0's included.
Of the N entries, only the K kept ones hold keys and values.

Adapters plug into three slots of an `EASBlock` (filled by `eas.method.pia` and the baselines):
    attn_adapter   on norm_a(x) in front of a kept attention   (adaptation PIA, sequential adapter)
    ffn_adapter    on norm_f(x) in front of the MLP             (the skip-replacing PIA, Eq. 7)
    layer_adapter  in place of a whole skipped block           (DAS)
Each adapter maps its input `n` to a delta added to it: n + adapter(n).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from eas.models import arch
from eas.models.prompt import current_context, restored_context

KINDS = ("mha", "ffn", "layer")


class SkipError(ValueError):
    pass


@dataclass(frozen=True)
class SkipSet:
    """Which modules are skipped, by decoder-layer index."""

    mha: tuple[int, ...] = ()
    ffn: tuple[int, ...] = ()
    layer: tuple[int, ...] = ()

    def __post_init__(self):
        for kind in KINDS:
            object.__setattr__(self, kind, tuple(sorted(_index(kind, i) for i in getattr(self, kind))))

    @classmethod
    def of(cls, kind: str, indices) -> "SkipSet":
        check_kind(kind)
        return cls(**{kind: tuple(indices)})

    def attn_skipped(self, i: int) -> bool:
        return i in self.mha or i in self.layer

    def ffn_skipped(self, i: int) -> bool:
        return i in self.ffn or i in self.layer

    def count(self) -> int:
        return len(self.mha) + len(self.ffn) + len(self.layer)

    def to_dict(self) -> dict:
        return {kind: list(getattr(self, kind)) for kind in KINDS}

    def apply(self, model: nn.Module) -> "SkipSet":
        """apply_skips(model, self): what a training loop calls per step without importing this module."""
        return apply_skips(model, self)


def _index(kind: str, i) -> int:
    """A layer index as an int; 1.5, True or "1" are errors, never rounded or parsed."""
    if isinstance(i, bool) or not hasattr(i, "__index__"):
        raise SkipError(f"{kind} index {i!r} is not an integer.")
    return int(i.__index__())


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise SkipError(f"unknown module kind {kind!r}; expected one of {', '.join(KINDS)}.")
    return kind


def validate(model: nn.Module, skips: SkipSet, raw: dict | None = None) -> SkipSet:
    """Check indices are in range and distinct, and that at least one attention is kept."""
    n = arch.num_layers(model)
    raw = raw or {}
    for kind in KINDS:
        given = list(raw.get(kind, getattr(skips, kind)))
        for i in given:
            i = _index(kind, i)
            if not 0 <= i < n:
                raise SkipError(f"{kind} index {i} is out of range: the model has {n} layers (0..{n - 1}).")
        if len(set(int(i) for i in given)) != len(given):
            dup = sorted({int(i) for i in given if [int(j) for j in given].count(int(i)) > 1})
            raise SkipError(f"duplicate {kind} indices {dup}: each module can be skipped once.")
    both = set(skips.layer) & (set(skips.mha) | set(skips.ffn))
    if both:
        raise SkipError(f"layers {sorted(both)} are skipped whole and also listed as mha/ffn skips.")
    if all(skips.attn_skipped(i) for i in range(n)):
        raise SkipError("every attention would be skipped; at least one MHA must be kept.")
    return skips


def make_skip_set(model: nn.Module, **indices) -> SkipSet:
    """Build and validate a SkipSet from keyword lists, e.g. make_skip_set(model, mha=[0, 3])."""
    for kind in indices:
        check_kind(kind)
    return validate(model, SkipSet(**{k: tuple(v) for k, v in indices.items()}), raw=indices)


def adapter_delta(adapter: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """adapter(x) in the adapter's own dtype, returned in x's: fp32 adapters beside a bf16 base (eas.models.arch.
    adapter_factory_kwargs) see fp32 inputs; same-dtype adapters run unchanged."""
    weight = next(adapter.parameters(), None)
    if weight is None or weight.dtype == x.dtype:
        return adapter(x)
    return adapter(x.to(weight.dtype)).to(x.dtype)


class EASBlock(nn.Module):
    """A decoder layer with optional skips and adapter slots. Holds the original block unchanged."""

    def __init__(self, block: nn.Module, layer_idx: int):
        super().__init__()
        self.block = block
        self.layer_idx = layer_idx
        self.original_attn_idx = getattr(block.self_attn, "layer_idx", layer_idx)
        self.skip_attn = False
        self.skip_ffn = False
        self.attn_adapter: nn.Module | None = None
        self.ffn_adapter: nn.Module | None = None
        self.layer_adapter: nn.Module | None = None
        # Recompute this block's activations in the backward pass instead of keeping them (set_checkpointing).
        # The block calls the decoder layer's parts itself, so the layer's own (transformers) checkpointing
        # never runs inside it: this is the one that does.
        self.checkpointing = False

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None,
                cache=None, use_cache=False, position_embeddings=None, **kwargs) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled() and cache is None:
            ctx = current_context()  # the recomputation runs in backward, outside the forward's prompt context
            return checkpoint(self._forward, hidden_states, attention_mask, position_ids, None, False,
                              position_embeddings, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), restored_context(ctx)), **kwargs)
        return self._forward(hidden_states, attention_mask, position_ids, cache, use_cache, position_embeddings,
                             **kwargs)

    def _forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None,
                 cache=None, use_cache=False, position_embeddings=None, **kwargs) -> torch.Tensor:
        x = hidden_states
        if self.skip_attn and cache is not None:
            count_tokens(cache, self.original_attn_idx, x)
        if self.skip_attn and self.skip_ffn:
            return x if self.layer_adapter is None else x + adapter_delta(self.layer_adapter, x)
        parts = arch.layer_parts(self.block)
        if not self.skip_attn:
            n = parts.attn_norm(x)
            if self.attn_adapter is not None:
                n = n + adapter_delta(self.attn_adapter, n)
            a, _ = parts.attn(
                hidden_states=n, attention_mask=attention_mask, position_ids=position_ids,
                cache=cache, use_cache=use_cache,
                position_embeddings=position_embeddings, **kwargs,
            )
            x = x + a
        if not self.skip_ffn:
            n = parts.ffn_norm(x)
            if self.ffn_adapter is not None:
                n = n + adapter_delta(self.ffn_adapter, n)
            x = x + parts.mlp(n)
        return x

    def extra_repr(self) -> str:
        return f"layer={self.layer_idx}, skip_attn={self.skip_attn}, skip_ffn={self.skip_ffn}"


class CountingLayer:
    """Mixed into a transformers cache layer for a skipped attention: `update` records how many tokens
    went by and stores nothing, so the entry reports the sequence length and mask sizes of a layer of its
    type (full or sliding-window) while holding zero bytes."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states[..., :0, :], value_states[..., :0, :])
        self.cumulative_length += key_states.shape[-2]
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0:
            self.cumulative_length = max(self.cumulative_length + tokens_to_remove, 0)

    # Nothing is stored, so nothing moves with the batch.
    def reorder_cache(self, beam_idx) -> None: ...
    def batch_repeat_interleave(self, repeats: int) -> None: ...
    def batch_select_indices(self, indices) -> None: ...


class SkippedFullLayer(CountingLayer, DynamicLayer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cumulative_length = 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cumulative_length + query_length, 0


class SkippedSlidingLayer(CountingLayer, DynamicSlidingWindowLayer):
    pass


def count_tokens(cache, layer_idx: int, states: torch.Tensor) -> None:
    """Record the positions of `states` (batch, tokens, ...) in a skipped layer's cache entry, first turning
    the entry into a counting one of the same type (see the module docstring)."""
    if getattr(cache, "layer_class_to_replicate", None) is not None:
        while len(cache.layers) <= layer_idx:  # a cache built without the config grows on demand
            cache.layers.append(cache.layer_class_to_replicate())
    layer = cache.layers[layer_idx]
    if not isinstance(layer, CountingLayer):
        if isinstance(layer, DynamicSlidingWindowLayer):
            layer = SkippedSlidingLayer(sliding_window=layer.sliding_window)
        elif isinstance(layer, DynamicLayer):
            layer = SkippedFullLayer()
        else:
            raise SkipError(f"{type(cache).__name__} with {type(layer).__name__} entries is not supported with "
                            "skipped attentions; use a DynamicCache (transformers' default).")
        cache.layers[layer_idx] = layer
    empty = states.new_empty((states.shape[0], 1, states.shape[1], 0))
    layer.update(empty, empty)


def eas_blocks(model: nn.Module) -> list[EASBlock]:
    """The model's decoder layers wrapped as EASBlocks (wrapping them on first use)."""
    layers = arch.decoder_layers(model)
    for i, layer in enumerate(layers):
        if not isinstance(layer, EASBlock):
            arch.layer_parts(layer)  # fail early on an unsupported block layout
            layers[i] = EASBlock(layer, i)
    return list(layers)


def apply_skips(model: nn.Module, skips: SkipSet) -> SkipSet:
    """Skip the modules in `skips` (replacing any earlier skip set). Every attention keeps its own cache
    index (see the module docstring: a skipped layer's cache entry only counts tokens)."""
    validate(model, skips)
    for i, blk in enumerate(eas_blocks(model)):
        blk.skip_attn = skips.attn_skipped(i)
        blk.skip_ffn = skips.ffn_skipped(i)
        blk.block.self_attn.layer_idx = blk.original_attn_idx
    model._eas_skips = skips
    return skips


def set_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Gradient checkpointing of every decoder layer (wrapping them as EASBlocks): in training, each block keeps
    only its input and recomputes the rest during backward, so activation memory stops growing with depth at
    the cost of about one more forward pass. Gradients are unchanged. Returns the number of blocks set."""
    blocks = eas_blocks(model)
    for blk in blocks:
        blk.checkpointing = bool(enabled)
    return len(blocks)


def current_skips(model: nn.Module) -> SkipSet:
    return getattr(model, "_eas_skips", SkipSet())


def remove_eas(model: nn.Module) -> nn.Module:
    """Put the original decoder layers back (adapters and skips are dropped)."""
    layers = arch.decoder_layers(model)
    for i, layer in enumerate(layers):
        if isinstance(layer, EASBlock):
            layer.block.self_attn.layer_idx = layer.original_attn_idx
            layers[i] = layer.block
    model._eas_skips = SkipSet()
    return model


def kept_attention_count(model: nn.Module) -> int:
    skips = current_skips(model)
    return sum(not skips.attn_skipped(i) for i in range(arch.num_layers(model)))


def kv_cache_bytes(cache) -> int:
    """Bytes held by the keys and values of a transformers Cache (0 for empty layers)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
