"""The throughput suite: decode speed where models are served (`make bench SUITE=throughput`).

For each shape (a randomly initialised LLaMA of `eas.measure.shapes`: timing does not depend on weight
values), batch size and context length, every variant runs on ONE model, reconfigured between runs outside
the clocks (`eas.study.latency.configure`), in interleaved rounds after a warm-up round:

    base | skip-only k (the training-free attention drop removes the same modules: one row stands for both)
    | EAS_k merged (per k; the skip PIAs merged after prefill with the default strategy, adaptation PIAs
    folded) | DAS_k (k whole blocks replaced by adapters)

A run prefills a short prompt (8 tokens, so EAS's merge has a prompt), extends the cache to the context
length with random keys and values (`eas.measure.serving.extend_cache`: a decode step's time depends on
the cache's length, not on its content; prefilling 32 x 1024 tokens would take minutes on a CPU), then
times `decode_steps` greedy steps. One row per shape x batch x context x variant: decode ms per step
(median over rounds, with its IQR), tokens per second, the speed-up over the base in the same run, the
ceiling that the shape implies (bytes and FLOPs per step, `serving.ceiling`) and the fraction of the
ceiling's gain achieved, the KV cache the variant held (measured from the cache's tensors) and its saving
against the base next to the (N-k)/N that the shapes predict, and sequences per KV budget.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eas.core import io
from eas.measure import serving
from eas.measure.cost import make_sync
from eas.measure.shapes import llava_prompt, random_llama, shape_config
from eas.method.skip import SkipSet, kv_cache_bytes
from eas.models import arch
from eas.models.causal_lm import CausalLMTarget, device_of
from eas.models.generate import decode_step, prefill
from eas.study import latency
from eas.study.profiles import ThroughputParams

PROMPT_TOKENS = 8
COLUMNS = ["shape", "variant", "kind", "k", "batch", "context", "decode_ms", "decode_iqr_ms", "tokens_per_s",
           "speedup", "bytes_bound", "flops_bound", "ceiling", "ceiling_fraction", "kv_mb", "kv_saving",
           "kv_saving_expected", "kv_share_base"]


def variants(n_layers: int, p: ThroughputParams) -> list[tuple[str, str, latency.Spec]]:
    """(label, serving kind, latency spec) of every variant: base first (the baseline of each speed-up)."""
    out = [("base", "base", latency.Spec("base"))]
    top = max(p.eas_ks)
    mha = latency.timing_skip_set(n_layers, top).mha
    out.append((f"skip-only k={top}", "eas", latency.Spec("skip-only", top, SkipSet(mha=mha))))
    for k in p.eas_ks:
        skips = SkipSet(mha=latency.timing_skip_set(n_layers, k).mha)
        out.append((f"EAS_{k} merged", "eas", latency.Spec("eas-merged", k, skips, strategy=p.merge_strategy)))
    das = SkipSet(layer=latency.timing_skip_set(n_layers, p.das_k).mha)
    out.append((f"DAS_{p.das_k}", "das", latency.Spec("das", p.das_k, das)))
    return out


@torch.no_grad()
def time_decode(target, spec: latency.Spec, p: ThroughputParams, batch, context: int, sync) -> tuple[float, int]:
    """One run: configure, prefill the short prompt, merge (EAS), extend the cache to `context`, one untimed
    step, then `decode_steps` timed steps. Returns (median ms per step, KV bytes held)."""
    model = target.model
    hook = latency.configure(model, spec, p, target, batch)
    token, cache = prefill(target, batch)
    undo = hook(model, batch) if hook is not None else None
    try:
        serving.extend_cache(cache, context, torch.Generator().manual_seed(p.seed))
        mask = torch.ones(batch.input_ids.shape[0], context, dtype=torch.long, device=device_of(target))
        mask = torch.cat([mask, mask[:, :1]], dim=1)
        token, cache = decode_step(target, token, mask, cache)  # untimed: first step after the merge
        kv = kv_cache_bytes(cache)
        steps = []
        gc.collect()
        for _ in range(p.decode_steps):
            mask = torch.cat([mask, mask[:, :1]], dim=1)
            sync()
            t0 = time.perf_counter()
            token, cache = decode_step(target, token, mask, cache)
            sync()
            steps.append((time.perf_counter() - t0) * 1e3)
    finally:
        if callable(undo):
            undo()
    return statistics.median(steps), kv


def _iqr(values) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def run_config(target, shape: str, batch_size: int, context: int, p: ThroughputParams, sync) -> list[dict]:
    """Every variant at one batch x context, interleaved (rotated order each round, one warm-up round)."""
    config = arch.text_config(target.model)
    batch = llava_prompt(config.vocab_size, batch=batch_size, visual_tokens=0, text_tokens=PROMPT_TOKENS,
                         seed=p.seed, device=device_of(target))
    specs = variants(config.num_hidden_layers, p)
    times = {label: [] for label, _, _ in specs}
    kv = {}
    for r in range(p.repeats + 1):
        order = specs[r % len(specs):] + specs[:r % len(specs)]
        for label, _, spec in order:
            ms, kv[label] = time_decode(target, spec, p, batch, context, sync)
            if r:  # round 0 warms up every variant
                times[label].append(ms)
    latency.reset(target.model)
    base_ms = statistics.median(times["base"])
    rows = []
    for label, kind, spec in specs:
        ms = statistics.median(times[label])
        bound = serving.ceiling(config, kind, spec.k, batch=batch_size, context=context, bytes_per=p.bytes_per)
        speedup = base_ms / ms
        expected = spec.k / config.num_hidden_layers if kind != "base" else 0.0
        rows.append({
            "shape": shape, "variant": label, "kind": kind, "k": spec.k, "batch": batch_size, "context": context,
            "decode_ms": ms, "decode_iqr_ms": _iqr(times[label]), "tokens_per_s": 1e3 * batch_size / ms,
            "speedup": speedup, **{key: bound[key] for key in ("bytes_bound", "flops_bound", "ceiling")},
            "ceiling_fraction": (speedup - 1) / (bound["ceiling"] - 1) if bound["ceiling"] > 1 else float("nan"),
            "kv_mb": kv[label] / 2**20, "kv_saving": 1 - kv[label] / kv["base"], "kv_saving_expected": expected,
            "kv_share_base": bound["kv_share_base"],
        })
    return rows


def run(p: ThroughputParams, progress: bool = True) -> pd.DataFrame:
    """The whole suite: every shape x batch x context (see the module docstring)."""
    rows = []
    configs = [(s, b, c) for s in p.shapes for b in p.batches for c in p.contexts]
    bar = tqdm(total=len(configs), desc="throughput", disable=not progress)
    for shape in p.shapes:
        model = random_llama(shape, seed=p.seed)
        target = CausalLMTarget(model)
        sync = make_sync(device_of(target))
        for b in p.batches:
            for c in p.contexts:
                bar.set_postfix_str(f"{shape} batch {b} context {c}")
                rows += run_config(target, shape, b, c, p, sync)
                bar.update()
        del model, target
        gc.collect()
    bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)


def budget_table(p: ThroughputParams, shapes=("llama-1b", "llava-1.5-7b"), context: int = 1024) -> pd.DataFrame:
    """Sequences of `context` tokens that fit each KV budget (fp16 caches), base vs EAS_k vs DAS_k, from shapes."""
    top = max(p.eas_ks)
    rows = []
    for shape in shapes:
        cfg = shape_config(shape)
        for gb in p.budgets_gb:
            rows.append({"shape": shape, "context": context, "budget_gb": gb, **{
                label: serving.sequences_per_budget(cfg, kind, k, context=context, budget_gb=gb)
                for label, kind, k in (("base", "base", 0), (f"EAS_{top}", "eas", top), (f"DAS_{p.das_k}", "das",
                                                                                          p.das_k))}})
    return pd.DataFrame(rows)


def largest(frame: pd.DataFrame, shape: str) -> pd.DataFrame:
    """The rows at a shape's largest batch x context: where the issue's targets are read."""
    part = frame[frame["shape"] == shape]
    b, c = part.batch.max(), part[part.batch == part.batch.max()].context.max()
    return part[(part.batch == b) & (part.context == c)].set_index("variant")


def verdict(frame: pd.DataFrame, shape: str, k: int, target_fraction: float = 0.8) -> str:
    """The targets at the shape's largest batch x context: EAS_k merged reaches `target_fraction` of its ceiling's
    gain (read with the run's timing noise), and its KV saving is within 2% of k/N."""
    rows = largest(frame, shape)
    eas, base = rows.loc[f"EAS_{k} merged"], rows.loc["base"]
    noise = (eas.decode_iqr_ms / eas.decode_ms + base.decode_iqr_ms / base.decode_ms) / 2
    low, high = (eas.speedup - 1 - noise * eas.speedup) / (eas.ceiling - 1), \
        (eas.speedup - 1 + noise * eas.speedup) / (eas.ceiling - 1)
    if low >= target_fraction:
        reach = "reaches"
    elif high < target_fraction:
        reach = "does not reach"
    else:
        reach = "cannot tell whether it reaches"
    kv_ok = abs(eas.kv_saving - eas.kv_saving_expected) <= 0.02
    return (f"At {shape}, batch {int(eas.batch)}, context {int(eas.context)}: EAS_{k} merged decodes "
            f"{eas.tokens_per_s:.0f} tokens/s against the base's {base.tokens_per_s:.0f} ({eas.speedup:.2f}x; "
            f"ceiling {eas.ceiling:.2f}x: bytes {eas.bytes_bound:.2f}x, FLOPs {eas.flops_bound:.2f}x), "
            f"{100 * eas.ceiling_fraction:.0f}% of the ceiling's gain (timing noise puts it in "
            f"[{100 * low:.0f}%, {100 * high:.0f}%]): it {reach} the {100 * target_fraction:.0f}% target. "
            f"Its KV cache is {100 * eas.kv_saving:.1f}% smaller than the base's (shapes: "
            f"{100 * eas.kv_saving_expected:.1f}%): {'within' if kv_ok else 'outside'} 2 points.")


def read_results(out=None) -> pd.DataFrame | None:
    """The last `make bench SUITE=throughput` table (data/results/bench/serving.csv), or None if it never ran."""
    path = (io.results_dir("bench") if out is None else Path(out)) / "serving.csv"
    return pd.read_csv(path) if path.exists() else None


def figure(frame: pd.DataFrame, k: int) -> plt.Figure:
    """Per shape: EAS_k merged's measured speed-up and its ceiling against batch x context, and tokens per second of
    every variant at the largest context."""
    shapes = list(dict.fromkeys(frame["shape"]))
    fig, axes = plt.subplots(len(shapes), 2, figsize=(13, 3.6 * len(shapes)), squeeze=False)
    for row, shape in zip(axes, shapes):
        part = frame[frame["shape"] == shape]
        eas = part[part.variant == f"EAS_{k} merged"].sort_values(["context", "batch"])
        labels = [f"{b}x{c}" for b, c in zip(eas.batch, eas.context)]
        x = np.arange(len(eas))
        row[0].plot(x, eas.speedup, "o-", label="measured")
        row[0].plot(x, eas.ceiling, "s--", label="ceiling (max of bytes, FLOPs)")
        row[0].plot(x, eas.bytes_bound, ":", color="grey", label="bytes bound")
        row[0].axhline(1, color="black", lw=0.8)
        row[0].set(xticks=x, xticklabels=labels, xlabel="batch x context", ylabel=f"EAS_{k} merged / base",
                   title=f"{shape}: speed-up and its ceiling")
        row[0].legend()
        widest = part[part.context == part.context.max()]
        for variant, g in widest.groupby("variant", sort=False):
            row[1].plot(g.batch, g.tokens_per_s, "o-", label=variant)
        row[1].set(xscale="log", yscale="log", xlabel="batch", ylabel="decode tokens / s",
                   title=f"{shape}: throughput at context {int(part.context.max())}")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    return fig
