"""A training-free redundancy probe: remove one module at a time, no adapters, and measure.

For each layer and each kind (MHA, FFN) the module is skipped alone and the teacher-forced task
loss and answer-token accuracy are measured on a fixed probe set (same batches for every
configuration, so differences are due to the removal alone). Teacher forcing keeps it cheap: one
forward pass per batch, logits only at answer positions.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bars: they also reach papermill's log and the book

from . import arch, skip


@torch.no_grad()
def teacher_forced_scores(model, batches) -> dict[str, float]:
    """Mean answer-token cross-entropy and argmax accuracy over pre-collated batches."""
    total_loss, total_right, total_tokens = 0.0, 0, 0
    for batch in batches:
        hidden, _ = model(batch.input_ids, batch.attention_mask, batch.image_features)
        targets = batch.labels[:, 1:]
        where = targets != -100
        logits = model.lm_head(hidden[:, :-1][where]).float()
        gold = targets[where]
        total_loss += F.cross_entropy(logits, gold, reduction="sum").item()
        total_right += (logits.argmax(-1) == gold).sum().item()
        total_tokens += gold.numel()
    return {"loss": total_loss / total_tokens, "token_acc": 100.0 * total_right / total_tokens}


def removal_probe(model, examples, *, kinds=("mha", "ffn"), batch_size: int = 8,
                  progress: bool = True) -> pd.DataFrame:
    """One row per (kind, layer) plus a `none` baseline row; restores the model's skip set."""
    for kind in kinds:
        skip.check_kind(kind)
    if not examples:
        raise ValueError("the removal probe needs at least one example")
    model.cache_features(examples, progress=progress)
    ordered = sorted(examples, key=lambda e: len(e.prompt) + len(e.target))
    batches = [model.collate(ordered[i : i + batch_size], with_target=True) for i in range(0, len(ordered), batch_size)]
    before = skip.current_skips(model)
    configs = [("none", -1)] + [(k, i) for k in kinds for i in range(arch.num_layers(model))]
    rows = []
    try:
        for kind, layer in tqdm(configs, desc="removal probe", disable=not progress):
            skip.apply_skips(model, skip.SkipSet() if kind == "none" else skip.SkipSet.of(kind, [layer]))
            rows.append({"kind": kind, "layer": layer, **teacher_forced_scores(model, batches)})
    finally:
        skip.apply_skips(model, before)
    frame = pd.DataFrame(rows)
    base = frame.iloc[0]
    frame["delta_loss"] = frame["loss"] - base["loss"]
    frame["delta_token_acc"] = frame["token_acc"] - base["token_acc"]
    return frame
