"""Measuring what skipping buys: latency (prefill / merge / decode), FLOPs, memory, ideal vs achieved.

Everything here works on a *generation target*: an object with

    forward(input_ids, attention_mask, image_features=None, cache=None, use_cache=False)
        -> (final hidden states of the new tokens, cache)
    lm_head, eos_token_id

`MiniLlava` is one; `CausalLMTarget(model)` makes a plain HF causal LM (e.g. a random true-scale LLaMA
from `eas.measure.shapes`) into one, so the same code times the 135M test model and LLaVA-1.5-7B's shape.
Generation goes through `eas.models.generate.prefill` / `decode_step`, the code the evaluation uses.

Timing rules (DESIGN.md section 4): prefill and decode are timed separately, the PIA merge between them
(`after_prefill`) on its own clock; every run generates exactly `new_tokens` tokens (EOS ignored); runs
are warmed up; medians with quartiles are reported; on CUDA the device is synchronised before each clock
read. Variants are compared *interleaved* in one process (`compare`), and reported as ratios to a baseline,
so that drift on a shared machine (other jobs, thermal state) hits every variant alike.

FLOPs: `torch.utils.flop_counter` counts matmul-like ops (mm/bmm/addmm/attention), 2 FLOPs per
multiply-add. Elementwise work (norms, rotary, SiLU, softmax) is not counted, by the counter or by
`analytic_flops`. The paper's tables most likely count multiply-adds (fvcore's convention): divide by 2
to compare (`FlopCount.gmacs_per_sample`).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch

from eas.method.skip import SkipSet, apply_skips, current_skips, eas_blocks, kv_cache_bytes
from eas.models import arch
from eas.models.causal_lm import device_of, model_of
from eas.models.generate import decode_step, prefill
from eas.models.mini_llava import Batch


def make_sync(device: torch.device) -> Callable[[], None]:
    # Kernels run asynchronously on a GPU: without a synchronise, a clock read measures launch time only.
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# ----------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """Per-repeat times (ms) of one generation setting, after warm-up."""

    prefill_ms: list[float]
    merge_ms: list[float]
    decode_ms_per_token: list[float]  # decode steps only (new_tokens - 1 of them); the first token is prefill's
    total_ms: list[float]             # prefill + merge + decode, per batch
    batch_size: int
    prompt_len: int
    new_tokens: int
    generated: int                    # tokens each row actually produced (== new_tokens: EOS is ignored)
    device: str
    kv_cache_bytes: int               # after prefill + decode
    peak_bytes: int | None = None     # CUDA: peak allocated during a run, above what was allocated before
    threads: int = 0                  # torch intra-op threads (CPU timings depend on it; see time_generation)
    metrics: ClassVar[tuple] = ("prefill_ms", "merge_ms", "decode_ms_per_token", "total_ms")

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(self, name)))

    def quartiles(self, name: str) -> tuple[float, float]:
        q1, q3 = np.percentile(getattr(self, name), [25, 75])
        return float(q1), float(q3)

    def summary(self) -> dict:
        """Medians, IQRs and min/max of every metric, plus the per-sample total (the paper's 'time per sample')."""
        out = {}
        for m in self.metrics:
            q1, q3 = self.quartiles(m)
            vals = getattr(self, m)
            out[m] = self.median(m)
            out[f"{m}_iqr"] = q3 - q1
            out[f"{m}_min"], out[f"{m}_max"] = float(min(vals)), float(max(vals))
        out["ms_per_sample"] = out["total_ms"] / self.batch_size
        out.update(batch_size=self.batch_size, prompt_len=self.prompt_len, new_tokens=self.new_tokens,
                   repeats=len(self.total_ms), kv_cache_bytes=self.kv_cache_bytes, peak_bytes=self.peak_bytes,
                   device=self.device, threads=self.threads)
        return out


@dataclass
class _Run:
    prefill_ms: float
    merge_ms: float
    decode_ms: float
    generated: int
    kv_bytes: int
    peak_bytes: int | None


@torch.no_grad()
def _run_once(target, batch: Batch, new_tokens: int, after_prefill, sync) -> _Run:
    """One fixed-length greedy generation with three clocks: prefill | after_prefill | decode."""
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}.")
    device = device_of(target)
    batch = batch.to(device)
    gc.collect()  # a collection inside the timed region would be charged to whichever variant ran then
    cuda = device.type == "cuda"
    if cuda:
        sync()
        base_mem = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    token, cache = prefill(target, batch)
    sync()
    t1 = time.perf_counter()
    undo = after_prefill(model_of(target), batch) if after_prefill is not None else None
    sync()
    t2 = time.perf_counter()
    try:
        mask = batch.attention_mask
        generated = 1
        for _ in range(new_tokens - 1):  # no EOS check: every run decodes the same number of steps
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            token, cache = decode_step(target, token, mask, cache)
            generated += 1
        sync()
        t3 = time.perf_counter()
    finally:
        if callable(undo):
            undo()
    peak = torch.cuda.max_memory_allocated(device) - base_mem if cuda else None
    steps = new_tokens - 1
    return _Run(
        prefill_ms=(t1 - t0) * 1e3, merge_ms=(t2 - t1) * 1e3,
        decode_ms=(t3 - t2) * 1e3 / steps if steps else float("nan"),
        generated=generated, kv_bytes=kv_cache_bytes(cache), peak_bytes=peak,
    )


def _timing(runs: list[_Run], batch: Batch, new_tokens: int, device) -> Timing:
    return Timing(
        prefill_ms=[r.prefill_ms for r in runs], merge_ms=[r.merge_ms for r in runs],
        decode_ms_per_token=[r.decode_ms for r in runs],
        total_ms=[r.prefill_ms + r.merge_ms + r.decode_ms * max(new_tokens - 1, 0) for r in runs],
        batch_size=len(batch), prompt_len=batch.input_ids.shape[1], new_tokens=new_tokens,
        generated=runs[-1].generated, device=str(device), kv_cache_bytes=runs[-1].kv_bytes,
        peak_bytes=max(r.peak_bytes for r in runs) if runs[-1].peak_bytes is not None else None,
        threads=torch.get_num_threads(),
    )


def time_generation(target, batch: Batch, new_tokens: int, *, warmup: int = 1, repeats: int = 5,
                    after_prefill: Callable | None = None, sync: Callable[[], None] | None = None) -> Timing:
    """Time `repeats` fixed-length greedy generations (after `warmup` untimed ones).

    `after_prefill(model, batch)` (e.g. eas.method.reparam.merge_after_prefill) runs between prefill and the
    first decode step on its own clock; a callable it returns (the unmerge) runs after decoding, untimed.
    The batch must already be on the target's device.

    CPU: peak memory is not reported (None). RSS peaks (`resource.ru_maxrss`) only ever grow over the
    process's life and torch's CPU allocator returns memory lazily, so a per-run delta would be noise;
    use `kv_cache_bytes` and `param_bytes` there. On a CPU shared with other jobs, set
    torch.set_num_threads to the cores actually free: oversubscribed OpenMP threads spin at every
    barrier and made a tiny model's forward ~500x slower (1 s instead of 2 ms) on the 2-core dev box."""
    if new_tokens < 2:
        raise ValueError("new_tokens must be >= 2: with 1 token there is no decode step to time.")
    device = device_of(target)
    sync = sync or make_sync(device)
    runs = [_run_once(target, batch, new_tokens, after_prefill, sync) for _ in range(warmup + repeats)]
    return _timing(runs[warmup:], batch, new_tokens, device)


Variant = Callable[[], tuple]  # () -> (target, after_prefill or None)


def compare(variants: dict[str, Variant], batch: Batch, new_tokens: int, repeats: int = 5, *,
            baseline: str | None = None, warmup: int = 1, schedule_out: list | None = None):
    """Time several variants interleaved; one row per variant with medians, IQRs and speed-ups.

    Each repeat runs every variant once, round-robin, with the starting variant rotated from repeat to
    repeat, so a slow phase of a shared machine (and any "runs second" effect) is spread over all of them.
    A variant is a factory called right before each of its runs (outside the clocks); it may set up a
    shared model (e.g. `apply_skips`) and must be cheap -- build heavy models once, outside.

    Speed-ups are baseline / variant (> 1 is faster), from the medians; `baseline` defaults to the first.
    The run order is returned in `df.attrs["schedule"]` (and appended to `schedule_out`)."""
    import pandas as pd

    names = list(variants)
    if not names:
        raise ValueError("compare needs at least one variant.")
    baseline = baseline or names[0]
    if baseline not in variants:
        raise KeyError(f"baseline {baseline!r} is not one of the variants {names}.")
    if new_tokens < 2:
        raise ValueError("new_tokens must be >= 2: with 1 token there is no decode step to time.")
    runs: dict[str, list[_Run]] = {n: [] for n in names}
    schedule = []
    devices = {}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            target, hook = variants[name]()
            devices[name] = device_of(target)
            run = _run_once(target, batch, new_tokens, hook, make_sync(devices[name]))
            schedule.append(name)
            if r >= warmup:
                runs[name].append(run)
    rows = []
    for name in names:
        s = _timing(runs[name], batch, new_tokens, devices[name]).summary()
        rows.append({"variant": name, **s})
    df = pd.DataFrame(rows).set_index("variant")
    base = df.loc[baseline]
    for m, col in (("prefill_ms", "prefill_speedup"), ("decode_ms_per_token", "decode_speedup"),
                   ("total_ms", "speedup")):
        df[col] = base[m] / df[m]
    df["time_change_pct"] = 100.0 * (df["total_ms"] / base["total_ms"] - 1.0)
    df["kv_cache_ratio"] = df["kv_cache_bytes"] / base["kv_cache_bytes"]
    df.attrs["schedule"] = schedule
    df.attrs["baseline"] = baseline
    if schedule_out is not None:
        schedule_out.extend(schedule)
    return df


def decode_noise(timing):
    """A timing row's (or a compare() frame's) noise: decode dominates the time per sample, so the relative
    IQR of its decode time. Two ratios closer than this are a tie."""
    return timing.decode_ms_per_token_iqr / timing.decode_ms_per_token


# ----------------------------------------------------------------------------- FLOPs

def _attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """scores (Tq x Tk per head) + weighted values, counted on the query heads (GQA shares K/V, not work)."""
    b, h, tq, d = query_shape
    tk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * tq * tk * d + 2 * b * h * tq * tk * dv


def _flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    # torch's registry covers the CUDA attention kernels but not the CPU flash kernel that SDPA uses
    # here: without this entry every attention on a CPU would count as 0 FLOPs.
    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = _attention_flop
    return FlopCounterMode(display=False, custom_mapping=custom)


@dataclass
class FlopCount:
    """FLOPs (2 per multiply-add) of one generation, for the whole batch."""

    prefill: int
    merge: int
    decode: int
    batch_size: int

    @property
    def total(self) -> int:
        return self.prefill + self.merge + self.decode

    @property
    def gflops_per_sample(self) -> float:
        return self.total / self.batch_size / 1e9

    @property
    def gmacs_per_sample(self) -> float:
        return self.gflops_per_sample / 2

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "gflops_per_sample": self.gflops_per_sample,
                "gmacs_per_sample": self.gmacs_per_sample}


@torch.no_grad()
def counted_flops(target, batch: Batch, new_tokens: int, after_prefill: Callable | None = None, *,
                  every_step: bool = False) -> FlopCount:
    """FLOPs of one fixed-length greedy generation, counted op by op while it runs.

    A decode step's FLOPs are affine in its position (fixed weights plus attention over a cache that grows by
    one), so unless `every_step`, the first three steps are counted and the rest follow from them: exact, and
    the counter's per-op Python overhead (a third of chapter 06's time when every step was counted) is paid
    for three steps, not all. Steps that are not affine (checked on those three) are all counted."""
    with _flop_counter() as fc:
        token, cache = prefill(target, batch)
    p = fc.get_total_flops()
    with _flop_counter() as fc:
        undo = after_prefill(model_of(target), batch) if after_prefill is not None else None
    m = fc.get_total_flops()
    try:
        mask, steps, n = batch.attention_mask, [], new_tokens - 1
        for j in range(n):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            with _flop_counter() as fc:
                token, cache = decode_step(target, token, mask, cache)
            steps.append(fc.get_total_flops())
            if not every_step and j == 2 and steps[2] - steps[1] == steps[1] - steps[0]:
                break
        slope = steps[1] - steps[0] if len(steps) > 1 else 0
        d = sum(steps) if len(steps) == n else n * steps[0] + slope * n * (n - 1) // 2
    finally:
        if callable(undo):
            undo()
    return FlopCount(prefill=p, merge=m, decode=d, batch_size=len(batch))


def analytic_flops(config, skips: SkipSet | None, prompt_len: int, new_tokens: int, batch: int = 1, *,
                   visual_tokens: int = 0, vision_dim: int = 0) -> FlopCount:
    """FLOPs of fixed-length greedy generation with a LLaMA-style decoder, from its shape.

    Per token and kept module: 2 x (weights of q, k, v, o) for an MHA, 2 x (gate, up, down) for an FFN,
    plus 2 x 2 x T_ctx x d_attn for attention scores and values. Prefill attends over the full T x T
    square (what SDPA computes, and the counter counts; a causal-aware count would halve it), decode step
    j over T + j cached positions. The LM head (2 x d x V) runs once per generated token: at the last
    prompt position in prefill and at each decode step. `visual_tokens` > 0 adds MiniLlava's projector
    (Linear(vision_dim, d) -> Linear(d, d)) on them. `prompt_len` is the padded prompt length."""
    cfg = getattr(config, "text_config", None) or config
    skips = skips or SkipSet()
    d, f, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    d_attn, d_kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    mha_w = 2 * (d * d_attn + 2 * d * d_kv + d_attn * d)
    ffn_w = 2 * 3 * d * f
    kept_mha = sum(not skips.attn_skipped(i) for i in range(L))
    kept_ffn = sum(not skips.ffn_skipped(i) for i in range(L))
    head = 2 * d * V

    def layers(tokens: int, ctx: int) -> int:
        return kept_mha * (tokens * mha_w + 4 * tokens * ctx * d_attn) + kept_ffn * tokens * ffn_w

    T = prompt_len
    pre = layers(T, T) + head + (2 * visual_tokens * (vision_dim * d + d * d) if visual_tokens else 0)
    dec = sum(layers(1, T + j) + head for j in range(1, new_tokens))
    return FlopCount(prefill=batch * pre, merge=0, decode=batch * dec, batch_size=batch)


def flops_frame(counts: dict[str, FlopCount], baseline: str | None = None):
    """GFLOPs per sample and the change against the baseline, as Table 1's 'FLOPs (+x G)' column."""
    import pandas as pd

    names = list(counts)
    baseline = baseline or names[0]
    base = counts[baseline].gflops_per_sample
    rows = []
    for n, c in counts.items():
        g = c.gflops_per_sample
        rows.append({"variant": n, "gflops_per_sample": g, "delta_gflops": g - base,
                     "gmacs_per_sample": c.gmacs_per_sample, "delta_gmacs": (g - base) / 2,
                     "label": f"{g:.1f}G ({g - base:+.1f}G)"})
    return pd.DataFrame(rows).set_index("variant")


# ----------------------------------------------------------------------------- memory

def param_bytes(target) -> int:
    return sum(p.numel() * p.element_size() for p in target.parameters())


def kv_bytes_analytic(config, skips: SkipSet | None, seq_len: int, batch: int = 1, bytes_per: int = 4) -> int:
    """Bytes of a KV cache holding `seq_len` positions in each kept attention."""
    cfg = getattr(config, "text_config", None) or config
    skips = skips or SkipSet()
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kept = sum(not skips.attn_skipped(i) for i in range(cfg.num_hidden_layers))
    return 2 * kept * batch * seq_len * cfg.num_key_value_heads * hd * bytes_per


# ----------------------------------------------------------------------------- ideal vs achieved

def ideal_speedup(base_ms: float, removed_ms: float) -> float:
    """The speed-up if skipping removed exactly the time the skipped modules took: base / (base - removed)."""
    if not 0 <= removed_ms < base_ms:
        raise ValueError(f"removed time {removed_ms} must lie in [0, base {base_ms}).")
    return base_ms / (base_ms - removed_ms)


def sample_ms(prefill_ms: float, merge_ms: float, decode_ms_per_token: float, tokens: int) -> float:
    """Time of one generation of `tokens` tokens: prefill (gives the first), merge, tokens - 1 decode steps."""
    return prefill_ms + merge_ms + decode_ms_per_token * (tokens - 1)


def achieved_fraction(base_ms: float, measured_ms: float, removed_ms: float) -> float:
    """Share of the removable time that skipping actually saved: (base - measured) / removed."""
    if removed_ms <= 0:
        raise ValueError("removed time must be positive.")
    return (base_ms - measured_ms) / removed_ms


@dataclass
class ModuleTimes:
    """Decode time (ms per decode step, whole batch) of each layer's MHA and FFN.

    An MHA's time covers what skipping it removes: its RMSNorm, any adapter in front of it, q/k/v/o,
    the attention and the cache update; an FFN's: its RMSNorm, adapter and MLP."""

    mha_ms: list[float]
    ffn_ms: list[float]
    base_decode_ms: float
    method: str
    detail: dict = field(default_factory=dict)
    # The same for the whole prefill (ms per prefill, whole batch); NaN where not measured (hooks).
    mha_prefill_ms: list[float] = field(default_factory=list)
    ffn_prefill_ms: list[float] = field(default_factory=list)
    base_prefill_ms: float = float("nan")

    def removed_ms(self, skips: SkipSet) -> float:
        """Decode time the modules in `skips` take in the base model (what skipping them could save)."""
        return self._removed(self.mha_ms, self.ffn_ms, skips)

    def removed_prefill_ms(self, skips: SkipSet) -> float:
        """Prefill time the modules in `skips` take in the base model."""
        if not self.mha_prefill_ms:
            return float("nan")
        return self._removed(self.mha_prefill_ms, self.ffn_prefill_ms, skips)

    @staticmethod
    def _removed(mha, ffn, skips: SkipSet) -> float:
        L = len(mha)
        return sum(mha[i] for i in range(L) if skips.attn_skipped(i)) + \
            sum(ffn[i] for i in range(L) if skips.ffn_skipped(i))

    def ideal_speedup(self, skips: SkipSet) -> float:
        return ideal_speedup(self.base_decode_ms, self.removed_ms(skips))

    def frame(self):
        import pandas as pd

        return pd.DataFrame({"layer": range(len(self.mha_ms)), "mha_ms": self.mha_ms, "ffn_ms": self.ffn_ms})


def module_times(target, batch: Batch, new_tokens: int = 16, *, method: str = "ablation", repeats: int = 5,
                 warmup: int = 1) -> ModuleTimes:
    """Measured decode time of each MHA and FFN of the target's current (unskipped) model.

    method="ablation" (default, the honest one for speed-up claims): decode is timed, interleaved, with
      (a) nothing skipped, (b) every MHA but the last skipped, (c) every FFN skipped. One MHA costs
      (a - b) / (L - 1), one FFN (a - c) / L. This is exactly what skipping removes, measured with no
      instrumentation in the timed path, so GPU asynchrony, fused launches and cache bookkeeping are all
      accounted as they really occur. It assumes the layers cost alike (they have identical shapes and,
      in decode, identical context length), so every layer gets the same value.
    method="hooks": forward hooks stamp the clock around each layer's norm+attention and norm+MLP in
      the decode steps. Gives per-layer values, but a synchronise in every hook serialises a GPU, and the
      hooks themselves cost time, so the parts add up to more than the decode they were taken from;
      use it for the shape of the profile, not for the ideal speed-up.

    The model must have no skips when called (module times are costs in the base model); its skip set
    is restored afterwards."""
    model = model_of(target)
    saved = current_skips(model)
    if saved.count():
        raise ValueError(f"module_times measures the base model; this one has skips {saved.to_dict()}.")
    L = arch.num_layers(model)
    try:
        if method == "ablation":
            return _module_times_ablation(target, model, batch, new_tokens, repeats, warmup, L)
        if method == "hooks":
            return _module_times_hooks(target, model, batch, new_tokens, repeats, warmup, L)
        raise ValueError(f"unknown method {method!r}; expected 'ablation' or 'hooks'.")
    finally:
        apply_skips(model, saved)


def _module_times_ablation(target, model, batch, new_tokens, repeats, warmup, L) -> ModuleTimes:
    if L < 2:
        raise ValueError("the ablation method needs at least 2 layers (one MHA must stay).")
    sets = {"base": SkipSet(), "mha_ablated": SkipSet(mha=range(L - 1)), "ffn_ablated": SkipSet(ffn=range(L))}

    def variant(s):
        def make():
            apply_skips(model, s)
            return target, None
        return make

    df = compare({k: variant(s) for k, s in sets.items()}, batch, new_tokens, repeats,
                 baseline="base", warmup=warmup)
    def per_module(col):
        base = float(df.loc["base", col])
        return (base, (base - float(df.loc["mha_ablated", col])) / (L - 1),
                (base - float(df.loc["ffn_ablated", col])) / L)

    base, mha, ffn = per_module("decode_ms_per_token")
    base_pre, mha_pre, ffn_pre = per_module("prefill_ms")  # the same runs' prefill clocks: no extra run
    return ModuleTimes([mha] * L, [ffn] * L, base, "ablation", detail={"frame": df},
                       mha_prefill_ms=[mha_pre] * L, ffn_prefill_ms=[ffn_pre] * L, base_prefill_ms=base_pre)


@torch.no_grad()
def _module_times_hooks(target, model, batch, new_tokens, repeats, warmup, L) -> ModuleTimes:

    apply_skips(model, SkipSet())  # wraps layers in EASBlocks, so the norms and the MLP are separate calls
    sync = make_sync(device_of(target))
    acc = {("mha", i): [] for i in range(L)} | {("ffn", i): [] for i in range(L)}
    state = {"on": False, "start": {}}
    handles = []

    def pre(key):
        def hook(mod, args):
            if state["on"]:
                sync()
                state["start"][key] = time.perf_counter()
        return hook

    def post(key):
        def hook(mod, args, out):
            if state["on"]:
                sync()
                acc[key][-1] += time.perf_counter() - state["start"][key]
        return hook

    for i, blk in enumerate(eas_blocks(model)):
        parts = arch.layer_parts(blk)
        for kind, first, last in (("mha", parts.attn_norm, parts.attn), ("ffn", parts.ffn_norm, parts.mlp)):
            handles.append(first.register_forward_pre_hook(pre((kind, i))))
            handles.append(last.register_forward_hook(post((kind, i))))
    decode_ms = []
    try:
        for r in range(warmup + repeats):
            token, cache = prefill(target, batch)
            for v in acc.values():
                v.append(0.0)
            mask = batch.attention_mask
            sync()
            t0 = time.perf_counter()
            state["on"] = True
            for _ in range(new_tokens - 1):
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                token, cache = decode_step(target, token, mask, cache)
            sync()
            state["on"] = False
            decode_ms.append((time.perf_counter() - t0) * 1e3 / (new_tokens - 1))
    finally:
        for h in handles:
            h.remove()
    steps = new_tokens - 1

    def med(key):
        return statistics.median(acc[key][warmup:]) * 1e3 / steps

    return ModuleTimes([med(("mha", i)) for i in range(L)], [med(("ffn", i)) for i in range(L)],
                       statistics.median(decode_ms[warmup:]), "hooks",
                       detail={"instrumented_decode_ms": decode_ms[warmup:]})


def speedup_report(times: ModuleTimes, measured: dict[str, tuple[SkipSet, float]], base_ms: float | None = None):
    """For each variant (skip set, measured decode ms/token): removed time, ideal and achieved speed-up,
    and the fraction of the removable time actually saved. Pass `base_ms`, the base model's decode time
    from the same `compare` run as the measured variants, so that all three numbers share one clock
    period; it defaults to the base time `module_times` measured."""
    import pandas as pd

    rows = []
    base = times.base_decode_ms if base_ms is None else base_ms
    for name, (skips, ms) in measured.items():
        removed = times.removed_ms(skips)
        rows.append({"variant": name, "skipped_mha": len(skips.mha) + len(skips.layer),
                     "skipped_ffn": len(skips.ffn) + len(skips.layer), "removed_ms": removed,
                     "ideal_speedup": ideal_speedup(base, removed) if removed < base else float("inf"),
                     "achieved_speedup": base / ms,
                     "achieved_fraction": achieved_fraction(base, ms, removed) if removed > 0 else float("nan")})
    return pd.DataFrame(rows).set_index("variant")
