"""Chapter 4, what the PIA needs (Tables 6-8): its design switches, the number of skipped MHAs and its hidden
size, each run fine-tuned, evaluated and timed beside the paper's tables, and the chapter's verdicts.

    run_label(hidden, setting, k)               a run's name: "32-hidden reparam k=12"
    run_labels(rows)                            run key -> that name (timing labels, the accuracy ledger)
    runs_table(rows, timing, labels)            one row per run: setting, k, hidden, loss, seconds, decode time
    table6(accuracy, timing)                    the design switches beside the paper's Table 6
    table7(accuracy, timing, params_pct)        the number of skipped MHAs beside the paper's Table 7
    table8(accuracy, params_pct, trainable)     the hidden size beside the paper's Table 8
    tables_figure(t6, t7, t8, n=..., ...)       time per row (Table 6), accuracy and time against k and hidden
    one_run_spread(correct6)                    the seed spread that widens the one-run verdicts (or None)
    best_k_selection(correct7, ...)             the best k picked on half the items, the largest k against it
                                                on the other half (eas.study.stats.select_then_compare)
    family(correct6, correct7, correct8, ...)   the chapter's verdicts (one family; the headline: the PIA with
                                                against without information exchange, over its seeds)
    static_accuracy_row(static, run, ...)       the static-router evaluation as an accuracy-ledger row
    router_note(static)                         how far the calibrated routers sit from an even mix
    static_router_text(static, per_prompt, ...) the fixed router against per-prompt routing (corrected verdict)
    claim_figure(shown, seeds, metric)          the headline pair per seed beside every paired difference
    corrected(rows, recorded)                   the family's rows with the verdicts after Holm's correction
    verdict_table(shown)                        the family as a table, verdicts corrected
    conclusion(by_claim, ...)                   the verdict paragraphs of Tables 6-8 (corrected verdicts)
    seed_note(seed_sd)                          what the one-run verdicts' intervals cover
"""

from __future__ import annotations

import json
from typing import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from eas.study import ledger, paper, report, stats
from eas.study.experiments import comparison_table

CHAPTER = FAMILY = "04_pia_ablation"
HEADLINE_ROWS = ("info_exchange", "base")  # the headline pair: A with information exchange, B without
NAN_ROW = (float("nan"), float("nan"))

# claim ids of the family (as eas.study.paper.PAPER_CLAIMS names them) and the label of each in the figure
HEADLINE = "info_exchange_gain"
MERGE = "reparam_no_worse"
STATIC = "static_router_no_worse"
LARGEST_K = "largest_k_no_worse_than_best"
HIDDEN = "larger_pia_better"


def skip_hidden(hidden) -> int:
    """The skip-replacing PIA's hidden size from a results row's `hidden` cell (JSON of the PIA sizes, e.g.
    '{"skip_hidden": 32, "adapt_hidden": 8}', or that dict, or the number itself)."""
    if isinstance(hidden, str):
        hidden = json.loads(hidden)
    return int(hidden["skip_hidden"] if isinstance(hidden, Mapping) else hidden)


def run_label(hidden, setting: str, k: int) -> str:
    """A run's name, e.g. "32-hidden reparam k=12": the skip-replacing PIA's hidden size, the Table 6 row, k."""
    return f"{skip_hidden(hidden)}-hidden {setting} k={int(k)}"


def run_labels(rows: pd.DataFrame) -> dict:
    """Run key -> `run_label` of a results frame (eas.study.experiments rows with key, hidden, pia_setting, k):
    the label each run is timed under and its method in the accuracy ledger (k and seed are columns there)."""
    return {key: run_label(h, s, k) for key, h, s, k in zip(rows.key, rows.hidden, rows.pia_setting, rows.k)}


def runs_table(rows: pd.DataFrame, timing: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """One row per run (`rows` indexed by key): its setting, k, hidden size, final loss, seconds of training and
    evaluation, and decode ms / token and ms / sample from `timing` (indexed by label, `labels`: key -> label)."""
    timed = timing.loc[[labels[key] for key in rows.index]]
    return pd.DataFrame({"pia_setting": rows.pia_setting.to_numpy(), "k": rows.k.to_numpy(),
                         "hidden": rows.hidden.map(skip_hidden).to_numpy(),
                         "final_train_loss": rows.final_train_loss.to_numpy(),
                         "train_wall_s": rows.train_wall_s.to_numpy(), "eval_wall_s": rows.eval_wall_s.to_numpy(),
                         "ms / token": timed.decode_ms_per_token.to_numpy(),
                         "ms / sample": timed.ms_per_sample.to_numpy()})


def table6(accuracy: Mapping[str, float], timing: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table 6's rows (keys of `accuracy`, in its order) with our accuracy, decode ms / token, ms / sample and the
    decode time's relative IQR ("noise"), beside the paper's accuracy and s / sample; times also relative to the
    first row, ours and the paper's. `timing`: row -> a timing row (decode_ms_per_token, ms_per_sample,
    decode_ms_per_token_iqr)."""
    ref = paper.table6_view()
    t6 = pd.DataFrame([{"setting": ref[r][0], "accuracy": acc, "ms / token": timing[r]["decode_ms_per_token"],
                        "ms / sample": timing[r]["ms_per_sample"],
                        "noise": timing[r]["decode_ms_per_token_iqr"] / timing[r]["decode_ms_per_token"],
                        "paper accuracy": ref[r][1], "paper s / sample": ref[r][2]}
                       for r, acc in accuracy.items()]).set_index("setting")
    first = t6.iloc[0]
    t6["time vs first row"] = t6["ms / sample"] / first["ms / sample"]
    t6["paper time vs first row"] = t6["paper s / sample"] / first["paper s / sample"]
    return t6


def table7(accuracy: Mapping[int, float], timing: Mapping[int, Mapping],
           params_pct: Mapping[int, float]) -> pd.DataFrame:
    """Per k (keys of `accuracy`): accuracy, decode ms / token and its IQR, time against the base model, updated
    parameters (%), beside the paper's Table 7 accuracy and s / sample (NaN where it has no row for that k)."""
    ref = paper.table7_view()
    return pd.DataFrame([{"k": k, "accuracy": acc, "ms / token": timing[k]["decode_ms_per_token"],
                          "ms / token IQR": timing[k]["decode_ms_per_token_iqr"],
                          "time vs base": timing[k]["time_vs_base"], "updated params %": params_pct[k],
                          "paper accuracy": ref.get(k, NAN_ROW)[0], "paper s / sample": ref.get(k, NAN_ROW)[1]}
                         for k, acc in accuracy.items()]).set_index("k")


def table8(accuracy: Mapping[int, float], params_pct: Mapping[int, float],
           trainable: Mapping[int, int]) -> pd.DataFrame:
    """Per hidden size: accuracy, updated parameters (%) and trainable parameters, beside the paper's Table 8
    accuracy and updated parameters (NaN where it has no row for that size)."""
    ref = paper.table8_view()
    return pd.DataFrame([{"hidden": h, "accuracy": acc, "updated params %": params_pct[h],
                          "trainable params": int(trainable[h]), "paper accuracy": ref.get(h, NAN_ROW)[0],
                          "paper updated params %": ref.get(h, NAN_ROW)[1]}
                         for h, acc in accuracy.items()]).set_index("hidden")


def tables_figure(t6: pd.DataFrame, t7: pd.DataFrame, t8: pd.DataFrame, *, n: int, metric: str,
                  k: int) -> plt.Figure:
    """Three panels: Table 6's time per sample against its first row, ours beside the paper's (our accuracy
    written in the bars); Table 7's accuracy (+/- 1 binomial SE over `n` items) and decode time against k;
    Table 8's accuracy and updated parameters against the hidden size."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    x = list(range(len(t6)))
    axes[0].bar([i - 0.2 for i in x], t6["time vs first row"], width=0.4, label="ours")
    axes[0].bar([i + 0.2 for i in x], t6["paper time vs first row"], width=0.4, label="paper")
    axes[0].set(xticks=x, ylabel="time / sample vs first row", title=f"Table 6 (k={k})")
    axes[0].set_xticklabels(t6.index, rotation=20)
    for i, a in zip(x, t6.accuracy):
        axes[0].annotate(f"{a:.0f}", (i - 0.2, 0.02), ha="center", color="white", fontsize=8)
    axes[0].legend()
    axes[1].errorbar(t7.index, t7.accuracy, yerr=report.accuracy_se(t7.accuracy, n), fmt="o-", color="tab:blue",
                     capsize=3)
    axes[1].set(xlabel="skipped MHAs (k)", ylabel=f"accuracy ({metric}), +/- 1 SE", title="Table 7",
                xticks=list(t7.index))
    twin = axes[1].twinx()
    twin.errorbar(t7.index, t7["ms / token"], yerr=t7["ms / token IQR"] / 2, fmt="s--", color="tab:orange",
                  capsize=3)
    twin.set_ylabel("decode ms / token", color="tab:orange")
    axes[2].errorbar(t8.index, t8.accuracy, yerr=report.accuracy_se(t8.accuracy, n), fmt="o-", color="tab:blue",
                     capsize=3)
    axes[2].set(xscale="log", xlabel="PIA hidden size", ylabel=f"accuracy ({metric}), +/- 1 SE",
                title=f"Table 8 (k={k})")
    axes[2].set_xticks(list(t8.index), [str(h) for h in t8.index])
    axes[2].minorticks_off()
    twin = axes[2].twinx()
    twin.plot(t8.index, t8["updated params %"], "s--", color="tab:green")
    twin.set_ylabel("updated params %", color="tab:green")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- verdicts

def best_k_selection(correct7: Mapping[int, object], *, margin: float, seed_sd=None,
                     split_seed: int = 0) -> stats.Selection:
    """The best k picked on the selection half of the test items, then the largest k (the last of `correct7`)
    against it on the other half: "k=last is at most `margin` points worse than the best k". `correct7`: k ->
    per-item correctness (uid, correct) at the chapter's seed; `seed_sd` widens the one-seed comparison. Items are
    split by `stats.split_items` (a hash of each id and `split_seed`). `.comparison` is None when the largest k is
    itself the best on the selection half."""
    labels = {f"k={k}": run for k, run in correct7.items()}
    last = list(labels)[-1]
    return stats.select_then_compare(last, labels, claim="no_worse", margin=margin, seed_sd=seed_sd,
                                     split_seed=split_seed)


def one_run_spread(correct6: Mapping[str, list]) -> tuple[float, float] | None:
    """The `seed_sd` of the chapter's one-run verdicts: (sd, sd) with sd the training-seed spread (points) of the
    headline pair's information-exchange side, the full design, measured over its seeds; None unless both sides
    of the pair have 2+ seeds (`report.seed_spread`)."""
    a, b = HEADLINE_ROWS
    if a not in correct6 or b not in correct6:
        return None
    spread = report.seed_spread(list(correct6[a]), list(correct6[b]))
    return None if spread is None else (spread[0], spread[0])


def _items(n: int) -> str:
    return f"{n} item{'s' if n != 1 else ''}"


def _k_label(selection: stats.Selection, margin: float) -> str:
    last = next(reversed(selection.selection_accuracy))
    return f"{last} - {selection.best} (other half; no worse by {margin:g})"


def family(correct6: Mapping[str, list], correct7: Mapping[int, object], correct8: Mapping[int, object], *,
           margin: float, static=None, split_seed: int = 0) -> tuple[dict, list[dict], stats.Selection | None]:
    """The chapter's family of verdicts, as (label -> comparison row, the verdicts for
    `eas.study.report.record_verdicts` in the same order, the Table 7 selection or None).

    `correct6`: Table 6 row -> per-item correctness frames, one per training seed (the headline pair's rows
    several, the others one); `correct7`: k -> one frame; `correct8`: hidden size -> one frame; `static`: the
    static router's frame on the `reparam` run, or None. The claims, each where its runs exist:

    - headline: information exchange better than the one-path Base, over every seed of the pair;
    - the merged PIA (`reparam`) at most `margin` points worse than the unmerged frozen-bias one, and the static
      router at most `margin` worse than per-prompt routing: each side the same trained function, so training-seed
      spread does not enter and the interval covers item noise (and rounding) only;
    - the largest k at most `margin` worse than the best k, picked on half the items and compared on the other
      half (`best_k_selection`);
    - the largest hidden size better than the smallest.

    The last two are one run each; when the headline pair has 2+ seeds they are widened by the seed spread of its
    information-exchange side (the full design), else they cover item noise only (and say so)."""
    rows, out, selection = {}, [], None
    a, b = HEADLINE_ROWS
    sd = one_run_spread(correct6)
    if a in correct6 and b in correct6:
        runs_a, runs_b = list(correct6[a]), list(correct6[b])
        label = "+ Info. Exc. - Base" + (f", {len(runs_a)} seeds" if len(runs_a) > 1 else "")
        rows[label] = report.comparison_row(runs_a, runs_b)
        out.append({"claim": HEADLINE, "method_a": "+ Info. Exc.", "method_b": "Base", "row": rows[label],
                    "headline": True})
    if "reparam" in correct6 and "frozen_bias" in correct6:
        label = f"+ Re-param. - + Frozen bias (no worse by {margin:g})"
        rows[label] = report.comparison_row(correct6["reparam"][0], correct6["frozen_bias"][0], claim="no_worse",
                                            margin=margin)
        out.append({"claim": MERGE, "method_a": "+ Re-param.", "method_b": "+ Frozen bias", "row": rows[label],
                    "kind": "no_worse", "margin": margin})
    if static is not None and "reparam" in correct6:
        label = f"static router - per-prompt router (no worse by {margin:g})"
        rows[label] = report.comparison_row(static, correct6["reparam"][0], claim="no_worse", margin=margin)
        out.append({"claim": STATIC, "method_a": "static router", "method_b": "per-prompt router",
                    "row": rows[label], "kind": "no_worse", "margin": margin})
    if len(correct7) > 1:
        selection = best_k_selection(correct7, margin=margin, seed_sd=sd, split_seed=split_seed)
        if selection.comparison is not None:
            cmp = selection.comparison
            label = _k_label(selection, margin)
            rows[label] = {**cmp.to_row("no_worse", margin), "comparison": cmp}
            out.append({"claim": LARGEST_K, "method_a": next(reversed(selection.selection_accuracy)),
                        "method_b": selection.best, "row": rows[label], "kind": "no_worse", "margin": margin})
    if len(correct8) > 1:
        h0, h1 = list(correct8)[0], list(correct8)[-1]
        label = f"hidden {h1} - hidden {h0}"
        rows[label] = report.comparison_row(correct8[h1], correct8[h0], seed_sd=sd)
        out.append({"claim": HIDDEN, "method_a": f"hidden {h1}", "method_b": f"hidden {h0}", "row": rows[label]})
    return rows, out, selection


def static_accuracy_row(static: Mapping, run: Mapping, *, metric: str, profile: str) -> dict:
    """The static-router evaluation of the run `run` (its results row) as an accuracy-ledger row: the run's label
    with "static router" in front, its task, k, seed, items and chance, the static router's accuracy."""
    label = f"static router ({static['calibration']} prompts), {run_label(run['hidden'], run['pia_setting'], run['k'])}"
    return ledger.accuracy_row(chapter=CHAPTER, method=label, task=run["task"], k=run["k"], seed=run["seed"],
                               items=run["n_eval"], accuracy=static[metric], chance=run["chance"], profile=profile)


def router_note(static: Mapping) -> str:
    """The calibrated routers' weight on the first path across the skipped layers, and, when every one sits within
    0.05 of an even mix, that fixing them can change little at this budget."""
    lo, hi = static["router_first_path_min"], static["router_first_path_max"]
    text = f"The calibrated routers give the first path a weight between {lo:.3f} and {hi:.3f} across the skipped " \
           "layers (0.5 is an even mix"
    if max(abs(lo - 0.5), abs(hi - 0.5)) < 0.05:
        text += ("; the routers have barely moved from even in this training, so fixing them changes little: a "
                 "longer budget may make the router matter")
    return text + ")."


def static_router_text(static: Mapping, per_prompt: float, row: Mapping, *, margin: float, metric: str) -> str:
    """The static router against per-prompt routing on the same trained adapters (`row`: the family's corrected
    comparison row, fixed router = A), with the corrected verdict on "costs at most `margin` points"."""
    return (f"With the router fixed per task (calibrated on {static['calibration']} training prompts) the same "
            f"trained adapters score {static[metric]:.1f} against {per_prompt:.1f} with per-prompt routing: "
            f"{row['diff']:+.1f} points, 95% interval [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}] (paired over "
            f"{row['n_items']} questions: {row['a_only']:.0f} only the fixed router gets right, {row['b_only']:.0f} "
            f"only per-prompt routing; p = {row['p']:.3g}, McNemar). Both sides are the same trained model, so the "
            "interval covers item noise only, and no training-seed spread enters. The claim that a fixed router "
            f"costs at most {margin:g} points, after Holm's correction over the chapter's family: "
            f"**{row['verdict']}** (detectable {row['mdd']:.1f}). " + router_note(static)
            + " Its merge cost and decode time are in chapter 5 (`eas-merged-static`).")


def claim_figure(shown: Mapping[str, Mapping], *, seeds, metric: str, margin: float) -> plt.Figure:
    """The headline pair's accuracy per training seed (when the family has it) beside every paired difference."""
    head = next((r for label, r in shown.items() if label.startswith("+ Info. Exc. - Base")), None)
    per_seed = {} if head is None else {"+ Info. Exc.": head["acc_a_seeds"], "Base": head["acc_b_seeds"]}
    return report.claim_figure(per_seed, shown, ylabel=f"accuracy ({metric})",
                               seeds_title=f"Table 6, training seeds {list(seeds)}",
                               title="paired 95% intervals of the differences (red: the no-worse margin)",
                               margin=margin)


def verdict_table(shown: Mapping[str, Mapping]) -> pd.DataFrame:
    """The family as a table: accuracies, difference, interval, p, Holm's adjusted p, corrected verdict."""
    table = comparison_table(dict(shown))
    table.insert(table.columns.get_loc("verdict"), "p (Holm)", [r["p_adjusted"] for r in shown.values()])
    return table


def _merge_text(row: Mapping, t6: pd.DataFrame, margin: float) -> str:
    fb, rp = t6.loc["+ Frozen bias"], t6.loc["+ Re-param."]
    ratio = rp["ms / sample"] / fb["ms / sample"]
    band = max(fb.noise, rp.noise)
    ref = paper.table6_view()
    paper_ratio = ref["reparam"][2] / ref["frozen_bias"][2]
    effect = ("the merge pays off here" if ratio < 1 - band else "the merge costs time here" if ratio > 1 + band
              else "within timing noise, the merge neither saves nor costs time here")
    flips = row["a_only"] + row["b_only"]
    cause = ("none, as an exact merge should" if flips == 0 else
             f"{flips:.0f} questions answered differently, which an exact merge explains only through fp32 rounding "
             "flipping close greedy choices")
    return (f"Merging changes accuracy by {row['diff']:+.1f} points ({cause}; interval [{row['ci_low']:+.1f}, "
            f"{row['ci_high']:+.1f}]; both runs train the same function from the same seed, so the interval covers "
            f"item noise only); the claim that merging costs at most {margin:g} points: **{row['verdict']}**. It "
            f"changes time per sample by a factor {ratio:.2f} (noise +/-{band:.2f}; paper {paper_ratio:.2f}): "
            f"{effect}."
            + ("" if ratio < 1 - band else " The merge removes only the PIA branches; chapter 5 measures how small "
                                           "they are next to the FFN they are folded into on this hardware, and "
                                           "what the merge costs."))


def _table7_text(t7: pd.DataFrame, selection: stats.Selection | None, row: Mapping | None, margin: float) -> str:
    ref = paper.table7_view()
    acc, sec = t7.accuracy, t7["ms / token"]
    last = t7.index[-1]
    text = "**Table 7.** "
    if selection is None:
        text += f"Only k={last} is run, so there is no best k to compare it with. "
    else:
        picked = ", ".join(f"{acc_k:.1f} at {k}" for k, acc_k in selection.selection_accuracy.items())
        text += (f"The best k is picked on a selection half of the test items ({_items(selection.n_selection)}, "
                 f"split by a hash of each item's id) and the largest k is compared with it on the other "
                 f"{_items(selection.n_comparison)}, so the choice does not flatter the comparison. On the selection "
                 f"half accuracy peaks at {selection.best} ({picked}); ")
        if row is None:
            text += f"the largest k={last} is the best there, so there is nothing to compare. "
        else:
            text += (f"on the other half, the claim that k={last} costs at most {margin:g} points against "
                     f"{selection.best}: " + report.describe_corrected(row["comparison"], f"k={last}", selection.best,
                                                                        row["verdict"], claim="no_worse",
                                                                        margin=margin) + ". ")
    falls = bool((sec.diff().dropna() < 0).all())
    trend = "falls with every added group of skipped MHAs" if falls else "does not fall at every step of k"
    vs_base = t7["time vs base"]
    return (text + f"Over all items accuracy is highest at k={acc.idxmax()} ({acc.max():.1f}); paper: "
            + ", ".join(f"{v[0]:.1f} at k={k}" for k, v in ref.items()) + ". "
            f"Decode time {trend} ({sec.iloc[0]:.1f} to {sec.iloc[-1]:.1f} ms / token, {vs_base.iloc[0]:.2f}x to "
            f"{vs_base.iloc[-1]:.2f}x of the unmodified model; paper {ref[min(ref)][1]:.2f} to "
            f"{ref[max(ref)][1]:.2f} s per sample).")


def _table8_text(t8: pd.DataFrame, row: Mapping) -> str:
    ref = paper.table8_view()
    lo, hi = min(ref), max(ref)
    h0, h1 = t8.index[0], t8.index[-1]
    par = t8["updated params %"]
    return (f"**Table 8.** The paper's gain from a larger PIA ({ref[hi][0] - ref[lo][0]:+.1f} points from hidden {lo} "
            f"to {hi}); here, hidden {h1} against {h0}: "
            + report.describe_corrected(row["comparison"], f"hidden {h1}", f"hidden {h0}", row["verdict"])
            + f". Updated parameters go from {par.iloc[0]:.3f}% to {par.iloc[-1]:.3f}% of the model (paper "
            f"{ref[lo][1]:.2f}% to {ref[hi][1]:.2f}% of 7B).")


def corrected(rows: Mapping[str, Mapping], recorded: pd.DataFrame) -> tuple[dict, dict]:
    """(label -> comparison row, claim id -> the same row), each with the verdict after Holm's correction and
    its adjusted p, from `family`'s rows and `recorded` as `record_verdicts` returned it for `family`'s verdicts."""
    if recorded.empty:
        return {}, {}
    shown = report.corrected_rows(rows, recorded)
    return shown, dict(zip(recorded.claim, shown.values()))


def conclusion(by_claim: Mapping[str, Mapping], *, t6: pd.DataFrame, t7: pd.DataFrame, t8: pd.DataFrame,
               selection: stats.Selection | None, margin: float, seed_sd=None) -> str:
    """The chapter's verdict paragraphs: Table 6's headline (information exchange) and the merge's accuracy and
    time, Table 7's best k (picked on held-out items) against the largest k, Table 8's hidden sizes, each beside
    the paper and with the verdict after Holm's correction (`by_claim`: claim id -> corrected row, `corrected`),
    and what the one-run verdicts cover (`seed_sd`: `one_run_spread`)."""
    parts = []
    if HEADLINE in by_claim:
        ref = paper.table6_view()
        head = by_claim[HEADLINE]
        parts.append(f"**Table 6.** The paper's gain from information exchange "
                     f"({ref['info_exchange'][1] - ref['base'][1]:+.1f} points): "
                     + report.describe_corrected(head["comparison"], "with information exchange", "without",
                                                 head["verdict"]) + ".")
    if MERGE in by_claim:
        parts.append(_merge_text(by_claim[MERGE], t6, margin))
    parts.append(_table7_text(t7, selection, by_claim.get(LARGEST_K), margin))
    if HIDDEN in by_claim:
        parts.append(_table8_text(t8, by_claim[HIDDEN]))
    if LARGEST_K in by_claim or HIDDEN in by_claim:
        parts.append(seed_note(seed_sd))
    return "\n\n".join(parts)


def seed_note(seed_sd) -> str:
    """What the one-run verdicts of Tables 7 and 8 cover: item noise only, or item noise and the seed spread
    measured on the headline pair (`one_run_spread`)."""
    if seed_sd is None:
        return ("Tables 7 and 8 train each configuration once, and the headline pair has a single seed under this "
                "profile, so their intervals cover item noise only: they speak of these trained models, not of the "
                "settings.")
    return (f"Tables 7 and 8 train each configuration once; their intervals are widened by the training-seed spread "
            f"of the PIA with information exchange measured on the headline pair's seeds ({seed_sd[0]:.1f} points "
            "per run), so they speak of the settings as far as that spread holds for them.")
