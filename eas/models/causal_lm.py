"""A plain transformers causal LM behind the study's generation interface, and unwrapping it.

The study's code generates with, times and merges "targets": the mini-LLaVA, a LLaVA wrapper, or a
plain causal LM wrapped here so that it takes the same arguments (token ids, attention mask, cache)."""

from __future__ import annotations

import torch
from torch import nn

from eas.models import arch


class CausalLMTarget(nn.Module):
    """A plain HF causal LM (any family `eas.models.arch` supports) behind MiniLlava's generation interface.

    Runs the bare decoder with positions counted from the attention mask (left padding does not shift
    rotary phases, as in HF's generate), and leaves the LM head to the caller, which applies it only at
    the positions that need logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = arch.text_config(model)
        eos = getattr(cfg, "eos_token_id", None)
        self.eos_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos

    @property
    def lm_head(self) -> nn.Module:
        return arch.lm_head(self.model)

    @property
    def config(self):
        return arch.text_config(self.model)

    def forward(self, input_ids, attention_mask, image_features=None, cache=None, use_cache=False):
        if image_features is not None:
            raise ValueError("CausalLMTarget runs the language model only; pass token ids, not image features.")
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        out = arch.text_model(self.model)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
            cache=cache, use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache


def model_of(target) -> nn.Module:
    """The model that `eas.models.arch`, skipping and the PIA merge work on (unwraps CausalLMTarget)."""
    return target.model if isinstance(target, CausalLMTarget) else target


def device_of(target) -> torch.device:
    try:
        return next(target.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


