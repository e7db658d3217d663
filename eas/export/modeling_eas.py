"""EAS models as transformers models. eas.export.pretrained copies this file into every checkpoint it writes, so

    AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)          LLaMA, Qwen2, Mistral
    AutoModelForImageTextToText.from_pretrained(dir, trust_remote_code=True)   LLaVA

give the study's model, and `model.generate()` works on it.

Each class is its transformers base class whose decoder layers are wrapped as eas.method.skip.EASBlock at
construction (skips applied, PIAs attached as config.json's `eas` section says), so the checkpoint's
tensors load by name into exactly the module tree the study ran. The mechanics (skipping, PIA, the
merge) come from the installed `eas` library rather than copies of it: this file is only the glue.

A forward given an empty cache is a prefill. It runs with the attention mask as PIA's prompt mask
(every real token is prompt; wrap the call in eas.method.pia.prompt_context to say otherwise), then merges
the PIAs into the weights (eas.method.reparam.merge_after_prefill) so decode steps run the merged model.
The next prefill unmerges first; generate() unmerges when it returns, so the model's weights and
state_dict are always the unmerged ones outside a generation.
"""

from __future__ import annotations

import contextlib

import torch
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

try:
    from eas.export import checkpoint as _checkpoint
    from eas.export import config as _section
    from eas.method import pia as _pia
    from eas.method import reparam as _reparam
    from eas.method import skip as _skip
except ImportError as err:  # the checkpoint's code is glue around the library: without it nothing runs
    raise ImportError(
        "this EAS checkpoint (modeling_eas.py) needs the Python package `eas` (Effective Attention Skipping), "
        f"which could not be imported ({err}); install it, e.g. `pip install -e <eas repository>`."
    ) from err


def _setup(model) -> None:
    """Skip and attach what config.eas names; the weights arrive afterwards (from_pretrained)."""
    section = _section.check_section(getattr(model.config, "eas", None), "config",
                                     _section.text_dims(model.config))
    skips = _skip.SkipSet(**section["skips"])
    config = _section.pia_config(section)
    if config is None:
        _skip.apply_skips(model, skips)
    else:
        _pia.attach_pia(model, skips, config)
        model.requires_grad_(False)  # an exported model is for inference; fine-tuning re-enables adapters
        if section.get("static_router"):
            for adapter in _pia.skip_adapters(model).values():
                w = adapter.down1.weight
                adapter.static_alpha = torch.zeros(2, dtype=w.dtype, device=w.device)  # a slot for the loaded weights


class EasMixin:
    """What an EAS model adds to its transformers base class. Listed first among the bases."""

    def _eas_init(self) -> None:
        _setup(self)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # transformers fills missing tensors with random values and only logs it; an EAS checkpoint whose
        # files do not match its config must fail, naming the file.
        _checkpoint.check_directory(cls, pretrained_model_name_or_path, kwargs.get("config"))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _merges(self) -> bool:
        config = _pia.pia_config(self)
        return config is not None and config.reparam and bool(_pia.named_adapters(self))

    def _eas_forward(self, input_ids, attention_mask, position_ids, cache, kwargs):
        call = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache)
        inputs = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if inputs is None:
            return super().forward(**call, **kwargs)  # the base class says what is missing
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Positions count real tokens only, so left padding does not shift the rotary phases.
            call["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs.shape[1]:]
        if cache is not None and cache.get_seq_length() > 0:  # a decode step: merged weights or frozen PIA state
            return super().forward(**call, **kwargs)
        _reparam.unmerge(self)
        with self._prompt(attention_mask, inputs):
            out = super().forward(**call, **kwargs)
        # Only a caller that handed in a cache will decode from it (generate does): merge for that.
        if cache is not None and self._merges():
            _reparam.merge_after_prefill(self, None, self.config.eas.get("merge_strategy"))
        return out

    def _prompt(self, attention_mask, inputs):
        if _pia.current_context() is not None or not _pia.named_adapters(self):
            return contextlib.nullcontext()  # the caller said which tokens are the prompt, or nothing asks
        if attention_mask is None:
            mask = torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
        elif attention_mask.dim() != 2 or attention_mask.shape[1] != inputs.shape[1]:
            raise ValueError(
                f"an EAS prefill needs a 2D attention mask as wide as the prompt ({inputs.shape[1]} tokens), "
                f"got shape {tuple(attention_mask.shape)}: PIA averages over the prompt's real tokens.")
        else:
            mask = attention_mask.bool()
        return _pia.prompt_context(mask, mask)

    def generate(self, *args, **kwargs):
        gen = kwargs.get("generation_config") or self.generation_config
        config = _pia.pia_config(self)
        if config is not None and config.uses_prompt:
            if not kwargs.get("use_cache", gen.use_cache):
                raise ValueError("generate(use_cache=False) re-runs generated tokens as prompt, which changes "
                                 "PIA's prompt mean; EAS models with prompt-dependent PIAs generate with a cache.")
            if kwargs.get("prefill_chunk_size") or getattr(gen, "prefill_chunk_size", None):
                raise ValueError("chunked prefill splits the prompt PIA averages over; "
                                 "EAS models with prompt-dependent PIAs prefill in one piece.")
        try:
            return super().generate(*args, **kwargs)
        finally:
            _reparam.unmerge(self)


# ----------------------------------------------------------------------------- causal LMs

class EasLlamaConfig(LlamaConfig):
    model_type = "eas_llama"


class EasQwen2Config(Qwen2Config):
    model_type = "eas_qwen2"


class EasMistralConfig(MistralConfig):
    model_type = "eas_mistral"


class EasLlavaConfig(LlavaConfig):
    model_type = "eas_llava"


class _EasCausalLM(EasMixin):
    def __init__(self, config):
        super().__init__(config)
        self._eas_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, **kwargs):
        return self._eas_forward(input_ids, attention_mask, position_ids, cache, kwargs)


class EasLlamaForCausalLM(_EasCausalLM, LlamaForCausalLM):
    config_class = EasLlamaConfig


class EasQwen2ForCausalLM(_EasCausalLM, Qwen2ForCausalLM):
    config_class = EasQwen2Config


class EasMistralForCausalLM(_EasCausalLM, MistralForCausalLM):
    config_class = EasMistralConfig


class EasLlavaForConditionalGeneration(EasMixin, LlavaForConditionalGeneration):
    config_class = EasLlavaConfig

    def __init__(self, config):
        super().__init__(config)
        self._eas_init()

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, cache=None,
                **kwargs):
        return self._eas_forward(input_ids, attention_mask, position_ids, cache,
                                 {"pixel_values": pixel_values, **kwargs})


# base class name -> (EAS config class, EAS model class, the auto class that loads it)
FAMILIES = {
    "LlamaForCausalLM": (EasLlamaConfig, EasLlamaForCausalLM, "AutoModelForCausalLM"),
    "Qwen2ForCausalLM": (EasQwen2Config, EasQwen2ForCausalLM, "AutoModelForCausalLM"),
    "MistralForCausalLM": (EasMistralConfig, EasMistralForCausalLM, "AutoModelForCausalLM"),
    "LlavaForConditionalGeneration": (EasLlavaConfig, EasLlavaForConditionalGeneration,
                                      "AutoModelForImageTextToText"),
}
