"""Chapter 6, latency: the sentences, the roofline bound and the ledger rows its notebook shows, built from the
latency suite's frame (`eas.study.latency`). The tables and plots themselves are `eas.study.latency`'s.

The chapter's verdicts are timing verdicts: a median against the run's timing noise, or a ratio against 1,
none a statistical test. They are recorded as one family, "06_latency", in the claims ledger
(`latency_verdicts`, through `eas.study.report.record_family`) with no p-value, so no multiplicity
correction applies to them; the headline (pre-registered) claim is Table 1's "EAS is the fastest" at the
first scale of the profile.
"""

from __future__ import annotations

import pandas as pd

from eas.measure import shapes
from eas.study import latency, paper, report

CHAPTER = FAMILY = "06_latency"
ROOFLINE_SHAPE = "llava-1.5-7b"
# the largest k of Table 1's EAS rows: the number of skipped MHAs the paper's speed-ups are measured at
PAPER_K = max(k for method, k in paper.TABLE1_METHODS.values() if method == "eas-merged")
LEDGER_SHOWN = ["task", "method_a", "method_b", "metric", "a", "b", "difference", "headline", "verdict"]


def smallest_batch(frame: pd.DataFrame, scale: str) -> int:
    return int(frame[frame.scale == scale].batch.min())


# ----------------------------------------------------------------------------- the claims, as numbers

def table1_fastest(t1: pd.DataFrame) -> dict | None:
    """Table 1's timing claim on `latency.table1`'s rows, by the rule `latency.table1_verdict` states: EAS is
    faster than the base model and every PETL method (holds: every EAS row below both by more than the noise
    band; does not hold: any EAS row above either by more). None if EAS or every PETL method is missing."""
    eas_rows = [i for i in t1.index if i.startswith("EAS")]
    petl = [i for i in t1.index if i.startswith(("LoRA", "Adapter", "MAM", "DAS"))]
    if not eas_rows or not petl:
        return None
    t = t1.time_vs_base
    fastest = t[petl].idxmin()
    eas_best = t[eas_rows].idxmin()
    band = float(max(t1.loc[[*eas_rows, fastest], "time_noise"].max(), t1.iloc[0].time_noise))
    eas = t[eas_rows]
    if (eas < t[fastest] - band).all() and (eas < 1 - band).all():
        status = "holds"
    elif (eas > t[fastest] + band).any() or (eas > 1 + band).any():
        status = "does not hold"
    else:
        status = "cannot tell (within timing noise)"
    return {"eas": t1.loc[eas_best, "ours"], "other": t1.loc[fastest, "ours"], "a": float(t[eas_best]),
            "b": float(t[fastest]), "band": band, "verdict": status}


def das_faster(fig4: pd.DataFrame) -> pd.Series:
    """How much longer DAS takes than EAS merged at each shared k (%), as `latency.das_vs_eas_verdict` reads it."""
    if not {"das", "eas-merged"} <= set(fig4.columns):
        return pd.Series(dtype=float)
    common = fig4[["das", "eas-merged"]].dropna()
    return 100 * (common.das / common["eas-merged"] - 1)


def latency_verdicts(frame: pd.DataFrame, scales) -> list[dict]:
    """The chapter's verdicts as measured-verdict dicts for `eas.study.report.record_family`: per scale (at its
    smallest batch) Table 1's "EAS is the fastest" (the first scale's is the headline) and Fig. 4's "EAS is
    faster than DAS at equal k" (a and b: the smallest and largest gap over k, in %), and per scale and batch
    "an MHA costs more decode time than an FFN" (a: MHA / FFN)."""
    out = []
    for i, s in enumerate(scales):
        b = smallest_batch(frame, s)
        where = f"{s}, batch {b}"
        fast = table1_fastest(latency.table1(frame, s, b))
        if fast is not None:
            out.append(report.measured_verdict("eas_fastest", fast["eas"], fast["other"], a=fast["a"], b=fast["b"],
                                               difference=fast["a"] - fast["b"], verdict=fast["verdict"],
                                               metric="time vs base", task=where, headline=i == 0))
        gaps = das_faster(latency.das_vs_eas(frame, s, b))
        if len(gaps):
            out.append(report.measured_verdict(
                "eas_faster_than_das", "EAS merged", "DAS", a=float(gaps.min()), b=float(gaps.max()),
                verdict="holds" if (gaps > 0).all() else "does not hold",
                metric="time saved vs DAS at equal k (%)", task=where))
    for r in latency.attention_share(frame).itertuples():
        out.append(report.measured_verdict("mha_slower_than_ffn", "MHA", "FFN", a=float(r.mha_over_ffn), b=1.0,
                                           difference=float(r.mha_over_ffn),
                                           verdict="holds" if r.mha_over_ffn > 1 else "does not hold",
                                           metric="MHA / FFN time", task=f"{r.scale}, batch {r.batch}"))
    return out


def ledger_note(recorded: pd.DataFrame) -> str:
    """What the recorded family is, and why no correction applies to it."""
    if recorded.empty:
        return "No timing verdict could be formed from this run, so none is recorded."
    heads = [f"{r.claim} ({r.method_a} vs {r.method_b}, {r.task}): {r.verdict}"
             for r in recorded.itertuples() if r.headline]
    counts = recorded.verdict.map(lambda v: "holds" if v == "holds" else "does not hold" if v == "does not hold"
                                  else "cannot tell").value_counts()
    return (f"{FAMILY} records {len(recorded)} timing verdicts in the claims ledger: {counts.get('holds', 0)} hold, "
            f"{counts.get('does not hold', 0)} do not hold, {counts.get('cannot tell', 0)} cannot be told within the "
            "timing noise. None is a statistical test (each compares medians with the run's timing noise, or a ratio "
            "with 1), so Holm's correction has nothing to adjust; a repeated run is what would confirm them."
            + (f" The headline, pre-registered: {'; '.join(heads)}." if heads else ""))


def ledger_view(recorded: pd.DataFrame) -> pd.DataFrame:
    return recorded[[c for c in LEDGER_SHOWN if c in recorded.columns]]


# ----------------------------------------------------------------------------- sentences

def achieved_text(iva: pd.DataFrame) -> str:
    """The median share of the removable decode time that skip-only, EAS merged and DAS actually saved."""
    lines = []
    for (s, b), g in iva[iva.method.isin(["skip-only", "eas-merged", "das"])].groupby(["scale", "batch"]):
        med = g.groupby("method").achieved_fraction.median()
        lines.append(f"{s}, batch {b}: " + ", ".join(f"{latency.LABELS[m]} {100 * v:.0f}%" for m, v in med.items()))
    return ("**Median share of the removable decode time actually saved** -- " + "; ".join(lines)
            + ". EAS merged near skip-only means the merge leaves nothing behind; far below 100% means "
            "the removed modules' time is not all saved (or, with few repeats, that noise dominates).")


def attention_text(share: pd.DataFrame) -> str:
    """The claim that an MHA costs more decode time than an FFN, beside the paper's ratio."""
    holds = bool((share.mha_over_ffn > 1).all())
    quoted = paper.TEXT["mha_over_ffn_time"].value
    return (f"**Claim: an MHA costs more decode time than an FFN (paper: {quoted:.2f}x)** -- "
            f"{'holds' if holds else 'does not hold'} here: MHA / FFN = "
            + ", ".join(f"{x.mha_over_ffn:.2f}x ({x.scale}, batch {x.batch})" for x in share.itertuples())
            + "; attention takes " + ", ".join(f"{100 * x.attention_share:.0f}%" for x in share.itertuples())
            + " of decode time. In decode an MHA does little arithmetic but reads its growing KV cache and runs "
            "several small ops (rotary, cache update, softmax); its share grows with context length and batch, and is "
            "larger where per-op overhead is large relative to the matmuls.")


def strategy_text(best: pd.DataFrame) -> str:
    """The fastest merge strategy per scale and batch (`latency.best_strategy`), ties within the noise named."""
    return ("**Fastest strategy per batch size (largest k)** -- " + "; ".join(
        f"{r.scale}, batch {r.batch}: {r.best} ({r.best_speedup_vs_base:.2f}x of base, "
        f"{r.best_vs_per_example:.2f}x the per-example merge"
        + ("" if r.resolved else f"; a tie with {r.runner_up}: {100 * r.margin:.1f}% apart, timing noise "
                                   f"+/-{100 * r.noise:.1f}%") + ")" for r in best.itertuples())
        + ". Where decode_vs_skip_only exceeds 1.02 or memory_vs_skip_only 1.05, that strategy misses the "
        "2% / 5% targets at that batch.")


# ----------------------------------------------------------------------------- the roofline bound

def paper_speedups_vs_bound(shape: str = ROOFLINE_SHAPE, k: int = PAPER_K) -> pd.DataFrame:
    """The paper's measured speed-ups (eas.study.paper.shapes_speedups) beside the roofline bound of skipping k
    MHAs of `shape` (eas.measure.shapes.speedups_vs_bound)."""
    return shapes.speedups_vs_bound(paper.shapes_speedups(), shape, k)


def roofline(shape: str = ROOFLINE_SHAPE, k: int = PAPER_K) -> dict:
    """The bounds of skipping k MHAs of `shape` in bf16: decode from the weights alone and with the KV cache of
    a LLaVA-1.5 prompt, prefill from the FLOPs; and the paper's speed-ups against them."""
    cfg = shapes.shape_config(shape)
    return {"shape": shape, "k": k, "layers": cfg.num_hidden_layers,
            "prompt": shapes.LLAVA_VISUAL_TOKENS + shapes.LLAVA_TEXT_TOKENS,
            "weights_only": shapes.decode_bound(cfg, k, context=0), "with_kv": shapes.decode_bound(cfg, k),
            "prefill": shapes.prefill_bound(cfg, k), "claims": paper_speedups_vs_bound(shape, k)}


def roofline_text(r: dict) -> str:
    """What the bound allows, and how far beyond it each of the paper's speed-ups lies (`roofline`'s dict)."""
    claims, w, kv, pre = r["claims"], r["weights_only"], r["with_kv"], r["prefill"]
    fits = "None fits" if not claims.fits.any() else "Not all fit" if not claims.fits.all() else "All fit"
    return (f"Attention projections are {100 * w['attn_weight_share']:.1f}% of a 7B LLaMA's weight bytes "
            f"(the LM head included), so skipping {r['k']} of {r['layers']} MHAs bounds the batch-1 decode speed-up "
            f"at {w['bound']:.3f}x ({kv['bound']:.3f}x with the KV cache of a {r['prompt']}-token prompt); prefill, "
            f"bound by FLOPs, at {pre['bound']:.3f}x. A whole sample mixes the two, so it cannot exceed "
            f"{max(kv['bound'], pre['bound']):.3f}x from skipping alone. "
            + " ".join(f"**{name}**: {c.speedup:.2f}x, {c.excess:.2f}x beyond the bound ({c.compares})."
                       for name, c in claims.iterrows())
            + f" {fits} the bound: Table 1's {claims.speedup.iloc[0]:.2f}x needs "
            f"{100 * (claims.excess.iloc[0] - 1):.0f}% from elsewhere (e.g. shorter generated answers, or overheads "
            f"of the base run); the {claims.speedup.iloc[1]:.2f}x against LaVIN is mostly LaVIN's unmerged adapter "
            f"branches, as Table 6's {claims.speedup.iloc[2]:.2f}x from merging alone (same skips) shows.")


def paper_quotes() -> str:
    """The paper's timing numbers this chapter checks, each from eas.study.paper (for the chapter's question)."""
    base, adapter = paper.TABLE1["LLaVA-7B"], paper.TABLE1["Adapter"]
    eas = paper.TABLE1[f"EAS_{PAPER_K}"]
    low, high = paper.TEXT["eas_vs_das_faster_pct"].value
    flops = 100 * (adapter.gflops / base.gflops - 1)
    return (f"**The paper's numbers checked here.** Table 1: an Adapter adds {flops:+.1f}% FLOPs but"
            f" {100 * (adapter.seconds / base.seconds - 1):+.0f}% time; EAS_{PAPER_K} takes "
            f"{eas.seconds / base.seconds:.2f}x of the base model's time. Sec. 1 / Fig. 1a: an MHA takes "
            f"{paper.TEXT['mha_over_ffn_time'].value:.2f}x an FFN's time. Fig. 4: at equal numbers of skipped modules "
            f"EAS is faster than DAS by {low:.0f}-{high:.0f}%. All are LLaVA-7B (Fig. 4: LaVIN-7B) on a GPU: "
            "compare ratios, not times.")
