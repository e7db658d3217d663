"""What the chapters show, built from results: figures and sentences shared by several chapters.

A chapter's own verdict prose lives in `eas.study.chapters.<chapter>`; this module holds the pieces they
share, so that the same figure or the same kind of sentence is drawn or written once:

    claim_figure(seeds, comparisons)     per-seed accuracies beside a forest plot of paired differences
    accuracy_se(acc, n)                  the binomial standard error of one accuracy, in points
    comparison_sentence(rows)            "name +1.2 points (cannot tell ...; detectable 3.4); ..."
    record_verdicts(...)                 one family of a chapter's verdicts into the claims ledger
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
