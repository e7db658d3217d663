"""Chapter 2, the redundancy search: the bandit's preferences, and its skip set against simpler selection rules
after identical fine-tuning.

    budget(P)                                   the run's budget, in words
    runs_note(P, rows)                          one line on the runs
    run_labels(rows)                            run key -> method label for the accuracy ledger
    final_preferences(traj)                     each MHA's preference after the last comparison
    search_note(sign, chosen)                   the update sign used and the skipped MHAs
    search_figure(traj, chosen, k)              preferences over the search, rewards, final preferences
    selection_table(sets, rows, metric)         skipped MHAs, overlap with the bandit, accuracy, time, loss
    selection_figure(sets, accuracy, n, ...)    which MHAs each selector skips, and its accuracy +/- 1 SE
    rule_comparisons(correct, seed_sd)          the bandit against each rule, one seed each, all test items
    pick_best_rule(correct, ...)                the best rule on the selection half, the bandit against it
                                                on the comparison half (seeds when given)
    verdicts(per_rule, selection)               the chapter's family for eas.study.report.record_verdicts
    shown_rows(per_rule, selection, recorded)   the rows of the figure and table, verdicts corrected
    verdict_table(shown)                        those rows as a table
    conclusion(...)                             the chapter's verdict paragraph (corrected verdicts)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eas.study import report, stats
from eas.study.experiments import comparison_table

CHAPTER = FAMILY = "02_redundancy"
A = "bandit"
MOVED = 0.05  # the largest final preference (in size) below which the preferences "have barely moved"


def budget(P) -> str:
    """The budget of this run (markdown), from the chapter's parameters."""
    return (f"**This run's budget** (profile `{P.profile}`, {P.model}, task {P.task}): one bandit search "
            f"({P.bandit_warmup_steps} warm-up steps with random skip sets, then {P.bandit_comparisons} comparisons "
            f"of {P.bandit_m} sub-networks, {P.bandit_T} training steps apart, on {P.heldout} held-out examples); "
            f"{P.steps} fine-tuning steps of {P.batch_size} examples per skip set (learning rate {P.lr:g} after "
            f"{P.warmup_steps} warm-up steps); at most {P.n_eval} test questions, the same for every method. "
            f"Training seeds: {P.headline_seeds()} for the bandit and the best simple rule, {P.seed} for the "
            "other rules.")


def runs_note(P, rows: pd.DataFrame) -> str:
    """One line on the chapter's runs: how many, k of how many MHAs, the budgets, the test items."""
    search_steps = P.bandit_warmup_steps + P.bandit_comparisons * P.bandit_T
    return (f"{len(rows)} runs on {P.task}, k={P.k} of {int(rows.n_layers.iloc[0])} MHAs skipped; fine-tuning "
            f"{P.steps} steps x {P.batch_size} examples each; bandit search {search_steps} supernet steps "
            f"({P.bandit_warmup_steps} warm-up) and {P.bandit_comparisons} comparisons of {P.bandit_m} sub-networks "
            f"on {P.heldout} held-out examples; {int(rows.n_eval.iloc[0])} test examples")


def run_labels(rows: pd.DataFrame) -> dict:
    """Run key -> the method's name in the accuracy ledger ("EAS, bandit set"; k and seed are columns of their own)."""
    return {key: f"EAS, {selector} set" for key, selector in zip(rows.key, rows.selector)}


# ----------------------------------------------------------------------------- the search

def final_preferences(traj: pd.DataFrame) -> pd.Series:
    """Each MHA's preference after the last comparison (`eas.study.experiments.bandit_trajectory`), by layer."""
    last = traj[traj.comparisons == traj.comparisons.max()]
    return last.set_index("layer").preference


def search_note(sign: int, chosen) -> str:
    return (f"update sign used: {sign:+d} (+1: modules kept by better sub-networks gain preference); "
            f"skipped by the bandit: MHAs {list(chosen)}")


def search_figure(traj: pd.DataFrame, chosen, k: int) -> plt.Figure:
    """Three panels: each MHA's preference over the comparisons (red: finally skipped), the sub-networks' mean
    held-out reward per comparison, and the final preferences."""
    chosen = set(chosen)
    final = final_preferences(traj)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1.3, 0.8, 1.3]})
    for layer, part in traj.groupby("layer"):
        skipped = layer in chosen
        axes[0].plot(part.comparisons, part.preference, color="tab:red" if skipped else "tab:blue",
                     alpha=0.9 if skipped else 0.35, lw=1.4 if skipped else 0.9)
    axes[0].plot([], [], color="tab:red", label="finally skipped")
    axes[0].plot([], [], color="tab:blue", alpha=0.5, label="kept")
    axes[0].set(xlabel="comparisons done", ylabel="preference s", title="preference of each MHA during the search")
    axes[0].legend()
    rewards = traj.drop_duplicates("comparisons").dropna(subset=["mean_reward"])
    axes[1].plot(rewards.comparisons, rewards.mean_reward, "o-")
    axes[1].set(xlabel="comparison", ylabel="mean reward exp(-loss)", title="held-out reward of the sub-networks")
    colours = ["tab:red" if layer in chosen else "tab:blue" for layer in final.index]
    axes[2].bar(final.index, final.values, color=colours)
    axes[2].set(xlabel="layer", ylabel="final preference", title=f"final preference (red: the {k} skipped)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the sets and their accuracy

def selection_table(sets: dict, rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per selector (`rows` indexed by selector, in the order of `sets`): its skipped MHAs, how many it
    shares with the bandit's set, accuracy (`metric`, and Open / Closed where the task has them), evaluation
    seconds per example and final training loss."""
    extra = [c for c in ("Open", "Closed") if c in rows.columns and c != metric]
    names = list(sets)
    return pd.DataFrame({
        "skipped MHAs": [list(sets[name]) for name in names],
        "shared with bandit": [len(set(sets[name]) & set(sets[A])) for name in names],
        "accuracy": rows.loc[names, metric].to_numpy(), **{c: rows.loc[names, c].to_numpy() for c in extra},
        "eval s / sample": rows.loc[names, "eval_wall_s_per_sample"].to_numpy(),
        "final train loss": rows.loc[names, "final_train_loss"].to_numpy(),
    }, index=names)


def selection_figure(sets: dict, accuracy: pd.Series, n_layers: int, n_test: int, *, k: int,
                     metric: str) -> plt.Figure:
    """Left, which MHAs each selector skips (dark: skipped); right, each selector's accuracy with its binomial
    standard error (the bandit in red)."""
    names = list(sets)
    grid = np.array([[layer in sets[name] for layer in range(n_layers)] for name in names], dtype=float)
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(min(15, 5 + 0.35 * n_layers), 0.8 + 0.45 * len(names)),
                                  gridspec_kw={"width_ratios": [3, 1]})
    ax.imshow(grid, cmap="Greys", aspect="auto", vmin=0, vmax=1.4)
    ax.set(yticks=range(len(names)), yticklabels=names, xticks=range(n_layers), xlabel="layer",
           title=f"skipped MHAs per selector (k={k})")
    acc = accuracy.loc[names].to_numpy(dtype=float)
    bar.barh(range(len(names)), acc, xerr=report.accuracy_se(acc, n_test),
             color=["tab:red" if name == A else "tab:blue" for name in names], capsize=3)
    bar.set(yticks=range(len(names)), yticklabels=[], ylim=(len(names) - 0.5, -0.5),
            xlabel=f"accuracy ({metric}), +/- 1 SE", title="after identical fine-tuning")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- verdicts

def rule_comparisons(correct: dict, *, seed_sd=None) -> dict:
    """'bandit - rule' -> the bandit against each rule (`correct`: selector -> per-item correctness at the
    chapter's seed), one run each on every test item; `seed_sd` (from `eas.study.report.seed_spread` over the
    headline pair's seeds) widens each by the measured seed spread."""
    return {f"{A} - {name}": report.comparison_row(correct[A], run, seed_sd=seed_sd)
            for name, run in correct.items() if name != A}


def pick_best_rule(correct: dict, *, split_seed: int = 0, seeds: dict | None = None) -> stats.Selection:
    """The best simple rule picked on the selection half of the test items (`stats.split_items`), and the bandit
    compared with it on the other half, which the choice never saw. `seeds`: label -> list of per-item
    correctness, one per training seed, for the bandit and (at least) the rule picked; without it, one run each."""
    rules = {name: run for name, run in correct.items() if name != A}
    return stats.select_then_compare(correct[A], rules, split_seed=split_seed,
                                     a_seeds=seeds[A] if seeds else None, candidate_seeds=seeds)


def _headline_label(selection: stats.Selection) -> str:
    cmp = selection.comparison
    return f"{A} - {selection.best} (best rule, comparison half, {cmp.seeds_a} seed{'s' if cmp.seeds_a > 1 else ''})"


def verdicts(per_rule: dict, selection: stats.Selection) -> list[dict]:
    """The chapter's family: the bandit better than each rule, then (headline) better than the rule picked on
    the selection half, on the comparison half."""
    out = [{"claim": "bandit_beats_rule", "method_a": A, "method_b": label.removeprefix(f"{A} - "), "row": row}
           for label, row in per_rule.items()]
    out.append({"claim": "bandit_beats_best_rule", "method_a": A, "method_b": selection.best,
                "row": selection.comparison, "headline": True})
    return out


def shown_rows(per_rule: dict, selection: stats.Selection, recorded: pd.DataFrame) -> dict:
    """label -> comparison row, verdicts corrected (the rows `verdicts` gave, in order, as recorded)."""
    head = {**selection.comparison.to_row(), "comparison": selection.comparison}
    return report.corrected_rows({**per_rule, _headline_label(selection): head}, recorded)


def verdict_table(shown: dict) -> pd.DataFrame:
    """The comparisons as a table: accuracies, difference, interval, p, Holm's adjusted p, corrected verdict."""
    table = comparison_table(shown)
    table.insert(table.columns.get_loc("verdict"), "p (Holm)", [r["p_adjusted"] for r in shown.values()])
    return table


def _items(n: int, word: str = "item") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def conclusion(*, selection: stats.Selection, recorded: pd.DataFrame, per_rule: dict, table: pd.DataFrame,
               preferences: pd.Series, k: int, comparisons: int, seed: int) -> str:
    """The chapter's verdict paragraph: the headline (the bandit against the rule picked on held-out items),
    the bandit against each rule, the overlap of the sets, how far the preferences moved, and the spread of
    evaluation time. Verdicts are the family-corrected ones of `recorded`."""
    best, cmp = selection.best, selection.comparison
    head = recorded[recorded.headline.astype(bool)]
    if len(head) != 1:
        raise ValueError(f"expected one headline claim in the recorded family, found {len(head)}.")
    rules = {r["method_b"]: r["verdict"] for r in recorded.to_dict("records") if r["claim"] == "bandit_beats_rule"}
    corrected = {label: {**row, "verdict": rules[label.removeprefix(f"{A} - ")]} for label, row in per_rule.items()}
    picked = ", ".join(f"{name} {acc:.1f}" for name, acc in selection.selection_accuracy.items())
    rule_names = [label.removeprefix(f"{A} - ") for label in per_rule]
    shared = ", ".join(f"{table.loc[name, 'shared with bandit']} with {name}" for name in rule_names)
    moved = float(preferences.abs().max())
    times = table["eval s / sample"]
    return (
        f"**The paper's premise that a searched set of MHAs beats simpler choices**, tested against the best simple "
        f"rule ({best}): " + report.describe_corrected(cmp, A, best, head.verdict.iloc[0]) + ". "
        f"{best} is the best rule on the selection half of the test questions ({_items(selection.n_selection)}; "
        f"accuracy there: {picked}), and the comparison above uses only the other "
        f"{_items(selection.n_comparison, 'question')}, which that choice never saw: picking the winner and comparing "
        "with it on the same questions would flatter it. "
        f"Against each rule at seed {seed} on every test question (claim: the bandit's set is better; "
        f"{report.noise_note(next(iter(per_rule.values()))['comparison'])}): "
        + report.comparison_sentence(corrected, strip=f"{A} - ") + ". "
        f"The bandit's set shares {shared} of its {k} MHAs. After {comparisons} comparisons the largest "
        f"preference is {moved:.3f} in size (all start at 0): "
        + ("the preferences have separated" if moved > MOVED else
           "the preferences have barely moved, so the bandit set is still close to a random draw from its policy")
        + f". Evaluation time per example ranges from {times.min():.3f} to {times.max():.3f} s across selectors "
        f"({100 * (times.max() / times.min() - 1):.0f}% spread) at equal k.")
