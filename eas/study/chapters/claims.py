"""Chapter 8, the paper's claims at a glance: every verdict the book makes (the claims ledger) beside the
paper's own number, and every table and figure of the paper with its status here."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eas.study import ledger, paper

SHOWN = ["chapter", "claim", "task", "method_a", "method_b", "a", "b", "difference", "ci_low", "ci_high",
         "p_adjusted", "seeds", "items", "verdict", "paper_value", "paper_source"]
OUTCOMES = ("holds", "does not hold", "cannot tell")


def outcome(verdict: str) -> str:
    """'holds' | 'does not hold' | 'cannot tell' from a (corrected) verdict sentence."""
    text = str(verdict).strip().lower()
    for o in ("does not hold", "holds", "cannot tell"):
        if text.startswith(o):
            return o
    raise ValueError(f"not a verdict: {verdict!r}; expected it to start with one of {OUTCOMES}.")


def claims_frame(profile: str, path=None) -> pd.DataFrame:
    """The ledger's claims under `profile` with the paper's value, headline claims first, then by chapter."""
    table = ledger.claims_table(profile, path)
    if table.empty:
        return table
    table = table.assign(outcome=table.verdict.map(outcome), headline=table.headline.map(bool))
    return table.sort_values(["headline", "chapter", "family", "claim"], ascending=[False, True, True, True],
                             kind="stable").reset_index(drop=True)


def outcome_counts(claims: pd.DataFrame) -> pd.DataFrame:
    """Verdicts per chapter: how many hold, do not hold, cannot tell (after each family's correction)."""
    counts = pd.crosstab(claims.chapter, claims.outcome).reindex(columns=list(OUTCOMES), fill_value=0)
    counts.loc["all chapters"] = counts.sum()
    return counts


def summary(claims: pd.DataFrame, profile: str) -> str:
    """A paragraph: how many verdicts, how they came out, what the correction and the headline claims are."""
    if claims.empty:
        return (f"No verdicts are recorded under the `{profile}` profile yet: run chapters 2-7 under it "
                f"(`make notebooks PROFILE={profile}`), then this page.")
    n, counts = len(claims), claims.outcome.value_counts()
    families = claims.family.nunique()
    head = claims[claims.headline]
    heads = "; ".join(f"{r.chapter} {r.claim} ({r.method_a} vs {r.method_b}): {outcome(r.verdict)}"
                      for r in head.itertuples())
    return (f"Under `{profile}` the book makes **{n} verdicts** in {families} families: "
            f"{counts.get('holds', 0)} hold, {counts.get('does not hold', 0)} do not hold, and "
            f"{counts.get('cannot tell', 0)} cannot be told apart at this budget. Each family (one per chapter) "
            "is corrected with Holm's method, so the chance that any verdict of a family says 'holds' or "
            "'does not hold' wrongly is at most 5% per family; across families it is not controlled, and a reader "
            f"who counts the {families} families should expect about one wrong decisive verdict in twenty "
            "families. The pre-registered headline claims: " + (heads if heads else "none recorded") + ".")


def claims_display(claims: pd.DataFrame) -> pd.DataFrame:
    """The ledger's columns worth reading, rounded, one row per claim."""
    shown = claims[[c for c in SHOWN if c in claims.columns]].copy()
    for col in ("a", "b", "difference", "ci_low", "ci_high", "paper_value"):
        shown[col] = shown[col].astype(float).round(1)
    shown["p_adjusted"] = shown["p_adjusted"].astype(float).round(3)
    return shown


def claims_figure(claims: pd.DataFrame) -> plt.Figure:
    """Every claim's difference and interval (points), coloured by outcome; the paper's value as a cross."""
    colours = {"holds": "tab:green", "does not hold": "tab:red", "cannot tell": "tab:grey"}
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.38 * max(len(claims), 1)))
    for i, r in enumerate(claims.itertuples()):
        c = colours[r.outcome]
        ax.plot([r.ci_low, r.ci_high], [i, i], color=c, lw=2)
        ax.plot([r.difference], [i], "o", color=c)
        if isinstance(r.paper_value, float) and not math.isnan(r.paper_value):
            ax.plot([r.paper_value], [i], "x", color="black")
    ax.axvline(0, color="black", lw=0.8)
    labels = [f"{r.chapter[:2]} {r.claim}" + (" *" if r.headline else "") for r in claims.itertuples()]
    ax.set(yticks=np.arange(len(claims)), yticklabels=labels, ylim=(len(claims) - 0.5, -0.5),
           xlabel="difference A - B, points (line: 95% interval; x: the paper; * headline)",
           title="every verdict of the book: green holds, red does not hold, grey cannot tell")
    fig.tight_layout()
    return fig


def accuracy_overview(profile: str, path=None) -> pd.DataFrame:
    """Every evaluated run of the book (the accuracy ledger): accuracy against chance, by chapter and method."""
    acc = ledger.read_accuracy(profile, path)
    if acc.empty:
        return acc
    acc = acc.assign(above_chance=(acc.accuracy.astype(float) - acc.chance.astype(float)).round(1))
    return acc.sort_values(["chapter", "task", "method", "k", "seed"]).reset_index(drop=True)


def artifacts() -> pd.DataFrame:
    """The paper's tables and figures with their status here, in the paper's order, and a count per status."""
    table = ledger.artifacts_table()
    unknown = set(table.status) - set(paper.STATUSES)
    if unknown:
        raise ValueError(f"unknown artifact status {sorted(unknown)}; expected one of {list(paper.STATUSES)}.")
    return table


def artifact_counts(table: pd.DataFrame) -> str:
    counts = table.status.value_counts()
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in paper.STATUSES) + f" (of {len(table)})."
