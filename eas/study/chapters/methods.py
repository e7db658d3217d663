"""Chapter 7, EAS against the PETL baselines (Tables 1 and 3): the tables, figures and verdict sentences its
notebook shows, built from the runs' rows, their timing and their per-item correctness.

The chapter's verdicts are one family, "07_methods" (`family_verdicts`, recorded through
`eas.study.report.record_family`): the pre-registered headline (the largest EAS_k no worse than the best PETL
baseline, by the parity margin), each EAS row against each baseline, each Table 3 column's EAS rows against
that column's best baseline (all tested, Holm over them together), and the two timing claims (measured
against the timing noise, no test). Where a best baseline is picked, it is picked on the selection half of
the test items and compared on the other half (`eas.study.stats.select_then_compare`), so the choice does
not flatter it. Every sentence that states a verdict reads it from the recorded (corrected) rows.
"""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import pandas as pd

from eas.data.evaluate import METRIC_COLUMNS
from eas.study import experiments, paper, report, stats

CHAPTER = FAMILY = "07_methods"
HEADLINE_CLAIM = "eas_no_worse_than_best_petl"
SPLIT_SEED = 0  # the item split of every held-out selection (stats.split_items: the same in every chapter)
PETL = ("LoRA", "Adapter", "MAM")  # with DAS_k, the PETL / PCETL rows EAS is compared with
COMPARISON_SHOWN = ["acc_a", "acc_b", "diff", "ci_low", "ci_high", "p_claim", "mdd", "seeds_a", "seeds_b"]
LEDGER_SHOWN = ["task", "metric", "a", "b", "difference", "ci_low", "ci_high", "p", "p_adjusted", "seeds", "items",
                "headline", "verdict"]


# ----------------------------------------------------------------------------- the runs and the paper's rows

def budget(P, train_seeds) -> str:
    """The run's budget in one paragraph (markdown), from the chapter's parameters."""
    return (f"**This run's budget** (profile `{P.profile}`, {P.model}, task {P.task}): methods {', '.join(P.methods)} "
            f"(EAS_k for k in {P.eas_ks}, DAS_{P.das_k}); {P.steps} fine-tuning steps of {P.batch_size} examples per "
            f"method (learning rate {P.lr:g}{_own_rates(P)} after {P.warmup_steps} warm-up steps); bandit searches of "
            f"{P.bandit_warmup_steps} warm-up steps and {P.bandit_comparisons} comparisons; at most {P.n_eval} test "
            f"questions, the same for every method. Training seeds: {list(train_seeds)} for EAS against the best "
            f"baseline, {P.seed} for the rest. Parity (\"keeps the accuracy\") is read as at most "
            f"{P.parity_margin:g} points worse.")


def table1_specs(P, *, progress: bool = False) -> tuple[dict, pd.DataFrame | None]:
    """Table 1's spec per row label, and how the learning rates of `lr_grid` were chosen: each such method is run
    at every rate of its grid and keeps the one with the best accuracy on `n_val` val items (ties: the first
    rate listed). The table (row, candidate) -> lr, val accuracy, chosen; None without `lr_grid`."""
    specs = {label: P.method_spec(method, k) for label, (method, k) in P.row_methods().items()}
    tables = []
    for label, candidates in P.rate_candidates().items():
        experiments.run_all(candidates.values(), progress=progress)
        best, table = experiments.choose_by_validation(candidates, P.n_val)
        specs[label] = candidates[best]
        tables.append(table.assign(row=label).reset_index().set_index(["row", "candidate"]))
    return specs, pd.concat(tables) if tables else None


def rate_choice_text(choice: pd.DataFrame | None) -> str:
    """One sentence (markdown) on the rates chosen on the val split, or on the rates being given."""
    if choice is None:
        return ("Every learning rate is a parameter of the profile (`lr`, `method_lr`), not chosen by this run; "
                "`lr_grid` has a run choose them on the val split (`cpu-full` does).")
    picked = choice[choice.chosen]
    rates = ", ".join(f"{row} {lr:g} ({acc:.1f}%)" for (row, _), lr, acc in
                      zip(picked.index, picked.lr, picked.val_accuracy))
    return (f"Learning rates chosen on {int(choice.n_val.iloc[0])} val items, never on test items: {rates}. The "
            "table gives every candidate's val accuracy.")


def _own_rates(P) -> str:
    # any object with the budget's fields (the tests pass a namespace without method_lr or lr_grid)
    given = "".join(f", {m} {r:g}" for m, r in sorted(getattr(P, "method_lr", {}).items()))
    grid = "".join(f", {m} the best on the val split of {', '.join(f'{r:g}' for r in rates)}"
                   for m, rates in sorted(getattr(P, "lr_grid", {}).items()))
    return given + grid


def method_labels(labels, das_k: int) -> tuple[list[str], list[str]]:
    """(EAS rows, PETL baselines) among a table's row labels: EAS_k, and LoRA / Adapter / MAM / DAS_{das_k}
    (full fine-tuning is not a PETL baseline)."""
    labels = list(labels)
    return ([r for r in labels if r.startswith("EAS")],
            [r for r in labels if r in (*PETL, f"DAS_{das_k}")])


def paper_columns(task: str, shown) -> pd.DataFrame:
    """The paper's rows for `task` (eas.study.paper: Table 1 for ScienceQA, Table 3 for the Slake and AID
    analogs): updated params %, FLOPs and time against its base row, and the accuracy columns `shown`."""
    base_gflops, base_s = paper.methods_base()[task]
    return pd.DataFrame({label: {"paper params %": v[0], "paper FLOPs vs base": 1 + v[1] / base_gflops,
                                 "paper time vs base": v[2] / base_s if v[2] else math.nan,
                                 **{f"paper {c}": v[3].get(c, math.nan) for c in shown}}
                         for label, v in paper.methods_view(task).items()}).T


def method_table(rows: pd.DataFrame, timing: pd.DataFrame, task: str) -> pd.DataFrame:
    """Accuracy, updated parameters, FLOPs and time per row label (`rows`: the runs indexed by label; `timing`:
    `experiments.timing_table` indexed by label, with "base"), beside the paper's row of the same label."""
    shown = [c for c in ("Open", "Closed", "Avg", "Acc") if c in METRIC_COLUMNS[task]]
    base = timing.loc["base"]
    ours = timing.loc[rows.index]
    table = pd.DataFrame({
        "updated params %": rows.updated_params_pct,
        **{c: rows[c] for c in shown},
        "GFLOPs / sample": ours.gflops_per_sample,
        "FLOPs vs base": ours.gflops_per_sample / base.gflops_per_sample,
        "ms / sample": ours.ms_per_sample,
        "time vs base": ours.time_vs_base,
        "noise": ours.decode_ms_per_token_iqr / ours.decode_ms_per_token,
    })
    return table.join(paper_columns(task, shown), how="left").dropna(axis=1, how="all")  # Table 3 gives no time


def base_line(timing: pd.DataFrame, tokens: int, repeats: int) -> str:
    b = timing.loc["base"]
    return (f"base model: {b.gflops_per_sample:.2f} GFLOPs / sample, {b.ms_per_sample:.0f} ms / sample "
            f"({b.decode_ms_per_token:.2f} ms / token, {tokens} tokens, {repeats} repeats)")


def tradeoff_figure(table: pd.DataFrame, rows: pd.DataFrame, head: str, task: str) -> plt.Figure:
    """Left: accuracy against time per sample (both against the base model), +/- 1 binomial SE and half the
    timing noise; right: each method's FLOPs and time change against the base model."""
    n = int(rows.n_eval.iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    for label, r in table.iterrows():
        color = "tab:green" if label.startswith("EAS") else "tab:orange" if label.startswith("DAS") else "tab:blue"
        acc = rows.loc[label, head]
        axes[0].errorbar(r["time vs base"], acc, xerr=r["noise"] * r["time vs base"] / 2,
                         yerr=float(report.accuracy_se(acc, n)), fmt="o", color=color, capsize=3)
        axes[0].annotate(label, (r["time vs base"], acc), textcoords="offset points", xytext=(5, 4))
    axes[0].axvline(1.0, color="grey", ls=":", label="base model")
    axes[0].set(xlabel="time per sample vs base (batch 1)", ylabel=f"accuracy ({head}), +/- 1 SE",
                title=f"ours: {task}")
    axes[0].legend()
    x = range(len(table))
    axes[1].bar([i - 0.2 for i in x], table["FLOPs vs base"] - 1, width=0.4, label="FLOPs change")
    axes[1].bar([i + 0.2 for i in x], table["time vs base"] - 1, width=0.4, label="time change")
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set(xticks=list(x), ylabel="change vs base model", title="FLOPs and time against the base model")
    axes[1].set_xticklabels(table.index)
    axes[1].legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- accuracy comparisons

def headline_selection(top_runs: list, petl_runs: dict, *, margin: float, seed_runs: dict | None = None,
                       split_seed: int = SPLIT_SEED) -> stats.Selection:
    """The headline: the best PETL baseline picked by its accuracy on the selection half of the items (one run
    each, `petl_runs`: label -> per-item correctness), and EAS (`top_runs`: one run per training seed) against
    it on the other half, "no worse by more than `margin`". `seed_runs` (label -> runs, one per seed) gives the
    winner's seeds once trained; before that the winner's one run is used. The pick depends only on the
    candidates' selection-half accuracies, so calling this before and after training the seeds picks alike."""
    seeds = seed_runs or {}
    return stats.select_then_compare(top_runs[0], dict(petl_runs), claim="no_worse", margin=margin,
                                     a_seeds=list(top_runs) if len(top_runs) > 1 else None,
                                     candidate_seeds=lambda best: list(seeds.get(best, [petl_runs[best]])),
                                     split_seed=split_seed)


def baseline_comparisons(eas_runs: dict, petl_runs: dict, *, margin: float, seed_sd=None) -> dict:
    """"EAS_k - baseline" -> a comparison row (one run each, on every test item: no choice is made here), for
    every EAS row against every baseline, "no worse by more than `margin`"; `seed_sd` (the headline pair's
    seed spread, when it has several seeds) widens each interval by the training-seed noise."""
    return {f"{e} - {b}": {**report.comparison_row(eas_runs[e], petl_runs[b], claim="no_worse", margin=margin,
                                                   seed_sd=seed_sd), "name_a": e, "name_b": b}
            for e in eas_runs for b in petl_runs}


def seed_accuracies(runs: dict) -> dict:
    """label -> each training seed's accuracy (points) on every item, from lists of per-item correctness."""
    return {label: [100.0 * float(v.mean()) for v in stats.pair_by_item(list(r), list(r)).a]
            for label, r in runs.items()}


def headline_label(selection: stats.Selection, top: str) -> str:
    cmp = selection.comparison
    return (f"{top} - {selection.best}, held-out half, {cmp.seeds_a}/{cmp.seeds_b} seeds" if cmp is not None
            else f"{top} - {selection.best}")


def comparisons_figure(selection: stats.Selection, shown: dict, seed_accs: dict, *, top: str, head: str,
                       margin: float) -> plt.Figure:
    """Left: EAS's and the best baseline's accuracy per training seed; right: every comparison's difference and
    interval (the headline on the held-out half first), with the parity margin."""
    rows = {headline_label(selection, top): selection.to_row(), **shown}
    return report.claim_figure(seed_accs, rows, ylabel=f"accuracy ({head})",
                               seeds_title=f"training seeds, all items ({', '.join(seed_accs)})",
                               title=f"EAS minus each baseline (red: -{margin:g}, the parity margin)", margin=margin)


def comparison_display(rows: dict) -> pd.DataFrame:
    """The comparisons' numbers (points; `p_claim` is the p of the parity test at -margin), without their
    verdicts: those are stated after Holm's correction over the chapter's family."""
    return pd.DataFrame([{c: r[c] for c in COMPARISON_SHOWN} for r in rows.values()], index=list(rows))


# ----------------------------------------------------------------------------- timing

def timing_claims(table: pd.DataFrame, eas_rows: list, petl: list) -> dict:
    """The two timing claims from `method_table`'s time ratios and their noise band (the largest relative
    decode IQR): EAS is the fastest method (every EAS row below the fastest baseline by more than the band:
    holds; any above it by more: does not hold), and every other method is slower than the base model."""
    t = table["time vs base"]
    band = float(table.noise.max())
    fastest_other = t[petl].idxmin()
    fastest_eas = t[eas_rows].idxmin()
    if all(t[r] < t[fastest_other] - band for r in eas_rows):
        fastest = "holds"
    elif any(t[r] > t[fastest_other] + band for r in eas_rows):
        fastest = "does not hold"
    else:
        fastest = "cannot tell (within timing noise)"
    below = [r for r in petl if t[r] < 1 - band]
    return {"band": band, "times": {r: float(t[r]) for r in [*eas_rows, *petl]}, "fastest_other": fastest_other,
            "fastest_eas": fastest_eas, "eas_fastest": fastest, "below_base": below,
            "others_slower": "holds" if not below else "does not hold"}


def paper_time_ratios() -> str:
    """Table 1's time per sample against its base row for its largest EAS row and the PETL rows."""
    base_s = paper.table1_base()[1]
    top = max((k for k in paper.TABLE1 if k.startswith("EAS")), key=lambda k: int(k.split("_")[1]))
    return ", ".join(f"{k} {paper.TABLE1[k].seconds / base_s:.2f}x" for k in (top, *paper.PETL_ROWS))


# ----------------------------------------------------------------------------- Table 3

def table3_frame(t3_rows: dict) -> pd.DataFrame:
    """Table 3 (`t3_rows`: column -> that column's runs indexed by row label): updated params %, each column's
    accuracy (Slake: Open and Closed), their average, and the paper's value of each column beside it."""
    first = next(iter(t3_rows.values()))
    t3 = pd.DataFrame(index=first.index)
    t3["updated params %"] = first.updated_params_pct
    for col, r in t3_rows.items():
        if col == "Slake":
            t3["Slake Open"], t3["Slake Closed"] = r["Open"], r["Closed"]
        else:
            t3[col] = r["Acc"]
    acc_cols = [c for c in t3.columns if c != "updated params %"]
    t3["Average"] = t3[acc_cols].mean(axis=1)
    positions = {"Slake Open": 0, "Slake Closed": 1, "AID 20%": 2, "AID 50%": 3}
    view = paper.transfer_view()
    for c in acc_cols:
        if c in positions:
            t3[f"paper {c}"] = [view.get(label, (math.nan,) * 4)[positions[c]] for label in t3.index]
    return t3


def table3_line(t3_rows: dict, steps: int) -> str:
    n_methods = len(next(iter(t3_rows.values())))
    return (f"Table 3: {len(t3_rows)} columns x {n_methods} methods, {steps} fine-tuning steps each; test items per "
            "column: " + ", ".join(f"{col} {int(r.n_eval.iloc[0])}" for col, r in t3_rows.items()))


def table3_skipped(profile: str, task: str) -> str:
    return (f"**Table 3 is not run under profile `{profile}`** (its `transfer_tasks` is empty). "
            + ("Table 1 above already is the Slake (VQA) analog. " if task == "vqa" else "")
            + "The AID columns run under `cpu-full` and `gpu`: the `cpu` budget does not learn the AID analog "
            "(the measurements are in `notebooks/profiles/cpu.yaml`).")


def table3_selections(t3_runs: dict, eas_rows: list, petl: list, *, margin: float, seed_sd=None,
                      split_seed: int = SPLIT_SEED) -> dict:
    """column -> {EAS row: Selection}: in each column the best baseline is picked on the selection half of its
    items and each EAS row compared with it on the other half (one run each; `seed_sd` widens the intervals)."""
    return {col: {e: stats.select_then_compare(runs[e], {b: runs[b] for b in petl}, claim="no_worse",
                                               margin=margin, split_seed=split_seed, seed_sd=seed_sd)
                  for e in eas_rows}
            for col, runs in t3_runs.items()}


def table3_rows(selections: dict) -> dict:
    """"column: EAS_k - best" -> comparison row, for the forest plot and the table."""
    return {f"{col}: {e} - {sel.best}": sel.to_row() for col, per in selections.items() for e, sel in per.items()}


def table3_claim(col: str) -> str:
    """The ledger's claim id of a Table 3 column, e.g. "table3_aid_20_no_worse_than_best_petl"."""
    return f"table3_{re.sub(r'[^a-z0-9]+', '_', col.lower()).strip('_')}_no_worse_than_best_petl"


def table3_figure(rows: dict, margin: float) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.5 * len(rows)))
    ax.axvline(-margin, color="tab:red", ls=":", lw=1)
    stats.plot_comparisons(ax, rows, title=f"Table 3: EAS minus each column's best baseline, on the held-out half "
                                           f"(red: -{margin:g}, the parity margin)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the family of verdicts

def family_verdicts(task: str, top: str, selection: stats.Selection, shown: dict, timing: dict, *,
                    margin: float, t3_selections: dict | None = None, t3_tasks: dict | None = None,
                    n_items: int | None = None) -> list[dict]:
    """The chapter's verdicts as `eas.study.report.record_family` takes them: the headline (pre-registered),
    each EAS row against each baseline, each Table 3 comparison (`t3_tasks`: column -> its task) and the two
    timing claims (measured, no test)."""
    verdicts = [{"claim": HEADLINE_CLAIM, "method_a": top, "method_b": selection.best, "row": selection.comparison,
                 "kind": "no_worse", "margin": margin, "headline": True}]
    verdicts += [{"claim": "eas_vs_baseline", "method_a": r["name_a"], "method_b": r["name_b"], "row": r,
                  "kind": "no_worse", "margin": margin} for r in shown.values()]
    for col, per in (t3_selections or {}).items():
        verdicts += [{"claim": table3_claim(col), "method_a": e, "method_b": sel.best, "row": sel.comparison,
                      "kind": "no_worse", "margin": margin, "task": t3_tasks[col]} for e, sel in per.items()]
    t = timing["times"]
    other, eas = timing["fastest_other"], timing["fastest_eas"]
    verdicts.append(report.measured_verdict("eas_fastest", eas, other, a=t[eas], b=t[other],
                                            difference=t[eas] - t[other], verdict=timing["eas_fastest"],
                                            metric="time vs base", items=n_items))
    verdicts.append(report.measured_verdict("others_slower_than_base", other, "base", a=t[other], b=1.0,
                                            difference=t[other] - 1.0, verdict=timing["others_slower"],
                                            metric="time vs base", items=n_items))
    return verdicts


def corrected(recorded: pd.DataFrame, claim: str, method_a: str, method_b: str, task: str | None = None) -> str:
    """The recorded (family-corrected) verdict of one claim."""
    hit = recorded[(recorded.claim == claim) & (recorded.method_a == method_a) & (recorded.method_b == method_b)]
    if task is not None:
        hit = hit[hit.task == task]
    if len(hit) != 1:
        raise KeyError(f"{len(hit)} recorded verdicts for {claim} ({method_a} vs {method_b}, task {task}).")
    return str(hit.verdict.iloc[0])


def _scope(seed_sd) -> str:
    if not seed_sd:
        return ("one training run each: the intervals cover item noise only, not the spread between training "
                "seeds, so they speak of these trained models rather than of the methods")
    return (f"one training run each, the intervals widened by the seed spread of the headline pair "
            f"({seed_sd[0]:.1f} and {seed_sd[1]:.1f} points)")


def paper_gap(task: str, head: str) -> float:
    """How far the paper's EAS rows lie from its best baseline on `head` (NaN where its table lacks the column)."""
    view = paper.methods_view(task)
    eas = {r: v for r, v in view.items() if r.startswith("EAS")}
    petl = {r: v for r, v in view.items() if not r.startswith("EAS")}
    if not eas or not all(head in v[3] for v in view.values()):
        return math.nan
    best = max(p[3][head] for p in petl.values())
    return max(abs(v[3][head] - best) for v in eas.values())


def table1_text(recorded: pd.DataFrame, selection: stats.Selection, shown: dict, timing: dict, table: pd.DataFrame,
                *, task: str, head: str, top: str, margin: float, seed: int, n_items: int, seed_sd=None) -> str:
    """The Table 1 claims in prose, every verdict read from `recorded` (the family after Holm)."""
    best = selection.best
    headline = report.describe_corrected(selection.comparison, top, best,
                                         corrected(recorded, HEADLINE_CLAIM, top, best), claim="no_worse",
                                         margin=margin)
    others = "; ".join(f"{name}: {r['diff']:+.1f} ({corrected(recorded, 'eas_vs_baseline', r['name_a'], r['name_b'])})"
                       for name, r in shown.items())
    gap = paper_gap(task, head)
    n_sel = f"{selection.n_selection} item{'' if selection.n_selection == 1 else 's'}"
    parts = [f"**Claim: EAS keeps the accuracy of the PETL methods** (the headline, pre-registered: at most {margin:g} "
             f"points below the best baseline, {best}): {headline}. {best} is the best baseline by its accuracy on a "
             f"selection half of the test items ({n_sel}, chosen by a hash of their ids), and "
             f"{top} is compared with it on the other {selection.n_comparison}, items the choice never saw, so the "
             f"pick does not flatter it. Each EAS row against each baseline at seed {seed}, on all {n_items} items "
             f"({_scope(seed_sd)}): {others}."
             + ("" if math.isnan(gap) else f" The paper's EAS rows are within {gap:.1f} points of its best baseline.")]
    t, band, petl = timing["times"], timing["band"], [r for r in timing["times"] if not r.startswith("EAS")]
    eas_rows = [r for r in t if r.startswith("EAS")]
    parts.append(f"**Claim: EAS is the fastest method** -- {timing['eas_fastest']} here: "
                 + ", ".join(f"{r} {t[r]:.2f}x" for r in eas_rows) + " of the base model's time against "
                 + ", ".join(f"{r} {t[r]:.2f}x" for r in petl)
                 + f" (timing noise +/-{band:.2f}; paper, ScienceQA: {paper_time_ratios()}).")
    below = timing["below_base"]
    parts.append("**Claim: every other method is slower than the base model** -- "
                 + ("holds here." if not below else
                    f"does not hold here: {', '.join(below)} also run{'s' if len(below) == 1 else ''} faster than "
                    "the base model. Skipping whole layers removes more work than DAS's adapters add back on "
                    "this hardware, where small matmuls cost about what their FLOPs say (chapter 6)."))
    f = table["FLOPs vs base"]
    parts.append("FLOPs per sample against the base model: "
                 + ", ".join(f"{r} {100 * (f[r] - 1):+.1f}%" for r in table.index)
                 + ". Adapter and MAM add small matmuls, LoRA merged adds nothing, DAS and EAS remove whole modules.")
    return " ".join(parts)


def table3_text(recorded: pd.DataFrame, t3_selections: dict, t3_tasks: dict, *, margin: float, seed_sd=None) -> str:
    """The Table 3 claim in prose: how many of its comparisons hold after Holm, and each one's numbers."""
    lines, held, n = [], 0, 0
    for col, per in t3_selections.items():
        for e, sel in per.items():
            v = corrected(recorded, table3_claim(col), e, sel.best, t3_tasks[col])
            held += v == "holds"
            n += 1
            c = sel.comparison
            interval = "" if "interval" in v else f", interval [{c.ci_low:+.1f}, {c.ci_high:+.1f}]"
            lines.append(f"{col}: {e} - {sel.best} {c.diff:+.1f} points on {sel.n_comparison} held-out items"
                         f"{interval}: {v}")
    return (f"**Claim: EAS keeps the PETL methods' accuracy on Slake and AID** (at most {margin:g} points below each "
            f"column's best baseline, picked on the selection half of that column's items and compared on the "
            f"other half; {_scope(seed_sd)}): {held} of {n} comparisons hold after Holm's correction. "
            + "; ".join(lines) + ".")


def ledger_view(recorded: pd.DataFrame) -> pd.DataFrame:
    """The family as recorded in the claims ledger: numbers, adjusted p and the corrected verdicts."""
    return recorded[[c for c in LEDGER_SHOWN if c in recorded.columns]]


def evaluated_runs(main: list, sections: dict | None = None) -> pd.DataFrame:
    """Every evaluated run once, with a `label` column for the accuracy ledger: `main` holds frames of runs
    indexed by row label (the table's runs, the headline pair's seeds: the seed tells them apart), `sections`
    maps a section name to its runs, whose labels get " [section]". A run listed twice (the seed-0 run of the
    headline pair is also the table's row) is kept once, with its first label."""
    frames = [f.assign(label=list(f.index)) for f in main if f is not None and len(f)]
    frames += [f.assign(label=[f"{label} [{name}]" for label in f.index])
               for name, f in (sections or {}).items() if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True).drop_duplicates("key").reset_index(drop=True)


# ----------------------------------------------------------------------------- the ScienceQA check

def scienceqa_table(checks: dict, sqa_rows: pd.DataFrame, rows: pd.DataFrame, task: str, head: str) -> pd.DataFrame:
    """Per ScienceQA-check method: accuracy against chance (z), time per training step, and the same method's
    accuracy on the chapter's task (`checks`: label -> `experiments.chance_check`; `sqa_rows` indexed by label)."""
    sqa = pd.DataFrame(checks).T[["accuracy", "chance", "z", "n", "above_chance"]]
    if "val_letter_acc" in sqa_rows:  # the letter alone, teacher-forced on val items (eas.models.scoring)
        sqa["val letter acc"] = 100 * sqa_rows.val_letter_acc
    sqa["train s / step"] = sqa_rows.train_wall_s / sqa_rows.train_steps
    sqa[f"{task} accuracy"] = [rows.loc[label, head] if label in rows.index else math.nan for label in sqa.index]
    return sqa


def scienceqa_text(checks: dict, sqa: pd.DataFrame, rows: pd.DataFrame, *, task: str, steps: int,
                   batch_size: int) -> str:
    learned = [label for label, c in checks.items() if c["above_chance"]]
    return (f"**ScienceQA at this budget** ({steps} steps of {batch_size}): "
            + "; ".join(f"{label} {c['accuracy']:.1f}% against {c['chance']:.1f}% chance (z = {c['z']:+.1f})"
                        for label, c in checks.items())
            + (". Above chance (z > 2) for " + ", ".join(learned) + "." if learned else
               ". No method is above chance (z > 2): at this budget ScienceQA comparisons would compare guesses, so "
               f"this chapter's Table 1 runs on {task}.")
            + (f" Teacher-forced on val items, the answer letter alone was right {letters} of the time, so the "
               "chance level is not a parsing artefact." if (letters := _letter_accuracies(sqa)) else "")
            + f" A ScienceQA step took {float(sqa['train s / step'].mean()):.2f} s here, against "
            f"{float((rows.train_wall_s / rows.train_steps.clip(lower=1)).median()):.2f} s for a {task} step.")


def _letter_accuracies(sqa: pd.DataFrame) -> str:
    if "val letter acc" not in sqa or sqa["val letter acc"].isna().all():
        return ""
    return ", ".join(f"{v:.0f}% ({label})" for label, v in sqa["val letter acc"].dropna().items())
