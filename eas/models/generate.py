"""Batched greedy generation with a KV cache (and an uncached reference path for tests).

Prefill and decode are separate steps so that work can happen in between (PIA's merge into
the FFN weights after prefill) and so each can be timed on its own. LM-head logits are computed
for the last position only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from eas.models.causal_lm import device_of
from eas.models.prompt import prompt_context


@dataclass
class Generation:
    tokens: torch.Tensor  # (B, new) generated ids, padded with eos after a row finishes
    cache: object | None = None


@torch.no_grad()
def prefill(model, batch):
    """Run the prompt; return the first generated token per row, the cache, and the mask."""
    batch = batch.to(device_of(model))
    # EAS: the prompt context lets PIA compute (and keep, for decoding) its prompt mean.
    with prompt_context(batch.prompt_mask, batch.attention_mask):
        hidden, cache = model(batch.input_ids, batch.attention_mask, batch.image_features, use_cache=True)
    next_token = model.lm_head(hidden[:, -1]).argmax(-1)
    return next_token, cache


@torch.no_grad()
def decode_step(model, token: torch.Tensor, attention_mask: torch.Tensor, cache):
    hidden, cache = model(token[:, None], attention_mask, None, cache=cache, use_cache=True)
    return model.lm_head(hidden[:, -1]).argmax(-1), cache


@torch.no_grad()
def greedy_generate(model, batch, max_new_tokens: int, *, ignore_eos: bool = False,
                    use_cache: bool = True, after_prefill: Callable | None = None) -> Generation:
    """Greedy decoding. `ignore_eos` keeps every row going for exactly `max_new_tokens` (timing).

    `after_prefill(model, batch)` runs once between prefill and the first decode step; if it returns
    a callable (eas.method.reparam.merge_after_prefill returns its `unmerge`), that runs after decoding."""
    batch = batch.to(device_of(model))
    if not use_cache:
        return _greedy_uncached(model, batch, max_new_tokens, ignore_eos)
    token, cache = prefill(model, batch)
    undo = after_prefill(model, batch) if after_prefill is not None else None
    try:
        return _decode(model, batch, token, cache, max_new_tokens, ignore_eos)
    finally:
        if callable(undo):  # EAS: undo a per-batch merge so the next prefill sees the unmerged model
            undo()


def _decode(model, batch, token, cache, max_new_tokens: int, ignore_eos: bool) -> Generation:
    eos = model.eos_token_id
    mask = batch.attention_mask
    out = [token]
    done = token == eos
    for _ in range(max_new_tokens - 1):
        if not ignore_eos and done.all():
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        token, cache = decode_step(model, token, mask, cache)
        if not ignore_eos:
            token = torch.where(done, torch.full_like(token, eos), token)
            done = done | (token == eos)
        out.append(token)
    return Generation(torch.stack(out, dim=1), cache)


def _greedy_uncached(model, batch, max_new_tokens: int, ignore_eos: bool) -> Generation:
    """Re-runs the whole sequence each step: the reference the cached path must match."""
    eos = model.eos_token_id
    ids, mask = batch.input_ids, batch.attention_mask
    prompt = batch.prompt_mask  # EAS: generated tokens are not prompt, so PIA's prompt mean stays the prompt's
    out = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        with prompt_context(prompt, mask):
            hidden, _ = model(ids, mask, batch.image_features)
        token = model.lm_head(hidden[:, -1]).argmax(-1)
        if not ignore_eos:
            token = torch.where(done, torch.full_like(token, eos), token)
            done = done | (token == eos)
        out.append(token)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        prompt = torch.cat([prompt, prompt.new_zeros(prompt.shape[0], 1)], dim=1)
        if not ignore_eos and done.all():
            break
    return Generation(torch.stack(out, dim=1))


def decode_texts(model, tokens: torch.Tensor) -> list[str]:
    """Text of each row up to (not including) the first eos."""
    texts = []
    for row in tokens.tolist():
        if model.eos_token_id in row:
            row = row[: row.index(model.eos_token_id)]
        texts.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


def generate_texts(model, examples, *, batch_size: int = 8, max_new_tokens: int = 64,
                   progress: bool = True, desc: str = "generate", after_prefill: Callable | None = None) -> list[str]:
    """Greedy answers for a list of examples, in order, batched by similar prompt length.

    `after_prefill` is passed to `greedy_generate` (EAS: merge the PIAs after each batch's prefill)."""
    from tqdm import tqdm  # text bars: they also reach papermill's log and the book

    model.cache_features(examples, progress=progress) if hasattr(model, "cache_features") else None
    # Sorting by length keeps padding (wasted compute) low; results go back to input order.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt))
    texts: list[str | None] = [None] * len(examples)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        idx = order[start : start + batch_size]
        batch = model.collate([examples[i] for i in idx])
        gen = greedy_generate(model, batch, max_new_tokens, after_prefill=after_prefill)
        for i, text in zip(idx, decode_texts(model, gen.tokens)):
            texts[i] = text
    return texts
