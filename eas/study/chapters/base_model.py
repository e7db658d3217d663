"""Chapter 1, the base model: zero-shot accuracy beside the paper's "ZS" row (Table 3) and chance, and what
removing a single MHA or FFN costs the untrained model, as tables, sentences and ledger rows.

    zero_shot_table(zs)                      our zero-shot accuracy per column, chance, the paper's LLaVA-7B (ZS)
    scienceqa_breakdown(zs)                  the ScienceQA-format columns (subject, context, grade) of our ZS run
    closed_z(correct)                        closed VQA's number correct against a fair coin, in SDs
    chance_z(zs, details)                    per column: how many SDs above uniform guessing
    zero_shot_text(table, z, ...)            the zero-shot verdict against chance, and what open VQA's score means
    zero_shot_accuracy_rows(table, ...)      the zero-shot columns as accuracy-ledger rows
    removal_figure(removal, probe_task)      loss and accuracy change from removing each layer's MHA or FFN alone
    removal_summary(removal)                 per kind (MHA, FFN): median and max loss increase, harmless count
    premise_text(removal, probe_task)        whether removing one MHA costs less than removing one FFN
"""

from __future__ import annotations

import math
from typing import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from eas.study import ledger, paper

CHAPTER = "01_base_model"
METHOD = "base model, zero-shot"
CLOSED_CHANCE = 50.0  # closed VQA questions are answered yes or no
HARMLESS = 0.05       # a removal "costs little" below this share of the full model's loss
NAN = float("nan")

# table row -> (task, the zero-shot set it is scored on, the score's column, the answer type it counts, method label)
ROWS = {
    "ScienceQA-format Avg": ("scienceqa", "scienceqa", "scienceqa:Avg", None, METHOD),
    "VQA Open": ("vqa", "vqa", "vqa:Open", "open", f"{METHOD} (open)"),
    "VQA Open (exact match)": ("vqa", "vqa", "vqa:Open (exact)", "open", f"{METHOD} (open, exact match)"),
    "VQA Closed": ("vqa", "vqa", "vqa:Closed", "closed", f"{METHOD} (closed)"),
    "Classification (20%)": ("classification", "classification (20%)", "classification (20%):Acc", None,
                             f"{METHOD} (20% split)"),
    "Classification (50%)": ("classification", "classification (50%)", "classification (50%):Acc", None,
                             f"{METHOD} (50% split)"),
}
CHANCE = {"ScienceQA-format Avg": "scienceqa:chance", "Classification (20%)": "classification (20%):chance",
          "Classification (50%)": "classification (50%):chance"}


def zero_shot_table(zs: Mapping[str, float]) -> pd.DataFrame:
    """Our zero-shot accuracy per column (`zs`: runs.score_sets' "{set}:{column}" values), the chance level where
    one exists (open VQA has none), and Table 3's LLaVA-7B-ZS row (the paper has no zero-shot ScienceQA row)."""
    ref = paper.zero_shot_view()
    chance = {row: zs[key] for row, key in CHANCE.items()}
    chance["VQA Closed"] = CLOSED_CHANCE
    return pd.DataFrame({
        "ours (ZS)": {row: zs[spec[2]] for row, spec in ROWS.items()},
        "chance": {row: chance.get(row, NAN) for row in ROWS},
        "paper LLaVA-7B (ZS)": {row: ref.get(row, NAN) for row in ROWS},
    })


def scienceqa_breakdown(zs: Mapping[str, float]) -> pd.DataFrame:
    """The ScienceQA-format columns of our zero-shot run (subject, context modality, grade, Avg), one row."""
    cols = {key.split(":", 1)[1]: v for key, v in zs.items()
            if key.startswith("scienceqa:") and key.split(":", 1)[1] not in ("chance", "chance_z")}
    return pd.DataFrame([cols], index=["ours (ZS)"])


def closed_z(correct) -> float:
    """How many standard deviations the number of correct closed (yes / no) answers lies above a fair coin's n/2."""
    values = pd.Series(correct).astype(bool)
    n = len(values)
    if n == 0:
        return NAN
    return float((values.sum() - n / 2) / math.sqrt(n / 4))


def chance_z(zs: Mapping[str, float], details: Mapping[str, pd.DataFrame]) -> dict:
    """Column -> z above uniform guessing: the tasks' own (runs.score_sets' chance_z) and closed VQA against a coin
    (its open half has no chance level)."""
    closed = details["vqa"][details["vqa"].answer_type == "closed"]
    return {"ScienceQA-format Avg": zs["scienceqa:chance_z"], "VQA Closed": closed_z(closed.correct),
            "Classification (20%)": zs["classification (20%):chance_z"],
            "Classification (50%)": zs["classification (50%):chance_z"]}


def zero_shot_text(table: pd.DataFrame, z: Mapping[str, float], *, n_eval: int, profile: str) -> str:
    """The zero-shot verdict against chance per column (clearly above: z > 2), and why open VQA has no chance
    level and what its exact-match column shows."""
    verdict = "; ".join(f"{name}: {table.loc[name, 'ours (ZS)']:.1f} vs {table.loc[name, 'chance']:.1f} chance, "
                        f"z = {value:+.1f} ({'clearly above' if value > 2 else 'not clearly above'} chance)"
                        for name, value in z.items())
    return (f"**Zero-shot vs chance ({n_eval} test examples per task, profile `{profile}`).** {verdict}. "
            f"Open VQA has no single chance level: its score ({table.loc['VQA Open', 'ours (ZS)']:.1f}) counts "
            "replies that name the asked colour or shape, which a reply naming a random one of the 8 colours or 3 "
            "shapes would do 1 time in 8 or 1 in 3; the exact-match column shows how rarely the base model answers "
            "in the requested form.")


def zero_shot_accuracy_rows(table: pd.DataFrame, details: Mapping[str, pd.DataFrame], *, seed: int,
                            profile: str) -> list[dict]:
    """One accuracy-ledger row per zero-shot column (k 0: nothing skipped), its items counted from the scored
    examples (`details`: runs.score_sets' per-example tables; open and closed VQA counted apart)."""
    rows = []
    for name, (task, set_name, _, answer_type, method) in ROWS.items():
        scored = details[set_name]
        if answer_type is not None:
            scored = scored[scored.answer_type == answer_type]
        rows.append(ledger.accuracy_row(chapter=CHAPTER, method=method, task=task, k=0, seed=seed,
                                        items=len(scored), accuracy=float(table.loc[name, "ours (ZS)"]),
                                        chance=float(table.loc[name, "chance"]), profile=profile))
    return rows


def removal_figure(removal: pd.DataFrame, probe_task: str) -> plt.Figure:
    """Against the layer: the loss increase (symlog) and the answer-token accuracy change from removing that
    layer's MHA alone, and its FFN alone (`removal`: probe.removal_probe rows)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharex=True)
    for kind, colour in (("mha", "tab:blue"), ("ffn", "tab:red")):
        part = removal[removal.kind == kind]
        axes[0].plot(part.layer, part.delta_loss, "o-", color=colour, label=f"remove one {kind.upper()}")
        axes[1].plot(part.layer, part.delta_token_acc, "o-", color=colour, label=f"remove one {kind.upper()}")
    axes[0].set(xlabel="layer", ylabel="loss increase", yscale="symlog", title=f"{probe_task}: task loss")
    axes[1].set(xlabel="layer", ylabel="accuracy change (points)", title="answer-token accuracy")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend()
    fig.tight_layout()
    return fig


def removal_summary(removal: pd.DataFrame) -> pd.DataFrame:
    """Per kind (MHA, FFN) of `removal` (probe.removal_probe rows: kind, layer, loss, delta_loss): median and max
    loss increase, how many single removals cost less than HARMLESS of the full model's loss, and the five
    cheapest layers to remove."""
    full = removal[removal.kind == "none"].iloc[0].loss
    out = {}
    for kind in ("mha", "ffn"):
        cost = removal[removal.kind == kind].set_index("layer").delta_loss
        out[kind.upper()] = {"median loss increase": cost.median(), "max loss increase": cost.max(),
                             f"modules costing < {100 * HARMLESS:g}% loss": int((cost < HARMLESS * full).sum()),
                             "most redundant (lowest cost) layers": list(cost.nsmallest(5).index)}
    return pd.DataFrame.from_dict(out, orient="index")


def premise_text(removal: pd.DataFrame, probe_task: str) -> str:
    """Whether removing a single MHA costs the untrained model less loss than removing a single FFN (medians over
    layers), with how many of each can go for less than HARMLESS extra loss. A description of one probe set,
    not a test: it enters no verdict family."""
    summary = removal_summary(removal)
    harmless = summary.columns[2]
    mha, ffn = summary.loc["MHA"], summary.loc["FFN"]
    n = {kind: int((removal.kind == kind).sum()) for kind in ("mha", "ffn")}
    agrees = mha["median loss increase"] < ffn["median loss increase"]
    return (f"**Removing one module, untrained, {'agrees' if agrees else 'disagrees'} with the paper's premise "
            f"here:** removing a single MHA raises the {probe_task} loss by {mha['median loss increase']:.3f} at the "
            f"median, removing a single FFN by {ffn['median loss increase']:.3f}; {mha[harmless]} of {n['mha']} MHAs "
            f"and {ffn[harmless]} of {n['ffn']} FFNs can be removed alone for less than {100 * HARMLESS:g}% extra "
            "loss, before any adapter is trained. This describes one probe set of the untrained model (medians "
            "over layers, no test), so it is not one of the book's verdicts.")
