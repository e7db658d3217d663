"""What the chapters show, built from results: figures and sentences shared by several chapters.

A chapter's own verdict prose lives in `eas.study.chapters.<chapter>`; this module holds the pieces they
share, so that the same figure or the same kind of sentence is drawn or written once:

    claim_figure(seeds, comparisons)     per-seed accuracies beside a forest plot of paired differences
    accuracy_se(acc, n)                  the binomial standard error of one accuracy, in points
    comparison_sentence(rows)            "name +1.2 points (cannot tell ...; detectable 3.4); ..."
    record_verdicts(...)                 one family of a chapter's verdicts into the claims ledger
    letter_figure(curves)                the answer letter's loss and accuracy during fine-tuning, per run
    chance_flags(checks)                 a warning naming every run whose accuracy is not above chance
"""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eas.study import ledger, stats


def accuracy_se(accuracy, n: int):
    """Binomial standard error (points) of an accuracy given in percent over n items; works on arrays. It is
    the noise of one accuracy on its own; a difference between two methods on the same items is judged by
    the paired statistics of `eas.study.stats`, never by two of these."""
    if n < 1:
        raise ValueError(f"n must be >= 1 item, got {n}.")
    p = np.asarray(accuracy, dtype=float) / 100
    return 100 * np.sqrt(p * (1 - p) / n)


def claim_figure(seed_accuracies: Mapping[str, list], comparisons: Mapping[str, Mapping], *,
                 ylabel: str = "accuracy", seeds_title: str = "per training seed",
                 title: str = "paired differences, 95% interval", margin: float | None = None) -> plt.Figure:
    """The two-panel figure of a claim: left, each side's accuracy per training seed (dots) and mean (bar);
    right, one line per comparison (label -> a `compare_runs` / `Comparison.to_row()` row) with its
    difference, interval and the smallest detectable difference as a grey band. `margin` draws the
    no-worse margin as a red line at -margin."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 2.4 + 0.5 * len(comparisons)),
                                   gridspec_kw={"width_ratios": [1, 2]})
    stats.plot_seeds(ax0, dict(seed_accuracies), ylabel=ylabel, title=seeds_title)
    stats.plot_comparisons(ax1, dict(comparisons), title=title)
    if margin is not None:
        ax1.axvline(-margin, color="tab:red", lw=1, ls="--")
    fig.tight_layout()
    return fig


def comparison_sentence(rows: Mapping[str, Mapping], *, strip: str = "") -> str:
    """'label +d points (verdict; detectable m); ...' for several comparison rows (a chapter's per-item list)."""
    return "; ".join(f"{label.removeprefix(strip)} {r['diff']:+.1f} points ({r['verdict']}; detectable "
                     f"{r['mdd']:.1f})" for label, r in rows.items())


def record_verdicts(verdicts: list[dict], *, chapter: str, family: str, task: str, metric: str,
                    profile: str) -> pd.DataFrame:
    """Write one family of a chapter's verdicts to the claims ledger (Holm within the family) and return the
    rows as written. Each verdict is a dict: claim (a short id), method_a, method_b, row (a `compare_runs` /
    `compare_seeds` row or a `stats.Comparison`), and optionally kind ("better" | "no_worse"), margin and
    headline (a pre-registered headline claim)."""
    rows = []
    for v in verdicts:
        rows.append(ledger.claim_row(v["row"], chapter=chapter, claim=v["claim"], task=task,
                                     method_a=v["method_a"], method_b=v["method_b"], metric=metric, profile=profile,
                                     kind=v.get("kind", "better"), margin=v.get("margin", 0.0),
                                     headline=v.get("headline", False), family=family))
    if not rows:
        return pd.DataFrame()
    return ledger.record_claims(rows, replace="family")


def comparison_row(runs_a, runs_b, *, claim: str = "better", margin: float = 0.0, seed_sd=None) -> dict:
    """A against B from their runs' per-item correctness (a frame with uid/correct, as
    `eas.study.experiments.item_correctness` returns, or a list of them: training seeds), paired by item id:
    a `compare_runs`-style row (`Comparison.to_row` plus "comparison"). Unlike `compare_runs`, it takes
    `seed_sd` (points; one spread or (sd_a, sd_b)), which widens a one-seed-each comparison by a seed spread
    measured elsewhere (`seed_spread`)."""
    paired = stats.pair_by_item(runs_a, runs_b)
    cmp = stats.seeds_comparison(np.atleast_2d(paired.a), np.atleast_2d(paired.b), seed_sd=seed_sd)
    return {**cmp.to_row(claim, margin), "comparison": cmp}


def seed_spread(runs_a: list, runs_b: list) -> tuple[float, float] | None:
    """(sd_a, sd_b): the standard deviation (points, ddof 1) of A's and of B's accuracy over their training seeds
    (lists of per-item correctness frames, paired by item id so that every seed scores the same items); None
    unless both sides have 2+ seeds. What a chapter passes as `seed_sd` to its one-seed verdicts."""
    if len(runs_a) < 2 or len(runs_b) < 2:
        return None
    paired = stats.pair_by_item(list(runs_a), list(runs_b))
    return (float(np.std(100.0 * paired.a.mean(axis=1), ddof=1)),
            float(np.std(100.0 * paired.b.mean(axis=1), ddof=1)))


def describe_corrected(cmp, name_a: str, name_b: str, verdict: str, *, claim: str = "better",
                       margin: float = 0.0) -> str:
    """`stats.describe`'s sentence with its verdict replaced by `verdict`: the family-corrected one, as the rows
    `record_verdicts` returns hold it, so that the prose never says "holds" where Holm's adjusted p is >= alpha."""
    text = stats.describe(cmp, name_a, name_b, claim=claim, margin=margin)
    head, sep, _ = text.rpartition(" Verdict: **")
    if not sep:
        raise ValueError("stats.describe's sentence has no 'Verdict: **...**' to replace.")
    return f"{head} Verdict, after Holm's correction over the chapter's family: **{verdict}**"


def corrected_rows(rows: Mapping[str, Mapping], recorded: pd.DataFrame) -> dict:
    """label -> comparison row with `verdict` replaced by the corrected one and `p_adjusted` added, from
    `recorded` (what `record_verdicts` returned for verdicts built from `rows`, in the same order). Each pair
    must agree on the difference, so a reordering is caught rather than mislabelled."""
    if len(rows) != len(recorded):
        raise ValueError(f"{len(rows)} rows but {len(recorded)} recorded verdicts: record them from these rows.")
    out = {}
    for (label, row), rec in zip(rows.items(), recorded.to_dict("records")):
        if abs(float(row["diff"]) - float(rec["difference"])) > 1e-9:
            raise ValueError(f"{label!r}: difference {row['diff']:+.3f} but the recorded claim {rec['claim']!r} "
                             f"has {float(rec['difference']):+.3f}; the rows are not in the recorded order.")
        out[label] = {**row, "verdict": rec["verdict"], "p_adjusted": rec["p_adjusted"]}
    return out


def verdicts_family_note(verdicts: list[dict], *, family: str) -> str:
    """`stats.family_note` for the verdicts given to `record_verdicts` (same dicts): how many tested verdicts the
    family makes, the correction, its headline claims, and how many decisive verdicts Holm turned into
    "cannot tell"."""
    rows = {}
    for v in verdicts:
        cmp = v["row"].get("comparison") if isinstance(v["row"], Mapping) else v["row"]
        kind, margin = v.get("kind", "better"), v.get("margin", 0.0)
        rows[f"{v['claim']} ({v['method_a']} vs {v['method_b']})"] = {
            "p_claim": cmp.claim_p(kind, margin), "verdict": cmp.verdict(kind, margin), "ci_low": cmp.ci_low,
            "ci_high": cmp.ci_high, "headline": bool(v.get("headline", False))}
    return stats.family_note(stats.correct_family(rows, family=family))


def noise_note(cmp) -> str:
    """What the interval of a comparison covers, in a clause: one run each, item noise only; one run each widened
    by a seed spread measured elsewhere (named); or items and seeds, with how many seeds."""
    if not cmp.one_seed:
        return f"{cmp.seeds_a} and {cmp.seeds_b} training seeds: the interval covers items and training seeds"
    if cmp.assumed_sd:
        sd_a, sd_b = cmp.assumed_sd
        return (f"one run each, intervals widened by the seed spread measured on the headline pair ({sd_a:.1f} and "
                f"{sd_b:.1f} points)")
    return "one run each: the intervals cover item noise only, not the spread between training seeds"


def measured_verdict(claim: str, method_a: str, method_b: str, *, a: float, b: float, verdict: str,
                     difference: float = float("nan"), metric: str | None = None, task: str | None = None,
                     items=None, seeds: str = "", headline: bool = False) -> dict:
    """A verdict that no statistical test backs (a timing median against the run's noise band, a ratio), as a
    verdict dict for `record_family`: `a`, `b` and `difference` as the claim states them, `verdict` one of
    "holds", "does not hold" or "cannot tell ..."; it enters the ledger with no p-value, outside Holm's count."""
    if not str(verdict).startswith(("holds", "does not hold", stats.CANNOT_TELL)):
        raise ValueError(f"verdict {verdict!r} must start with 'holds', 'does not hold' or 'cannot tell'.")
    return {"claim": claim, "method_a": method_a, "method_b": method_b, "metric": metric, "task": task,
            "headline": headline, "measured": {"a": float(a), "b": float(b), "difference": float(difference),
                                               "verdict": str(verdict), "items": items, "seeds": seeds}}


def record_family(verdicts: list[dict], *, chapter: str, family: str, profile: str, task: str = "",
                  metric: str = "") -> pd.DataFrame:
    """`record_verdicts` for a family whose verdicts differ in task or metric, or include measured verdicts
    (`measured_verdict`): one call, so Holm runs over the family's tested verdicts together. A verdict dict is
    `record_verdicts`' (claim, method_a, method_b, row, kind, margin, headline) with optional `task` and
    `metric` overriding the family's, or a `measured_verdict`. Returns the rows as written, indexed by
    "claim (method_a vs method_b[, task])" and with `verdict_unadjusted`, so `stats.family_note` reads it."""
    rows, labels, raw = [], [], []
    for v in verdicts:
        v_task, v_metric = v.get("task") or task, v.get("metric") or metric
        if "measured" in v:
            m = v["measured"]
            row = {"chapter": chapter, "claim": v["claim"], "task": v_task, "method_a": v["method_a"],
                   "method_b": v["method_b"], "metric": v_metric, "a": m["a"], "b": m["b"],
                   "difference": m["difference"], "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                   "p_adjusted": np.nan, "seeds": m.get("seeds", ""), "items": m.get("items"), "correction": "",
                   "family": family, "headline": bool(v.get("headline", False)), "verdict": m["verdict"],
                   "profile": profile}
        else:
            row = ledger.claim_row(v["row"], chapter=chapter, claim=v["claim"], task=v_task, method_a=v["method_a"],
                                   method_b=v["method_b"], metric=v_metric, profile=profile,
                                   kind=v.get("kind", "better"), margin=v.get("margin", 0.0),
                                   headline=v.get("headline", False), family=family)
        rows.append(row)
        raw.append(row["verdict"])
        where = f", {v_task}" if v.get("task") and v.get("task") != task else ""
        labels.append(f"{v['claim']} ({v['method_a']} vs {v['method_b']}{where})")
    if not rows:
        return pd.DataFrame()
    recorded = ledger.record_claims(rows, replace="family")
    return recorded.assign(verdict_unadjusted=raw).set_axis(labels, axis=0)


def letter_figure(curves: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """What fine-tuning teaches the answer letter (ScienceQA): per run (label -> its `letters.csv`, as read by
    `experiments.letter_curve`), the letter token's loss (solid: val, dotted: train) beside the loss of the other
    target tokens, and the letter's val accuracy among the options against its chance level. A run whose loss
    falls while its letter stays at chance has learned the template, not the answer."""
    if not curves:
        raise ValueError("letter_figure needs at least one run's letter curve.")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.4))
    for i, (label, df) in enumerate(curves.items()):
        color = f"C{i}"
        ax0.plot(df["step"], df["val_letter_loss"], "-o", color=color, ms=3, label=f"{label}: letter")
        ax0.plot(df["step"], df["train_letter_loss"], ":", color=color)
        ax0.plot(df["step"], df["val_rest_loss"], "--", color=color, alpha=0.6, label=f"{label}: other tokens")
        ax1.plot(df["step"], 100 * df["val_letter_acc"], "-o", color=color, ms=3, label=label)
    chance = 100 * float(np.mean([df["val_letter_chance"].mean() for df in curves.values()]))
    ax1.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.0f}%)")
    ax0.set(xlabel="fine-tuning step", ylabel="cross-entropy (nats)",
            title="answer letter vs the rest of the target (val; dotted: train)")
    ax1.set(xlabel="fine-tuning step", ylabel="letter accuracy (%)", ylim=(0, 100),
            title="the letter's accuracy among the options (val, teacher-forced)")
    ax0.legend(fontsize=7)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def chance_flags(checks: Mapping[str, Mapping]) -> str:
    """Markdown naming each run that is not above chance (`checks`: label -> `experiments.chance_check`), so that a
    table of such runs is read as guesses, not as accuracies; '' when every run is above chance."""
    at_chance = {label: c for label, c in checks.items() if not c["above_chance"]}
    if not at_chance:
        return ""
    listed = "; ".join(f"{label} {c['accuracy']:.1f}% against {c['chance']:.1f}% chance (z = {c['z']:+.1f})"
                       for label, c in at_chance.items())
    return (f"**At chance** (not above it by z > 2, {len(at_chance)} of {len(checks)} runs): {listed}. Their "
            "accuracies are guesses; a comparison between them says nothing about the methods.")
