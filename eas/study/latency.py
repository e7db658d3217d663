"""The latency suite: every method of Table 1 timed side by side, at several model scales.

One tidy table, one row per scale x method x k x batch (`LATENCY_COLUMNS`):

    prefill | decode per token | total at the fixed output length | per sample at the task's typical length,
    medians and IQRs from one interleaved `cost.compare` run (warm-up, rotated round-robin);
    FLOPs per sample counted by torch.utils.flop_counter and predicted analytically, with the change
    against the base model (Table 1's "+x G"); KV-cache bytes and CUDA peak memory; the ideal decode
    speed-up from the measured time of the removed modules (`cost.module_times`, ablation) and
    the fraction of it that the variant achieved.

Variants (`variant_specs`): base; LoRA (merged and unloaded: plain Linear layers again); Adapter
(sequential, unmerged); MAM (parallel adapter + prefix); DAS_k (k whole blocks replaced by adapters,
adapters on the kept blocks); skip-only_k (k MHAs removed, nothing added); EAS_k unmerged and merged.
EAS merged runs once per merge strategy (`LatencyParams.merge_strategies`, eas.method.reparam): the row of
`merge_strategy` is the primary one (Table 1, Fig. 4), the others are named `eas-merged[strategy] k=K`
and run at each scale's largest k only (`LatencyParams.strategies_at`; `strategies` compares them).
static_router is calibrated on the timed prompts, outside the clocks.
Every EAS merged row decodes as a deployed model would: its adaptation PIAs (prompt-independent) are
folded into q/k/v once per task (`reparam.fold_adaptation`), so no merged q/k/v copy is held or swapped.

Every row carries two ideal bounds from `cost.module_times`: per decode token (base minus the removed
modules' decode time) and per sample at `typical_tokens` (the same for prefill too; the ideal merge costs
nothing), with the fraction of each that the variant achieved; and the memory it decodes with, from tensor
sizes: weights + adapters + KV cache + what its merge allocates (`reparam.merge_bytes`; CUDA: `peak_mb`).
Which k modules are skipped does not change the cost: all skipping methods use the k layers before
the last (`timing_skip_set`), so DAS_k and EAS_k differ only in what they remove and add.

All variants live on ONE model that is reconfigured (attach / detach) right before each of its runs,
outside the clocks: thirteen deep copies of a 7B model would not fit on one GPU. Added modules are
freshly initialised each time; timing does not depend on their values. Untrained adapters have a
zero up-projection, so the merged LoRA (B = 0) leaves the base weights bit-identical.

Scales (`LatencyParams.scales`, chosen by the profile): "tiny" and "mini-llava" are the embedded
MiniLlava models with real ScienceQA-format prompts; any other name is a randomly initialised LLaMA of
an `eas.measure.shapes` shape (the scale's "shape", default its name) with a LLaVA-style prompt of
`visual_tokens` + `text_tokens` random ids. Per-scale settings override the global ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from eas import baselines
from eas.measure import cost
from eas.measure.shapes import llava_prompt, random_llama
from eas.method import reparam
from eas.method.pia import PIAConfig
from eas.method.skip import SkipSet, apply_skips
from eas.models import arch, causal_lm
from eas.models.mini_llava import Batch, MiniLlava, load_language_model
from eas.models.zoo import check_model_name, load_model
from eas.study import paper, runs
from eas.study.profiles import LatencyParams, ParameterError

METHODS = ("base", "lora", "adapter", "mam", "das", "skip-only", "eas-unmerged", "eas-merged")
SKIPPING = ("das", "skip-only", "eas-unmerged", "eas-merged")
MINI_LLAVA_SCALES = ("tiny", "mini-llava")
SCALE_KEYS = ("shape", "batches", "ks", "das_ks", "methods", "new_tokens", "repeats", "module_repeats", "dtype",
              "device", "visual_tokens", "text_tokens", "overrides")

LATENCY_COLUMNS = [
    "scale", "method", "k", "batch", "variant", "n_layers", "prompt_len", "new_tokens", "typical_tokens",
    "prefill_ms", "prefill_ms_iqr", "merge_ms", "decode_ms_per_token", "decode_ms_per_token_iqr",
    "total_ms", "total_ms_iqr", "ms_per_sample", "ms_per_sample_iqr", "task_ms_per_sample",
    "speedup", "decode_speedup",
    "gflops_counted", "gflops_analytic", "delta_gflops", "flops_rel_diff", "gflops_prefill", "gflops_decode",
    "kv_cache_mb", "peak_mb",
    "removed_ms", "ideal_speedup", "achieved_speedup", "achieved_fraction",
    "removed_prefill_ms", "ideal_ms_per_sample", "ideal_sample_speedup", "achieved_sample_speedup",
    "achieved_sample_fraction",
    "strategy", "primary", "merge_share_of_prefill", "merge_mb", "decode_memory_mb",
    "mha_ms", "ffn_ms", "attention_share",
    "repeats", "threads", "device", "dtype",
]

# Table 1 (LLaVA-7B, ScienceQA): FLOPs (G) and inference time per sample (s), from eas.study.paper.
PAPER_TABLE1 = paper.latency_table1()
PAPER_LAYERS = paper.LLAVA_7B_LAYERS  # LLaVA-7B's decoder depth: our k is the paper's k scaled by n_layers / 32
LABELS = {"base": "Base", "lora": "LoRA", "adapter": "Adapter", "mam": "MAM", "das": "DAS",
          "skip-only": "Skip-only", "eas-unmerged": "EAS (unmerged)", "eas-merged": "EAS"}


# ----------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Spec:
    """One timed configuration: a method, its number of skipped modules, and what it skips."""

    method: str
    k: int = 0
    skips: SkipSet = SkipSet()
    strategy: str | None = None  # EAS merged only: its merge strategy
    primary: bool = True         # False for the extra merge strategies of EAS merged

    @property
    def name(self) -> str:
        method = self.method if self.primary else f"{self.method}[{self.strategy}]"
        return f"{method} k={self.k}" if self.k else method



# ----------------------------------------------------------------------------- what is timed

def timing_skip_set(n_layers: int, k: int) -> SkipSet:
    if not 0 < k < n_layers - 1:
        raise ValueError(f"k={k} must be in 1..{n_layers - 2} for a {n_layers}-layer model")
    return SkipSet(mha=tuple(range(n_layers - 1 - k, n_layers - 1)))


def prompt_batches(model, batches: list[int], seed: int) -> dict[int, object]:
    """Real ScienceQA-format prompts (with images where they have them), one batch per size."""
    root = runs.prepare_task("scienceqa", {"train": 30, "val": 30, "test": max(max(batches), 30)}, seed)
    examples = runs.load_split("scienceqa", root, "test")
    model.cache_features(examples, progress=False)
    return {b: model.collate(examples[:b]) for b in batches}


def timing_model(name: str = "mini-llava", seed: int = 0):
    """The model to time, the one `name` says (eas.models.zoo names): SmolLM2 with an untrained projector for
    "mini-llava" (timing and the merge's exactness do not depend on the projector's values, so no alignment
    run is needed), the tiny random model, or a LLaVA-1.5 checkpoint loaded on its device (CUDA where there
    is one) in the dtype zoo.load_model picks."""
    check_model_name(name)
    if name == "mini-llava":
        lm, tokenizer = load_language_model()
        return MiniLlava(lm, tokenizer).eval().requires_grad_(False)
    return load_model(name, seed=seed, progress=False)


def variant_specs(n_layers: int, ks, das_ks, methods=METHODS, strategies=(), primary: str | None = None,
                  strategy_ks=None) -> list[Spec]:
    """Base first (the baseline), then each method; skipping methods once per k; EAS merged with the
    `primary` strategy (default PIAConfig's), then once per other strategy in `strategies`, at the ks in
    `strategy_ks` (default: every k)."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ParameterError(f"unknown latency methods {unknown}; expected a subset of {list(METHODS)}.")
    specs = [Spec("base")]
    for m in METHODS[1:]:
        if m not in methods:
            continue
        if m not in SKIPPING:
            specs.append(Spec(m))
            continue
        for k in (das_ks if m == "das" else ks):
            positions = timing_skip_set(n_layers, k).mha
            skips = SkipSet(layer=positions) if m == "das" else SkipSet(mha=positions)
            if m != "eas-merged":
                specs.append(Spec(m, k, skips))
                continue
            first = primary or PIAConfig.merge_strategy
            specs.append(Spec(m, k, skips, strategy=first))
            if strategy_ks is None or k in strategy_ks:
                specs += [Spec(m, k, skips, strategy=x, primary=False) for x in strategies if x != first]
    return specs


def pia_config(p: LatencyParams, strategy: str | None = None) -> PIAConfig:
    return PIAConfig(skip_hidden=p.skip_hidden, adapt_hidden=p.adapt_hidden,
                     merge_strategy=strategy or p.merge_strategy)


def reset(model) -> None:
    """Back to the plain base model: no merge, no method, no skips, no stale merge plan."""
    reparam.unfold_adaptation(model)  # also unmerges
    baselines.detach(model)
    apply_skips(model, SkipSet())
    model._eas_reparam_plan = None  # a new PIA may reuse a freed tensor's id: never match an old plan
    text = arch.text_model(model)
    if "peft_config" in text.__dict__:  # left by peft's inject; the next LoRA attach would warn about it
        del text.__dict__["peft_config"]


def configure(model, spec: Spec, p: LatencyParams, target=None, batch=None):
    """Put `spec`'s method on the (reset) model; returns the after_prefill hook (EAS merged) or None.
    A static router is calibrated on `batch` (run through `target`, default the model)."""
    reset(model)
    m = spec.method
    if m == "lora":
        baselines.attach_lora(model, baselines.LoRAConfig(r=p.lora_r))
        baselines.merge_lora(model, unload=True)  # merged: exactly the base model's modules
    elif m == "adapter":
        baselines.attach_adapter(model, baselines.AdapterConfig(hidden=p.adapter_hidden))
    elif m == "mam":
        baselines.attach_mam(model, baselines.MAMConfig(hidden=p.adapter_hidden, prefix_len=p.mam_prefix))
    elif m == "das":
        baselines.attach_das(model, baselines.DASConfig(layers=spec.skips.layer, layer_hidden=p.das_layer_hidden,
                                                        kept_hidden=p.adapter_hidden))
    elif m == "skip-only":
        apply_skips(model, spec.skips)
    elif m in ("eas-unmerged", "eas-merged"):
        baselines.attach_eas(model, baselines.EASConfig(mha=spec.skips.mha, pia=pia_config(p, spec.strategy)))
        if m == "eas-merged":
            if spec.strategy == "static_router":
                if batch is None:
                    raise ParameterError("the static_router strategy needs prompts to calibrate on.")
                reparam.calibrate_static_router(model, [batch], target=target)
            # Per task, after training, so not part of a timed run: the adaptation PIAs folded into q/k/v
            # as a deployed model holds them (no merged copies; the originals are kept for reset only and
            # are not counted), and the skip PIAs' merge plan.
            reparam.prepare_deployment(model, keep_originals=True)
            return reparam.merge_after_prefill
    model.requires_grad_(False)
    return None


def factories(target, specs: list[Spec], p: LatencyParams, batch=None) -> dict:
    """`cost.compare` variants: each reconfigures the shared model before its run."""
    model = causal_lm.model_of(target)

    def make(spec):
        def variant():
            return target, configure(model, spec, p, target, batch)
        return variant

    return {s.name: make(s) for s in specs}


# ----------------------------------------------------------------------------- analytic FLOPs

def analytic_variant_flops(config, spec: Spec, prompt_len: int, new_tokens: int, batch: int, p: LatencyParams, *,
                           visual_tokens: int = 0, vision_dim: int = 0) -> cost.FlopCount:
    """`cost.analytic_flops` of the backbone with the variant's skips, plus what the method adds.

    Added per token (2 FLOPs per weight of a matmul that runs on it): Adapter 2*(d h + h d) in every
    block; MAM the same for its parallel adapter plus attention over its prefix (4 P d_attn per kept
    attention); DAS 4 d h_layer per skipped block and 4 d h per kept one; EAS unmerged 2 d r + 2 (2 r + 2) d
    per skipped MHA (down1; up1 and up2 with their biases as one product, SkipPIA.forward) and 4 d a per
    kept one, plus down2 and the router on the prompt mean once per forward, and in prefill the prompt
    sum as a mask product (2 d per prompt token and skipped MHA). EAS merged decodes with merged weights
    of the base's shapes: nothing added in decode, except low_rank, which adds (n Wd1) B per skipped MHA
    (2 d r + 2 r 2 d_ff), and two_matrix,
    a second gate/up product (2 d 2 d_ff); its prefill is the unmerged one. The per-prompt merge (a few
    tiny products, an axpy that the counter does not see) is left at 0."""
    cfg = getattr(config, "text_config", None) or config
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * hd
    base = cost.analytic_flops(config, spec.skips, prompt_len, new_tokens, batch,
                                  visual_tokens=visual_tokens, vision_dim=vision_dim)
    m, k = spec.method, spec.k
    per_token, per_call, per_prompt_token = 0, 0, 0  # FLOPs per token position, forward call, prefill token
    if m == "adapter":
        per_token = L * 4 * d * p.adapter_hidden
    elif m == "mam":
        per_token = L * (4 * d * p.adapter_hidden + 4 * p.mam_prefix * d_attn)
    elif m == "das":
        per_token = k * 4 * d * p.das_layer_hidden + (L - k) * 4 * d * p.adapter_hidden
    elif m in ("eas-unmerged", "eas-merged"):
        r, a = p.skip_hidden, p.adapt_hidden
        per_token = k * (2 * d * r + 2 * (2 * r + 2) * d) + (L - k) * 4 * d * a
        per_call = k * (2 * d * r + 2 * d * 2)  # down2 and the router on the (B, 1, d) prompt mean
        per_prompt_token = k * 2 * d  # the prompt sum, prefill only
    T, steps = prompt_len, new_tokens - 1
    pre = batch * (T * (per_token + per_prompt_token) + per_call)
    dec = batch * steps * (per_token + per_call)
    if m == "eas-merged":
        f = cfg.intermediate_size
        merged = {"low_rank": 2 * d * p.skip_hidden + 2 * p.skip_hidden * 2 * f, "two_matrix": 2 * d * 2 * f}
        dec = batch * steps * k * merged.get(spec.strategy, 0)
    return cost.FlopCount(prefill=base.prefill + pre, merge=0, decode=base.decode + dec, batch_size=batch)


# ----------------------------------------------------------------------------- scales

def scale_settings(name: str, p: LatencyParams) -> dict:
    """The global settings with the scale's overrides; device "auto" is cuda when there is one."""
    own = dict(p.scales.get(name) or {})
    bad = sorted(set(own) - set(SCALE_KEYS))
    if bad:
        raise ParameterError(f"scale {name!r} sets unknown keys {bad}; expected a subset of {list(SCALE_KEYS)}.")
    s = {"shape": name, "batches": p.batches, "ks": p.ks, "das_ks": p.das_ks, "methods": p.methods,
         "new_tokens": p.new_tokens, "repeats": p.repeats, "module_repeats": p.module_repeats,
         "dtype": "float32", "device": "auto",
         "visual_tokens": 576, "text_tokens": 60, "overrides": {}, **own}
    if s["device"] == "auto":
        s["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if s["new_tokens"] < 2:
        raise ParameterError(f"scale {name!r}: new_tokens={s['new_tokens']} must be >= 2 (one decode step at least).")
    return s


def _to(batch: Batch, device) -> Batch:
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return Batch(move(batch.input_ids), move(batch.attention_mask), move(batch.prompt_mask),
                 move(batch.image_features), move(batch.labels))


def build_scale(name: str, s: dict, seed: int = 0):
    """(target, {batch size: Batch on the target's device}, vision info for the analytic count)."""
    dtype = getattr(torch, s["dtype"])
    device = torch.device(s["device"])
    if name in MINI_LLAVA_SCALES:
        model = timing_model(name, seed)
        batches = prompt_batches(model, list(s["batches"]), seed)
        model = model.to(device=device, dtype=dtype)
        vision = {"visual_tokens": model.num_visual_tokens, "vision_dim": model.vision_dim}
        return model, {b: _to(x, device) for b, x in batches.items()}, vision
    model = random_llama(s["shape"], dtype, device, seed=seed, **s["overrides"])
    batches = {b: llava_prompt(model.config.vocab_size, batch=b, visual_tokens=s["visual_tokens"],
                               text_tokens=s["text_tokens"], seed=seed, device=device) for b in s["batches"]}
    return causal_lm.CausalLMTarget(model), batches, {"visual_tokens": 0, "vision_dim": 0}


# ----------------------------------------------------------------------------- the suite

def _rows_for_batch(scale, s, target, batch, specs, p, vision, progress) -> list[dict]:
    model = causal_lm.model_of(target)
    b, new_tokens = len(batch), s["new_tokens"]
    reset(model)
    times = cost.module_times(target, batch, new_tokens, repeats=s["module_repeats"], warmup=p.warmup)
    if progress:
        print(f"latency[{scale}]: batch {b}, prompt {batch.input_ids.shape[1]}, {len(specs)} variants x "
              f"{s['repeats']} interleaved repeats", flush=True)
    df = cost.compare(factories(target, specs, p, batch), batch, new_tokens, repeats=s["repeats"],
                         baseline="base", warmup=p.warmup)
    counted, memory = {}, {}
    for spec in specs:  # FLOPs and memory: one untimed, instrumented run per variant
        hook = configure(model, spec, p, target, batch)
        weights, merge = cost.param_bytes(target), []
        counted[spec.name] = cost.counted_flops(target, batch, new_tokens, _recording(hook, merge))
        memory[spec.name] = (weights, merge[0] if merge else 0)
    reset(model)
    config = arch.text_config(model)
    T = batch.input_ids.shape[1]
    base_g = counted["base"].gflops_per_sample
    base_dec = float(df.loc["base", "decode_ms_per_token"])
    typ = p.typical_tokens
    base_task = cost.sample_ms(df.loc["base", "prefill_ms"], 0.0, base_dec, typ)
    mha, ffn = sum(times.mha_ms), sum(times.ffn_ms)
    rows = []
    for spec in specs:
        r = df.loc[spec.name]
        c = counted[spec.name]
        a = analytic_variant_flops(config, spec, T, new_tokens, b, p, **(vision if batch.image_features is not None
                                                                          else {}))
        removed = times.removed_ms(spec.skips)
        ideal = cost.ideal_speedup(base_dec, removed) if 0 < removed < base_dec else (
            1.0 if removed == 0 else float("inf"))
        task_ms = cost.sample_ms(r.prefill_ms, r.merge_ms, r.decode_ms_per_token, typ)
        removed_task = times.removed_prefill_ms(spec.skips) + removed * (typ - 1)
        ideal_task = base_task - removed_task  # the ideal merge costs nothing
        weights, merge_bytes = memory[spec.name]
        rows.append({
            "scale": scale, "method": spec.method, "k": spec.k, "batch": b, "variant": spec.name,
            "n_layers": arch.num_layers(model), "prompt_len": T, "new_tokens": new_tokens,
            "typical_tokens": p.typical_tokens,
            "prefill_ms": r.prefill_ms, "prefill_ms_iqr": r.prefill_ms_iqr, "merge_ms": r.merge_ms,
            "decode_ms_per_token": r.decode_ms_per_token, "decode_ms_per_token_iqr": r.decode_ms_per_token_iqr,
            "total_ms": r.total_ms, "total_ms_iqr": r.total_ms_iqr,
            "ms_per_sample": r.ms_per_sample, "ms_per_sample_iqr": r.total_ms_iqr / b,
            "task_ms_per_sample": task_ms / b, "speedup": r.speedup, "decode_speedup": r.decode_speedup,
            "gflops_counted": c.gflops_per_sample, "gflops_analytic": a.gflops_per_sample,
            "delta_gflops": c.gflops_per_sample - base_g,
            "flops_rel_diff": c.total / a.total - 1.0,
            "gflops_prefill": c.prefill / b / 1e9, "gflops_decode": (c.merge + c.decode) / b / 1e9,
            "kv_cache_mb": r.kv_cache_bytes / 2**20,
            "peak_mb": None if pd.isna(r.peak_bytes) or r.peak_bytes is None else r.peak_bytes / 2**20,
            "removed_ms": removed, "ideal_speedup": ideal, "achieved_speedup": base_dec / r.decode_ms_per_token,
            "achieved_fraction": cost.achieved_fraction(base_dec, r.decode_ms_per_token, removed)
            if removed > 0 else float("nan"),
            "removed_prefill_ms": times.removed_prefill_ms(spec.skips), "ideal_ms_per_sample": ideal_task / b,
            "ideal_sample_speedup": base_task / ideal_task if ideal_task > 0 else float("inf"),
            "achieved_sample_speedup": base_task / task_ms,
            "achieved_sample_fraction": (base_task - task_ms) / removed_task if removed_task > 0 else float("nan"),
            "strategy": spec.strategy, "primary": spec.primary, "merge_share_of_prefill": r.merge_ms / r.prefill_ms,
            "merge_mb": merge_bytes / 2**20, "decode_memory_mb": (weights + merge_bytes + r.kv_cache_bytes) / 2**20,
            "mha_ms": mha / len(times.mha_ms), "ffn_ms": ffn / len(times.ffn_ms),
            "attention_share": mha / times.base_decode_ms,
            "repeats": r.repeats, "threads": r.threads, "device": r.device, "dtype": s["dtype"],
        })
    return rows


def _recording(hook, out: list):
    """`hook`, also recording into `out` the bytes its merge holds while decoding (reparam.merge_bytes)."""
    if hook is None:
        return None

    def merge(model, batch):
        undo = hook(model, batch)
        out.append(reparam.merge_bytes(model))
        return undo
    return merge


def run_scale(scale: str, p: LatencyParams, progress: bool = True) -> pd.DataFrame:
    """Every variant of one scale, at each of its batch sizes (one interleaved run per batch size)."""
    s = scale_settings(scale, p)
    torch.manual_seed(p.seed)
    target, batches, vision = build_scale(scale, s, p.seed)
    specs = variant_specs(arch.num_layers(causal_lm.model_of(target)), s["ks"], s["das_ks"], s["methods"],
                          strategies=p.merge_strategies, primary=p.merge_strategy,
                          strategy_ks=[max(s["ks"])] if p.strategies_at == "largest_k" else None)
    rows = []
    try:
        for b in s["batches"]:
            rows += _rows_for_batch(scale, s, target, batches[b], specs, p, vision, progress)
    finally:
        del target
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return pd.DataFrame(rows, columns=LATENCY_COLUMNS)


def run(p: LatencyParams, progress: bool = True) -> pd.DataFrame:
    """The whole suite: every scale the profile names, one after another (one model in memory at a time)."""
    if p.threads:
        torch.set_num_threads(p.threads)
    return pd.concat([run_scale(name, p, progress) for name in p.scales], ignore_index=True)


def scale_params(p: LatencyParams, scale: str) -> dict:
    """What one scale's rows depend on (a results-cache key): the scale's settings and the method sizes."""
    s = scale_settings(scale, p)
    keep = ("typical_tokens", "warmup", "skip_hidden", "adapt_hidden", "merge_strategy", "merge_strategies",
            "strategies_at",
            "adapter_hidden", "das_layer_hidden", "lora_r", "mam_prefix", "seed")
    return {"scale": scale, **s, **{k: getattr(p, k) for k in keep}, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- views

def _nearest(available, target: float) -> int | None:
    available = sorted(set(int(k) for k in available))
    if not available:
        return None
    return min(available, key=lambda k: (abs(k - target), -k))  # ties go to the larger k


def primary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per method, k and batch: EAS merged with its primary strategy only."""
    return frame[frame.primary.fillna(True).astype(bool)] if "primary" in frame else frame


def table1(frame: pd.DataFrame, scale: str, batch: int = 1) -> pd.DataFrame:
    """Table 1's FLOPs and time columns for one scale, in the paper's rows, beside the paper's values.

    The paper's k (out of 32 layers) is mapped to the nearest k we ran at k * n_layers / 32."""
    frame = primary(frame)
    part = frame[(frame.scale == scale) & (frame.batch == batch)]
    n = int(part.n_layers.iloc[0])
    base = part[part.method == "base"].iloc[0]
    paper_base_g, paper_base_s = paper.table1_base()
    rows, seen = [], set()
    for (method, pk), (paper_g, paper_s) in PAPER_TABLE1.items():
        cand = part[part.method == method]
        if cand.empty:
            continue
        k = _nearest(cand.k, pk * n / PAPER_LAYERS) if pk else 0
        if (method, k) in seen:  # two of the paper's k map to one of ours on a shallower model: one row
            continue
        seen.add((method, k))
        r = cand[cand.k == k].iloc[0]
        paper_label = LABELS[method] + (f"_{pk}" if pk else "")
        rows.append({
            "paper_row": paper_label if method != "base" else "LLaVA-7B",
            "ours": LABELS[method] + (f"_{k}" if k else ""),
            "gflops": r.gflops_counted, "flops_label": f"{r.gflops_counted:.2f}G ({r.delta_gflops:+.2f}G)",
            "flops_vs_base": r.gflops_counted / base.gflops_counted,
            "ms_per_sample": r.task_ms_per_sample, "time_vs_base": r.task_ms_per_sample / base.task_ms_per_sample,
            "time_noise": cost.decode_noise(r),
            "merge_share": r.merge_ms / batch / r.task_ms_per_sample,  # the per-prompt merge, EAS only
            "paper_flops_label": f"{paper_g:.1f}G ({paper_g - paper_base_g:+.1f}G)",
            "paper_flops_vs_base": paper_g / paper_base_g,
            "paper_s_per_sample": paper_s, "paper_time_vs_base": paper_s / paper_base_s,
        })
    return pd.DataFrame(rows).set_index("paper_row")


def _noise_band(t1: pd.DataFrame, *rows) -> float:
    """Two time ratios closer than this are a tie: the larger relative IQR of the rows (and of the base)."""
    return float(max(t1.loc[list(rows), "time_noise"].max(), t1.iloc[0].time_noise))


def table1_verdict(t1: pd.DataFrame) -> str:
    """Sentences on the paper's timing claims, each verdict computed from `table1`'s rows and their noise."""
    eas_rows = [i for i in t1.index if i.startswith("EAS")]
    petl = [i for i in t1.index if i.startswith(("LoRA", "Adapter", "MAM", "DAS"))]
    if not eas_rows or not petl:
        return "Not enough methods ran to check Table 1's timing claim."
    fastest = t1.loc[petl, "time_vs_base"].idxmin()
    fastest_other = t1.loc[fastest, "time_vs_base"]
    eas_best = t1.loc[eas_rows, "time_vs_base"]
    band = _noise_band(t1, *eas_rows, fastest)
    if (eas_best < fastest_other - band).all() and (eas_best < 1 - band).all():
        status = "holds"
    elif (eas_best > fastest_other + band).any() or (eas_best > 1 + band).any():
        status = "does NOT hold"
    else:
        status = "is within timing noise"
    parts = [f"**Claim: EAS is faster than the base model and every PETL method** -- {status} here: "
             + ", ".join(f"{t1.loc[i, 'ours']} {t1.loc[i, 'time_vs_base']:.2f}x of base" for i in eas_rows)
             + f" vs the fastest other method ({t1.loc[fastest, 'ours']}) at {fastest_other:.2f}x, timing noise "
             f"+/-{band:.2f} (paper: " + ", ".join(f"{i} {t1.loc[i, 'paper_time_vs_base']:.2f}x" for i in eas_rows)
             + "). The per-prompt merge takes " + ", ".join(f"{100 * t1.loc[i, 'merge_share']:.1f}%"
                                                         for i in eas_rows)
             + " of EAS's time per sample: an axpy over each skipped layer's FFN weights, whose cost follows "
             "memory bandwidth rather than arithmetic (chapter 5)."]
    if "Adapter" in t1.index:
        a = t1.loc["Adapter"]
        d_flops, d_time = a.flops_vs_base - 1, a.time_vs_base - 1
        band = _noise_band(t1, "Adapter")
        status = ("holds" if d_time > d_flops + band else "does NOT hold" if d_time < d_flops - band
                  else "is within timing noise")
        parts.append(
            f" **Claim: an adapter costs a larger share of time than of FLOPs** -- {status} here: Adapter adds "
            f"{100 * d_flops:+.2f}% FLOPs and {100 * d_time:+.1f}% time (noise +/-{100 * band:.1f}%; paper: "
            f"{100 * (a.paper_flops_vs_base - 1):+.2f}% FLOPs, {100 * (a.paper_time_vs_base - 1):+.1f}% time). "
            "A sequential adapter is a few small, dependent matmuls per block: where each op is cheap (a GPU at "
            "batch 1) their dispatch overhead, not their arithmetic, sets their cost; where the large matmuls "
            "dominate (a CPU) they cost about what their FLOPs say.")
    das = [i for i in t1.index if i.startswith("DAS")]
    if das:
        d = t1.loc[das[0]]
        saved_flops, saved_time = 1 - d.flops_vs_base, 1 - d.time_vs_base
        band = _noise_band(t1, das[0])
        gave_back = ("so its adapters on every kept block give part of the saving back"
                     if saved_time < saved_flops - band else
                     "so its time falls at least as much as its FLOPs" if saved_time > saved_flops + band else
                     "so its time and FLOPs fall alike (within noise)")
        parts.append(f" {d.ours} removes {100 * saved_flops:.1f}% of the FLOPs and {100 * saved_time:.1f}% of the "
                     f"time (paper: {100 * (1 - d.paper_time_vs_base):.1f}% of the time), {gave_back}.")
    return "".join(parts)


def das_vs_eas(frame: pd.DataFrame, scale: str, batch: int = 1) -> pd.DataFrame:
    """Fig. 4's comparison: time per sample against the number of skipped modules, DAS vs EAS."""
    frame = primary(frame)
    part = frame[(frame.scale == scale) & (frame.batch == batch) & frame.method.isin(SKIPPING)]
    base = frame[(frame.scale == scale) & (frame.batch == batch) & (frame.method == "base")].iloc[0]
    out = part.pivot_table(index="k", columns="method", values="task_ms_per_sample")
    return out.assign(base=base.task_ms_per_sample)


def das_vs_eas_verdict(fig4: pd.DataFrame) -> str:
    if not {"das", "eas-merged"} <= set(fig4.columns):
        return "DAS or EAS (merged) did not run: no Fig. 4 comparison."
    common = fig4[["das", "eas-merged"]].dropna()
    if common.empty:
        return "DAS and EAS share no k here: no like-for-like Fig. 4 comparison."
    faster = 100 * (common.das / common["eas-merged"] - 1)
    holds = bool((faster > 0).all())
    low, high = paper.TEXT["eas_vs_das_faster_pct"].value
    return (f"**Claim: at the same number of skipped modules EAS is faster than DAS (paper: by {low:.0f}-{high:.0f}%)"
            f"** -- {'holds' if holds else 'does NOT hold'} here: DAS takes "
            + ", ".join(f"{v:+.1f}% (k={k})" for k, v in faster.items())
            + " relative to EAS merged. DAS removes a whole block (MHA and FFN) per k, EAS only the MHA, so "
            "on FLOPs DAS should win at equal k; the paper's gap comes from DAS's adapter branches, which "
            "EAS folds into the weights after prefill.")


def ideal_vs_achieved(frame: pd.DataFrame) -> pd.DataFrame:
    """Per skipping variant: the ideal and achieved speed-ups per decode token and per sample."""
    part = frame[frame.method.isin(SKIPPING)]
    cols = ["scale", "batch", "method", "k", "variant", "removed_ms", "ideal_speedup", "achieved_speedup",
            "achieved_fraction", "ideal_sample_speedup", "achieved_sample_speedup", "achieved_sample_fraction"]
    return part[[c for c in cols if c in part]].reset_index(drop=True)


def strategies(frame: pd.DataFrame) -> pd.DataFrame:
    """EAS merged per merge strategy beside skip-only (its floor) and base, per scale, batch and k.

    decode_vs_skip_only and memory_vs_skip_only: 1 is the floor (the merge leaves nothing behind);
    speedup: base's time per sample (prefill + merge + decode at typical_tokens) over the row's."""
    rows = []
    for (scale, b), part in frame.groupby(["scale", "batch"]):
        base = part[part.method == "base"].iloc[0]
        for k, g in part[part.method == "eas-merged"].groupby("k"):
            skip = part[(part.method == "skip-only") & (part.k == k)]
            skip = skip.iloc[0] if len(skip) else None
            for r in g.itertuples():
                rows.append({
                    "scale": scale, "batch": b, "k": k, "strategy": r.strategy, "primary": r.primary,
                    "decode_ms_per_token": r.decode_ms_per_token, "task_ms_per_sample": r.task_ms_per_sample,
                    "time_noise": cost.decode_noise(r),
                    "speedup": base.task_ms_per_sample / r.task_ms_per_sample,
                    "decode_vs_skip_only": r.decode_ms_per_token / skip.decode_ms_per_token if skip is not None
                    else float("nan"),
                    "merge_ms": r.merge_ms, "merge_share_of_prefill": r.merge_share_of_prefill,
                    "merge_mb": r.merge_mb, "decode_memory_mb": r.decode_memory_mb,
                    "memory_vs_skip_only": r.decode_memory_mb / skip.decode_memory_mb if skip is not None
                    else float("nan"),
                    "ideal_sample_speedup": r.ideal_sample_speedup,
                    "achieved_sample_fraction": r.achieved_sample_fraction,
                })
    return pd.DataFrame(rows)


def best_strategy(frame: pd.DataFrame) -> pd.DataFrame:
    """Per scale and batch: the strategy with the lowest time per sample at the largest k, and by how much
    it beats the paper's per-example merge (> 1: faster) and the runner-up. `resolved` is False where the
    margin over the runner-up is within the two rows' timing noise (their larger relative decode IQR):
    then the run cannot tell the two apart."""
    st = strategies(frame)
    rows = []
    for (scale, b), g in st.groupby(["scale", "batch"]):
        g = g[g.k == g.k.max()].set_index("strategy").sort_values("task_ms_per_sample")
        best = g.index[0]
        ref = g.task_ms_per_sample.get("per_example", float("nan"))
        second = g.index[1] if len(g) > 1 else None
        margin = g.task_ms_per_sample.iloc[1] / g.task_ms_per_sample.iloc[0] - 1 if second else float("nan")
        noise = float(g.time_noise.iloc[:2].max())
        rows.append({"scale": scale, "batch": b, "k": int(g.k.iloc[0]), "best": best,
                     "best_speedup_vs_base": g.loc[best, "speedup"],
                     "best_vs_per_example": ref / g.loc[best, "task_ms_per_sample"],
                     "runner_up": second, "margin": margin, "noise": noise,
                     "resolved": bool(second) and margin > noise})
    return pd.DataFrame(rows)


def attention_share(frame: pd.DataFrame) -> pd.DataFrame:
    """Per scale and batch: one MHA's and one FFN's decode time, the attention share, MHA / FFN."""
    part = frame[frame.method == "base"]
    out = part[["scale", "batch", "device", "mha_ms", "ffn_ms", "attention_share"]].copy()
    out["mha_over_ffn"] = out.mha_ms / out.ffn_ms
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------- plots

def plot_methods(frame: pd.DataFrame, scale: str, batch: int = 1, ax=None):
    """Fig. 1a's analog: time per sample of each method (bars), FLOPs change in the labels."""
    import matplotlib.pyplot as plt

    t1 = table1(frame, scale, batch)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    colors = ["grey" if i == "LLaVA-7B" else "tab:green" if i.startswith("EAS") else "tab:blue" for i in t1.index]
    ax.bar(t1.ours, t1.time_vs_base, color=colors)
    ax.plot(t1.ours, t1.paper_time_vs_base, "k_", markersize=22, mew=2, label="paper (LLaVA-7B, GPU)")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(ylabel="time per sample / base", title=f"{scale}, batch {batch}: latency of PETL methods and EAS")
    ax.legend(loc="upper right", fontsize=8)
    return ax.figure


def plot_das_vs_eas(frame: pd.DataFrame, scale: str, batch: int = 1, ax=None):
    """Fig. 4's analog: time per sample as the number of skipped modules grows."""
    import matplotlib.pyplot as plt

    fig4 = das_vs_eas(frame, scale, batch)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    styles = {"das": "o-", "skip-only": "x:", "eas-unmerged": "s--", "eas-merged": "^-"}
    for m, st in styles.items():
        if m in fig4:
            col = fig4[m].dropna()
            ax.plot(col.index, col.values, st, label=LABELS[m])
    ax.axhline(fig4.base.iloc[0], color="grey", ls=":", label="base")
    ax.set(xlabel="skipped modules (k)", ylabel="ms per sample", title=f"{scale}, batch {batch}: DAS vs EAS")
    ax.legend(fontsize=8)
    return ax.figure


def plot_ideal_vs_achieved_per_sample(frame: pd.DataFrame, k: int | None = None):
    """One panel per scale and batch: per-sample speed-up over base, ideal (bar outline) and achieved (bar),
    for each skipping variant at the largest k (or `k`)."""
    import matplotlib.pyplot as plt

    part = frame[frame.method.isin(SKIPPING)]
    groups = list(part.groupby(["scale", "batch"]))
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.2 * max(len(groups), 1), 3.4), squeeze=False)
    for ax, ((scale, b), g) in zip(axes[0], groups):
        g = g[g.k == (k if k is not None and k in set(g.k) else g.k.max())]
        x = range(len(g))
        ax.bar(x, g.ideal_sample_speedup, color="none", edgecolor="k", lw=1.0, label="ideal")
        ax.bar(x, g.achieved_sample_speedup, color="tab:green", alpha=0.7, label="achieved")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(list(x), [v.rsplit(" k=", 1)[0] for v in g.variant], rotation=40, ha="right", fontsize=7)
        ax.set(title=f"{scale}, batch {b}, k={int(g.k.iloc[0])}", ylabel="time per sample: base / variant")
        lo = min(g.achieved_sample_speedup.min(), 1.0)
        ax.set_ylim(0.9 * lo, 1.05 * max(g.ideal_sample_speedup.replace(np.inf, np.nan).max(), 1.0))
        ax.legend(fontsize=7)
    return fig


def plot_ideal_vs_achieved(frame: pd.DataFrame, ax=None):
    import matplotlib.pyplot as plt

    part = ideal_vs_achieved(frame)
    part = part[np.isfinite(part.ideal_speedup)]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4))
    for (scale, method), g in part.groupby(["scale", "method"]):
        ax.scatter(g.ideal_speedup, g.achieved_speedup, label=f"{scale} {LABELS[method]}", s=18)
    if len(part):
        lo = min(part.ideal_speedup.min(), part.achieved_speedup.min(), 1.0)
        hi = max(part.ideal_speedup.max(), part.achieved_speedup.max(), 1.0)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="ideal decode speed-up", ylabel="achieved decode speed-up", title="ideal vs achieved")
    ax.legend(fontsize=7)
    return ax.figure


def save_plots(frame: pd.DataFrame, out_dir) -> list:
    """The three figures for every scale at its smallest batch, as PNGs next to the CSV."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    for scale in frame.scale.unique():
        b = int(frame[frame.scale == scale].batch.min())
        for name, fn in (("methods", plot_methods), ("das_vs_eas", plot_das_vs_eas)):
            fig = fn(frame, scale, b)
            fig.tight_layout()
            paths.append(out_dir / f"latency_{name}_{scale}.png")
            fig.savefig(paths[-1], dpi=110)
            plt.close(fig)
    fig = plot_ideal_vs_achieved(frame)
    fig.tight_layout()
    paths.append(out_dir / "latency_ideal_vs_achieved.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths

