"""Chapter 5, re-parameterisation: whether the merged model is the unmerged one, what the merge costs per prompt,
decode time and KV cache against k, and the timing column of the paper's Table 6, as sentences and figures.

    exactness_text(exact, n_layers)          merged against unmerged: largest logit differences, greedy tokens
    merge_cost_text(costs, scale)            the merge's worst cost as a share of prefill, here and at 7B's shape
    strategies_text(side, exact)             the merge strategies side by side, per batch size
    decode_figure(core, ...)                 decode ms / token and KV cache against k
    merged_decode_text(core)                 merged decode time against skip-only, per k
    table6_text(t6)                          Table 6's time ratios beside the paper's
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from eas.study import paper

FP32_BOUND = 1e-4          # the largest fp32 logit difference the unit tests accept on small random models
MERGE_COST_TARGET = 0.05   # the per-prompt merge: at most this share of prefill
DECODE_GAP_TARGET = 2.0    # merged decode: within this many percent of skip-only
DECODE_STYLES = (("skip-only", "o-"), ("eas-unmerged", "s--"), ("eas-merged", "^-"), ("eas-merged-static", "v:"))


def exactness_text(exact: pd.DataFrame, n_layers: int) -> str:
    """What `exact` (reparam.merge_equivalence rows with a dtype column: max_abs_logit_diff, logit_scale,
    tokens_identical) says: float64 shows exact arithmetic, fp32 the rounding of a different summation order."""
    by = exact.groupby("dtype").max_abs_logit_diff.max()
    scale = exact.logit_scale.max()
    bound = f"{FP32_BOUND:.0e}".replace("e-0", "e-")
    return (f"**Merged vs unmerged.** In float64 the largest logit difference is {by['float64']:.1e}: the merge is "
            f"exact arithmetic. In fp32 it is {by['float32']:.1e} with logits up to {scale:.1f} (relative "
            f"{by['float32'] / scale:.1e}), {'within' if by['float32'] <= FP32_BOUND else 'above'} the {bound} bound "
            "that the unit tests hold on small random models: merged and unmerged sum the same products in a "
            f"different order, and fp32 rounding of that order grows through {n_layers} layers. Greedy tokens "
            f"identical in every case: {bool(exact.tokens_identical.all())}.")


def merge_cost_text(costs: pd.DataFrame, scale: pd.DataFrame | None = None) -> str:
    """The worst merge cost over the batch sizes as a share of prefill per strategy (`costs`: reparam.time_merge
    rows with strategy and ratio), against the target; with `scale` (bench.merge_cost_at_scale), the same at
    LLaVA-1.5-7B's shape for the whole model."""
    worst = costs.groupby("strategy").ratio.max()
    within = [s for s, v in worst.items() if v <= MERGE_COST_TARGET]
    text = ("Worst merge cost over the batch sizes, as a share of prefill, on the embedded model: "
            + ", ".join(f"{s} {100 * v:.1f}%" for s, v in worst.items())
            + f" (target: at most {100 * MERGE_COST_TARGET:g}%; {', '.join(within) or 'none'} within it).")
    if scale is not None:
        first = scale.iloc[0]
        at = scale.set_index("strategy").merge_over_prefill_full_model
        text += (f" At LLaVA-1.5-7B's shape (d=4096, d_ff=11008, {first.prompt_len}-token prompt, PIA hidden "
                 f"{first.skip_hidden}), merging {first.k_full} layers costs "
                 + ", ".join(f"{100 * v:.2f}% ({s})" for s, v in at.items())
                 + f" of a {first.layers_full}-layer prefill.")
    return text


def strategies_text(side: pd.DataFrame, exact: pd.DataFrame) -> str:
    """Per batch size (`side`: bench.strategy_timing rows), the fastest merged strategy per sample and its
    speed-up, each strategy's decode time against skip-only (a tie when within the noise) and its merge memory;
    then the largest fp64 logit difference of each strategy (`exact`)."""
    exact_by = exact[exact.dtype == "float64"].set_index("strategy").max_abs_logit_diff
    lines = []
    for b, g in side.groupby("batch"):
        g = g.set_index("variant")
        merged = g.drop(index=["base", "skip-only"])
        best = merged.ms_per_sample.idxmin()
        lines.append(f"batch {b}: fastest per sample {best} ({g.loc[best, 'speedup']:.2f}x of base; per_example "
                     f"{g.loc['per_example', 'speedup']:.2f}x), decode vs skip-only "
                     + ", ".join(f"{s} {100 * (r.decode_vs_skip_only - 1):+.1f}% (IQR {100 * r.decode_noise:.0f}%"
                                 + ("" if r.decode_resolved else ", a tie") + ")" for s, r in merged.iterrows())
                     + ", merge memory " + ", ".join(f"{s} {v:.1f} MB" for s, v in merged.merge_mb.items()))
    return ("**Strategies.** " + "; ".join(lines) + ". Largest fp64 logit difference merged vs unmerged: "
            + ", ".join(f"{s} {v:.1e}" for s, v in exact_by.items()) + ".")


def decode_figure(core: pd.DataFrame, *, timing_batch: int, new_tokens: int) -> plt.Figure:
    """Left: decode ms / token against k for skip-only, EAS unmerged and merged (and merged with a static router),
    the base model dotted; right: the KV cache of the base model (k=0) and of EAS merged at each k."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    base = core[core.method == "base"].iloc[0]
    for method, style in DECODE_STYLES:
        part = core[core.method == method].sort_values("k")
        if len(part):
            axes[0].plot(part.k, part.decode_ms_per_token, style, label=method)
    axes[0].axhline(base.decode_ms_per_token, color="grey", ls=":", label="base")
    axes[0].set(xlabel="skipped MHAs (k)", ylabel="decode ms / token", title=f"decode time, batch {timing_batch}")
    axes[0].legend()
    part = core[core.method == "eas-merged"].sort_values("k")
    axes[1].bar([0] + list(part.k), [base.kv_cache_mb] + list(part.kv_cache_mb), width=1.5)
    axes[1].set(xlabel="skipped MHAs (k)", ylabel="KV cache (MB)",
                title=f"KV cache after {new_tokens} tokens, prompt {int(base.prompt_len)}")
    fig.tight_layout()
    return fig


def merged_decode_text(core: pd.DataFrame) -> str:
    """EAS merged's decode time against skip-only per k (percent, against the target) and against the base."""
    base = core[core.method == "base"].iloc[0]
    merged = core[core.method == "eas-merged"].set_index("k").sort_index()
    gap = 100 * (merged.decode_vs_skip_only - 1)
    return ("**Merged decode vs skip-only:** " + ", ".join(f"k={k}: {g:+.1f}%" for k, g in gap.items())
            + f" (target: within {DECODE_GAP_TARGET:g}%). Base decodes at {base.decode_ms_per_token:.1f} ms/token; "
            + ", ".join(f"k={k}: {v:.1f}" for k, v in merged.decode_ms_per_token.items()) + " ms/token merged.")


def table6_text(t6: pd.DataFrame) -> str:
    """Table 6's time per sample against Base (`t6`: bench.table6_timing rows, setting and time_vs_base) beside
    the paper's: what merging and information exchange cost here and there."""
    r = t6.set_index("setting").time_vs_base
    ref = paper.TABLE6
    merged, exchange = (ref[row].seconds / ref["base"].seconds for row in ("reparam", "info_exchange"))
    return (f"**Paper:** re-parameterisation cuts time per sample to {merged:.2f}x of Base. "
            f"**Here:** {r['+ Re-param.']:.2f}x of Base; information exchange costs "
            f"{100 * (r['+ Info. Exc.'] - 1):+.1f}% unmerged (paper {100 * (exchange - 1):+.1f}%). "
            "The paper's Base row keeps an unmerged adapter branch in every skipped layer, so its gap to the merged "
            "row also reflects how much an adapter branch costs on that GPU; on this CPU a small adapter branch is "
            "cheap relative to the FFN it sits in front of.")
