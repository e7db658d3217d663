"""The architecture layer: the only module that knows where a model keeps its parts.

Everything else in `eas` (skipping, adapters, re-parameterisation, measurement) asks this module
for the decoder layers, the attention, the MLP and the norms, so supporting a new family means
editing this file alone.

All supported families share the LLaMA block layout

    x = x + self_attn(input_layernorm(x))
    x = x + mlp(post_attention_layernorm(x)),   mlp(n) = down_proj(act(gate_proj(n)) * up_proj(n))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Class name -> how to reach the text decoder (the module owning `.layers`) from the top model.
_TEXT_MODEL_PATH = {
    "LlamaForCausalLM": ("model",),
    "Qwen2ForCausalLM": ("model",),
    "MistralForCausalLM": ("model",),
    # transformers 5.x: LlavaForConditionalGeneration.model is a LlavaModel whose
    # .language_model is the bare decoder (LlamaModel for LLaVA-1.5).
    "LlavaForConditionalGeneration": ("model", "language_model"),
    "MiniLlava": ("language_model", "model"),
    # eas.models.llava.LlavaTarget: a LlavaForConditionalGeneration behind the study's model interface.
    "LlavaTarget": ("model", "model", "language_model"),
}
SUPPORTED_FAMILIES = tuple(_TEXT_MODEL_PATH)


class UnsupportedModelError(TypeError):
    pass


@dataclass(frozen=True)
class LayerParts:
    """Handles on one decoder block's sub-modules (the block's own modules, not copies)."""

    attn_norm: nn.Module
    attn: nn.Module
    ffn_norm: nn.Module
    mlp: nn.Module

    @property
    def gate(self) -> nn.Linear:
        return self.mlp.gate_proj

    @property
    def up(self) -> nn.Linear:
        return self.mlp.up_proj

    @property
    def down(self) -> nn.Linear:
        return self.mlp.down_proj

    @property
    def qkv(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.attn.q_proj, self.attn.k_proj, self.attn.v_proj

    @property
    def out(self) -> nn.Linear:
        """The attention's output projection (o_proj)."""
        return self.attn.o_proj


# Thin wrappers that only change a model's calling interface: look through them to the model inside.
_WRAPPERS = {"CausalLMTarget": "model"}  # eas.models.causal_lm.CausalLMTarget


def unwrap(model: nn.Module) -> nn.Module:
    while type(model).__name__ in _WRAPPERS:
        model = getattr(model, _WRAPPERS[type(model).__name__])
    return model


def family(model: nn.Module) -> str:
    """The supported family name of `model`, or a clear error naming the supported ones.

    A subclass of a supported class counts as that family: eas.export's exported EAS models
    (EasLlamaForCausalLM(LlamaForCausalLM), ...) keep their base class's layout."""
    classes = type(unwrap(model)).__mro__
    name = next((c.__name__ for c in classes if c.__name__ in _TEXT_MODEL_PATH), classes[0].__name__)
    if name not in _TEXT_MODEL_PATH:
        raise UnsupportedModelError(
            f"{name} is not a supported model family; expected one of {', '.join(SUPPORTED_FAMILIES)} "
            "(decoder blocks laid out as input_layernorm/self_attn/post_attention_layernorm/mlp)."
        )
    return name


def transformers_model(model: nn.Module) -> nn.Module:
    """The transformers PreTrainedModel that holds the decoder: the model itself, MiniLlava's
    language model, or the model inside a CausalLMTarget / LlavaTarget (what eas.export.pretrained writes)."""
    model = unwrap(model)
    if family(model) == "MiniLlava":
        return model.language_model
    if family(model) == "LlavaTarget":
        return model.model
    return model


def text_model(model: nn.Module) -> nn.Module:
    """The decoder stack (a LlamaModel-like module with `.layers`, `.embed_tokens`, `.norm`)."""
    module = unwrap(model)
    for attr in _TEXT_MODEL_PATH[family(module)]:
        module = getattr(module, attr)
    return module


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return text_model(model).layers


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def text_config(model: nn.Module):
    return text_model(model).config


def lm_head(model: nn.Module) -> nn.Linear:
    model = unwrap(model)
    if family(model) == "MiniLlava":
        return model.language_model.lm_head
    if family(model) == "LlavaTarget":
        return model.model.lm_head
    return model.lm_head


def input_embeddings(model: nn.Module) -> nn.Embedding:
    return text_model(model).embed_tokens


def layer_parts(layer: nn.Module) -> LayerParts:
    """Parts of a decoder block; accepts the original block or an `eas` wrapper around it."""
    block = getattr(layer, "block", layer)
    try:
        return LayerParts(
            attn_norm=block.input_layernorm,
            attn=block.self_attn,
            ffn_norm=block.post_attention_layernorm,
            mlp=block.mlp,
        )
    except AttributeError as err:
        raise UnsupportedModelError(
            f"{type(block).__name__} does not have the LLaMA block layout "
            f"(input_layernorm, self_attn, post_attention_layernorm, mlp): {err}"
        ) from None


def check_layer_index(model: nn.Module, index: int) -> int:
    n = num_layers(model)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise IndexError(f"layer index {index!r} is out of range: this model has {n} decoder layers (0..{n - 1}).")
    return index


def kv_shape(model: nn.Module) -> tuple[int, int]:
    """(number of key/value heads, head dimension) of the decoder's attentions (GQA-aware)."""
    cfg = text_config(model)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return getattr(cfg, "num_key_value_heads", None) or heads, head_dim


# Linear layers inside a LLaMA block, by the attribute names peft's `target_modules` matches.
ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")


def vision_encoder(model: nn.Module) -> nn.Module | None:
    """The vision tower owned by `model` (LLaVA), or None where the model holds none (MiniLlava
    consumes cached features; plain causal LMs have no vision part)."""
    path = _TEXT_MODEL_PATH[family(model)]
    if family(model) not in ("LlavaForConditionalGeneration", "LlavaTarget"):
        return None
    module = model
    for attr in path[:-1]:
        module = getattr(module, attr)
    return getattr(module, "vision_tower", None)


def adapter_factory_kwargs(weight: torch.Tensor) -> dict:
    """Device and dtype for new trainable modules beside a frozen weight: its device, and fp32 when the base is
    16-bit (AdamW's moments and small updates underflow in fp16/bf16; eas.method.skip runs each adapter in its
    own dtype and casts its output back)."""
    dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
    return {"device": weight.device, "dtype": dtype}
