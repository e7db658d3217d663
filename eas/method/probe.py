"""A training-free redundancy probe: remove one module at a time, no adapters, and measure.

For each layer and each kind (MHA, FFN) the module is skipped alone and the teacher-forced task
loss and answer-token accuracy are measured on a fixed probe set (same batches for every
configuration, so differences are due to the removal alone). Teacher forcing keeps it cheap: one
forward pass per batch, logits only at answer positions.

Removing a module in layer i leaves layers 0..i-1 untouched, so the full model's inputs to every
layer are recorded once per batch and each configuration re-runs only layers i..L-1: about half
the work of running every configuration from the embeddings. `trial_scores` does this for any base
skip set plus one removal, which is what the greedy selector (eas.method.selectors.greedy) needs each round.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bars: they also reach papermill's log and the book

from eas.method import skip
from eas.method.pia import prompt_context
from eas.models import arch


def _answer_scores(model, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
    targets = labels[:, 1:]
    where = targets != -100
    logits = model.lm_head(hidden[:, :-1][where]).float()
    gold = targets[where]
    return F.cross_entropy(logits, gold, reduction="sum").item(), (logits.argmax(-1) == gold).sum().item(), gold.numel()


@torch.no_grad()
def record_layer_inputs(model, batch) -> list[tuple[tuple, dict]]:
    """Each decoder layer's (args, kwargs) in a full forward pass (hidden states, masks, rotary)."""
    records = []
    hooks = [layer.register_forward_pre_hook(lambda m, a, k: records.append((a, k)), with_kwargs=True)
             for layer in arch.decoder_layers(model)]
    try:
        with prompt_context(batch.prompt_mask, batch.attention_mask):
            model(batch.input_ids, batch.attention_mask, batch.image_features)
    finally:
        for h in hooks:
            h.remove()
    return records


@torch.no_grad()
def scores_from_layer(model, records, start: int, labels: torch.Tensor) -> tuple[float, int, int]:
    """Re-run layers start..L-1 from the recorded input of layer `start`; answer-token scores."""
    layers = arch.decoder_layers(model)
    args, kwargs = records[start]
    hidden = args[0]
    for i in range(start, len(layers)):
        hidden = layers[i](hidden, *records[i][0][1:], **records[i][1])
    return _answer_scores(model, arch.text_model(model).norm(hidden), labels)


@torch.no_grad()
def teacher_forced_scores(model, batches) -> dict[str, float]:
    """Mean answer-token cross-entropy and argmax accuracy over pre-collated batches."""
    total = [0.0, 0, 0]
    for batch in batches:
        with prompt_context(batch.prompt_mask, batch.attention_mask):
            hidden, _ = model(batch.input_ids, batch.attention_mask, batch.image_features)
        for j, v in enumerate(_answer_scores(model, hidden, batch.labels)):
            total[j] += v
    return {"loss": total[0] / total[2], "token_acc": 100.0 * total[1] / total[2]}


def probe_batches(model, examples, batch_size: int = 8, progress: bool = True) -> list:
    """Teacher-forced batches for the probes. Sorting by length first keeps padding (wasted
    layer work on every configuration) small; the vision features are computed once here."""
    if not examples:
        raise ValueError("the removal probe needs at least one example")
    model.cache_features(examples, progress=progress)
    ordered = sorted(examples, key=lambda e: len(e.prompt) + len(e.target))
    return [model.collate(ordered[i : i + batch_size], with_target=True) for i in range(0, len(ordered), batch_size)]


@torch.no_grad()
def trial_scores(model, batches, base: skip.SkipSet, trials, bar=None) -> list[list]:
    """Summed answer-token [loss, correct, count] of each trial over `batches`.

    A trial is (skip set, first layer where it differs from `base`). The base configuration's layer
    inputs are recorded once per batch and each trial re-runs only the layers from its first
    difference on: that is exact only if the trial agrees with `base` on every earlier layer, which
    the callers guarantee (a trial adds one removal to `base`). Leaves `base` applied.
    """
    totals = [[0.0, 0, 0] for _ in trials]
    for batch in batches:
        skip.apply_skips(model, base)
        records = record_layer_inputs(model, batch)
        for j, (skips, start) in enumerate(trials):
            skip.apply_skips(model, skips)
            scores = scores_from_layer(model, records, max(start, 0), batch.labels)
            totals[j] = [a + b for a, b in zip(totals[j], scores)]
            if bar is not None:
                bar.update(1)
        del records
    skip.apply_skips(model, base)
    return totals


def removal_probe(model, examples, *, kinds=("mha", "ffn"), batch_size: int = 8,
                  progress: bool = True) -> pd.DataFrame:
    """One row per (kind, layer) plus a `none` baseline row; restores the model's skip set."""
    for kind in kinds:
        skip.check_kind(kind)
    batches = probe_batches(model, examples, batch_size, progress)
    before = skip.current_skips(model)
    configs = [("none", -1)] + [(k, i) for k in kinds for i in range(arch.num_layers(model))]
    trials = [(skip.SkipSet() if kind == "none" else skip.SkipSet.of(kind, [layer]), layer) for kind, layer in configs]
    try:
        with tqdm(total=len(batches) * len(trials), desc=f"removal probe ({len(configs)} configurations)",
                  disable=not progress) as bar:
            totals = dict(zip(configs, trial_scores(model, batches, skip.SkipSet(), trials, bar)))
    finally:
        skip.apply_skips(model, before)
    frame = pd.DataFrame([{"kind": k, "layer": i, "loss": t[0] / t[2], "token_acc": 100.0 * t[1] / t[2]}
                          for (k, i), t in totals.items()])
    base = frame.iloc[0]
    frame["delta_loss"] = frame["loss"] - base["loss"]
    frame["delta_token_acc"] = frame["token_acc"] - base["token_acc"]
    return frame
