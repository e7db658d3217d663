"""Which tokens are the prompt, for the forward pass running now.

PIA's prompt mean needs `Batch.prompt_mask`, but an adapter only sees its input `n` (the EASBlock
contract is n -> delta). A context variable carries the mask past the model's forward signature, which
differs between families (MiniLlava, LlamaForCausalLM, LLaVA) and is not ours to change:

    with prompt_context(batch.prompt_mask, batch.attention_mask):
        model(...)                     # full sequence: prompt (+ teacher-forced answer)

A forward without a context whose width matches (a cached decode step) reuses what each PIA kept
from the last full forward (its "frozen bias", Eq. 11).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch

_CURRENT: contextvars.ContextVar["PromptContext | None"] = contextvars.ContextVar("eas_prompt", default=None)


@dataclass(frozen=True)
class PromptContext:
    prompt_mask: torch.Tensor  # (B, T) bool: the prompt's own tokens (no padding, no answer)
    answer_mask: torch.Tensor  # (B, T) bool: real tokens after the prompt (teacher-forced or generated)


@contextlib.contextmanager
def prompt_context(prompt_mask: torch.Tensor | None, attention_mask: torch.Tensor | None = None):
    """Run forwards inside with the given prompt mask; `None` is a no-op (models without PIA)."""
    if prompt_mask is None:
        yield None
        return
    with restored_context(make_context(prompt_mask, attention_mask)) as ctx:
        yield ctx


def make_context(prompt_mask: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PromptContext:
    prompt = prompt_mask.bool()
    if prompt.dim() != 2:
        raise ValueError(f"prompt_mask must be (batch, seq), got shape {tuple(prompt.shape)}.")
    if attention_mask is None:
        # Without a padding mask, everything from the first prompt token on is real (left padding).
        real = prompt.long().cumsum(-1) > 0
    else:
        if attention_mask.shape != prompt.shape:
            raise ValueError(
                f"prompt_mask {tuple(prompt.shape)} and attention_mask {tuple(attention_mask.shape)} differ in shape."
            )
        real = attention_mask.bool()
    return PromptContext(prompt_mask=prompt, answer_mask=real & ~prompt)


def current_context() -> PromptContext | None:
    return _CURRENT.get()


@contextlib.contextmanager
def restored_context(ctx: PromptContext | None):
    """Run forwards inside with a context captured earlier (`current_context()`): gradient checkpointing recomputes
    a block in backward, outside the forward's `prompt_context`, and must see the prompt the forward saw."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
