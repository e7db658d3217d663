"""Chapter 3, skip attention or skip the FFN (Table 5, Fig. 1b): k MHAs, k FFNs or k modules of either kind,
each searched, fine-tuned, evaluated and timed, beside the paper's Table 5.

    headline_k(ks)                              the k of the headline pair (MHAs against FFNs): the largest
    budget(P)                                   the run's budget, in words
    runs_table(rows, metric)                    one row per run: kind, k, what was skipped, accuracy, costs
    runs_note(rows)                             one line on the runs
    run_labels(rows)                            run key -> method label for the accuracy ledger
    template_text(overlap, generations, k)      how many test questions share a template with training
    with_timing(runs, timing)                   the decode time of each trained run beside its row
    base_note(timing, tokens, repeats)          one line on the unmodified model's timing
    table5(runs)                                our runs beside the paper's Table 5
    table5_figure(runs, n_test, ...)            accuracy and decode time against k, and the paper's accuracy
    family(correct, head_runs, ks, margin)      the chapter's verdicts: MHA vs FFN per k (headline at the
                                                largest k, over its seeds), and k MHAs at most `margin` worse
                                                at the largest k than at the smallest
    claim_figure(shown, head_k, ...)            the headline pair per seed, MHA - FFN per k
    verdict_table(shown)                        the family's rows as a table, verdicts corrected
    decode_time_text(runs, ks)                  where skipping MHAs decodes faster than skipping FFNs
    mixed_text(runs)                            which kind the bandit skips when free to pick either
    conclusion(...)                             the chapter's verdict paragraph (corrected verdicts)
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd

from eas.study import paper, report
from eas.study.experiments import comparison_table

CHAPTER = FAMILY = "03_skip_ablation"
LABEL = {"mha": "MHA", "ffn": "FFN", "mha_or_ffn": "MHA or FFN"}
NAN_ROW = (float("nan"), float("nan"))


def headline_k(ks) -> int:
    """The k of the headline comparison (k MHAs against k FFNs): the largest k the chapter runs."""
    return max(ks)


def budget(P) -> str:
    """The budget of this run (markdown), from the chapter's parameters."""
    return (f"**This run's budget** (profile `{P.profile}`, {P.model}, task {P.task}): per run a bandit search "
            f"({P.bandit_warmup_steps} warm-up steps of the supernet, then {P.bandit_comparisons} comparisons of "
            f"{P.bandit_m} sub-networks, {P.bandit_T} training steps apart) whose adapter weights start {P.steps} "
            f"fine-tuning steps of {P.batch_size} examples; at most {P.n_eval} test questions, the same for every "
            f"run; k in {P.ks}. Training seeds: {P.headline_seeds()} for MHAs against FFNs at "
            f"k={headline_k(P.ks)}, {P.seed} for the rest.")


def runs_table(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run (results rows of eas.study.experiments): kind, k, how many MHAs and FFNs it skips,
    accuracy (`metric`), updated parameters, final training loss, search and training seconds."""
    skipped = rows.skipped.map(json.loads)
    return pd.DataFrame({
        "kind": rows.kind, "k": rows.k,
        "MHAs skipped": skipped.map(lambda s: len(s["mha"])), "FFNs skipped": skipped.map(lambda s: len(s["ffn"])),
        "accuracy": rows[metric],
        "updated params %": rows.updated_params_pct, "final train loss": rows.final_train_loss,
        "search s": rows.search_wall_s, "train s": rows.train_wall_s,
    })


def runs_note(rows: pd.DataFrame) -> str:
    return (f"{len(rows)} runs on {rows.task.iloc[0]} ({int(rows.n_layers.iloc[0])} layers), "
            f"{int(rows.n_eval.iloc[0])} test examples each")


def run_labels(rows: pd.DataFrame) -> dict:
    """Run key -> the method's name in the accuracy ledger ("EAS, skip MHA"; k and seed are columns of their own)."""
    return {key: f"EAS, skip {LABEL[kind]}" for key, kind in zip(rows.key, rows.kind)}


def template_text(overlap: dict, generations: pd.DataFrame, k: int) -> str:
    """How many test questions share a template, a question kind or the whole question with training
    (`eas.data.scienceqa.template_overlap`), and the MHA k run's accuracy on seen- and held-out-template
    questions (its generations, with a `template_seen` column when the build holds templates out)."""
    text = (f"{overlap['seen_template']} of {overlap['test']} test questions ({overlap['seen_template_pct']:.1f}%) "
            f"share a template with a training question, {overlap['seen_kind']} share a question kind, "
            f"{overlap['duplicate']} are duplicates of a training question. ")
    by_seen = (generations.groupby("template_seen").correct.agg(["size", "mean"])
               if "template_seen" in generations else None)
    if by_seen is not None and len(by_seen) > 1:
        return text + f"MHA k={k} accuracy: " + ", ".join(
            f"{100 * r['mean']:.1f} on {int(r['size'])} {'seen' if s else 'held-out'}-template questions"
            for s, r in by_seen.iterrows()) + "."
    return text + ("Every evaluated question's template occurs in training, so this split measures no "
                   "generalisation to new wordings; a build with `heldout_templates: 1` in `sizes` adds test "
                   "questions in wordings never trained on (their accuracy is the honest one).")


def with_timing(runs: pd.DataFrame, timing: pd.DataFrame) -> pd.DataFrame:
    """`runs` with each run's decode ms / token, its IQR and its time against the base model, from
    `eas.study.experiments.timing_table` labelled "{kind} k={k}"."""
    timed = timing.set_index("label")
    labels = [f"{kind} k={k}" for kind, k in zip(runs.kind, runs.k)]
    return runs.assign(**{"ms / token": timed.decode_ms_per_token.loc[labels].to_numpy(),
                          "ms / token IQR": timed.decode_ms_per_token_iqr.loc[labels].to_numpy(),
                          "time vs base": timed.time_vs_base.loc[labels].to_numpy()})


def base_note(timing: pd.DataFrame, tokens: int, repeats: int) -> str:
    base = timing.set_index("label").loc["base"]
    return (f"base model: {base.prefill_ms:.1f} ms prefill ({int(base.prompt_len)} tokens), "
            f"{base.decode_ms_per_token:.2f} ms / token (IQR {base.decode_ms_per_token_iqr:.2f}), "
            f"{tokens} tokens, {repeats} interleaved repeats")


def table5(runs: pd.DataFrame) -> pd.DataFrame:
    """Our runs (accuracy, ms / token, time vs base) beside the paper's Table 5 (accuracy, s / sample), indexed
    by kind and k; NaN where the paper has no row for that k."""
    ref = paper.table5_view()
    table = runs[["kind", "k", "accuracy", "ms / token", "time vs base"]].copy()
    table["paper accuracy"] = [ref[kd].get(k, NAN_ROW)[1] for kd, k in zip(table.kind, table.k)]
    table["paper s / sample"] = [ref[kd].get(k, NAN_ROW)[0] for kd, k in zip(table.kind, table.k)]
    table["kind"] = table.kind.map(LABEL)
    return table.set_index(["kind", "k"])


def table5_figure(runs: pd.DataFrame, n_test: int, *, metric: str, task: str,
                  base_decode_ms: float) -> plt.Figure:
    """Three panels against k: our accuracy (+/- 1 binomial SE), our decode time (+/- half its IQR, the base
    model dotted), and the paper's Table 5 accuracy."""
    ref = paper.table5_view()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for kind in dict.fromkeys(runs.kind):
        part = runs[runs.kind == kind].sort_values("k")
        axes[0].errorbar(part.k, part.accuracy, yerr=report.accuracy_se(part.accuracy, n_test), fmt="o-",
                         capsize=3, label=LABEL[kind])
        axes[1].errorbar(part.k, part["ms / token"], yerr=part["ms / token IQR"] / 2, fmt="o-", capsize=3,
                         label=LABEL[kind])
        points = sorted(ref[kind].items())
        axes[2].plot([k for k, _ in points], [v[1] for _, v in points], "o--", label=LABEL[kind])
    axes[0].set(xlabel="skipped modules (k)", ylabel=f"accuracy ({metric}), +/- 1 SE", title=f"ours: {task}")
    axes[1].axhline(base_decode_ms, color="grey", ls=":", label="no skipping")
    axes[1].set(xlabel="skipped modules (k)", ylabel="decode ms / token (batch 1)", title="ours: decode time")
    axes[2].set(xlabel="skipped modules (k)", ylabel="accuracy", title="paper (Table 5): ScienceQA")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- verdicts

def trend_label(kmax: int, kmin: int, margin: float) -> str:
    return f"MHA k={kmax} - MHA k={kmin} (no worse by {margin:g})"


def family(correct: dict, head_runs: dict, ks, margin: float) -> tuple[dict, list[dict]]:
    """The chapter's family of verdicts, as (label -> comparison row, the verdicts for
    `eas.study.report.record_verdicts`), in the same order.

    `correct`: (kind, k) -> per-item correctness at the chapter's seed; `head_runs`: {"mha": [...], "ffn": [...]}
    per-item correctness of the headline pair at `headline_k(ks)`, one per training seed. The headline (MHAs
    better than FFNs at the largest k) uses every seed; MHAs against FFNs at the other k, one run each, are
    widened by the headline pair's seed spread when it has 2+ seeds; so is the last claim, that skipping the
    largest k of MHAs costs at most `margin` points against the smallest."""
    head_k, kmin = headline_k(ks), min(ks)
    sd = report.seed_spread(head_runs["mha"], head_runs["ffn"])
    rows, out = {}, []
    for k in sorted(ks):
        if k == head_k:
            n = len(head_runs["mha"])
            label = f"MHA - FFN, k={k}" + (f", {n} seeds" if n > 1 else "")
            row = report.comparison_row(head_runs["mha"], head_runs["ffn"])
        else:
            label = f"MHA - FFN, k={k}"
            row = report.comparison_row(correct["mha", k], correct["ffn", k], seed_sd=sd)
        rows[label] = row
        out.append({"claim": f"mha_beats_ffn_k{k}", "method_a": f"skip MHA k={k}", "method_b": f"skip FFN k={k}",
                    "row": row, "headline": k == head_k})
    if kmin != head_k:
        label = trend_label(head_k, kmin, margin)
        rows[label] = report.comparison_row(correct["mha", head_k], correct["mha", kmin], claim="no_worse",
                                            margin=margin, seed_sd=None if sd is None else (sd[0], sd[0]))
        out.append({"claim": "mha_largest_k_no_worse_than_smallest", "method_a": f"skip MHA k={head_k}",
                    "method_b": f"skip MHA k={kmin}", "row": rows[label], "kind": "no_worse", "margin": margin})
    return rows, out


def claim_figure(shown: dict, *, head_k: int, metric: str, seeds) -> plt.Figure:
    """The headline pair's accuracy per training seed beside the MHA - FFN differences per k (corrected rows)."""
    pairs = {label: r for label, r in shown.items() if label.startswith("MHA - FFN")}
    head = next(r for label, r in pairs.items() if label.startswith(f"MHA - FFN, k={head_k}"))
    return report.claim_figure({f"MHA k={head_k}": head["acc_a_seeds"], f"FFN k={head_k}": head["acc_b_seeds"]},
                               pairs, ylabel=f"accuracy ({metric})", seeds_title=f"training seeds {list(seeds)}",
                               title="skipping MHAs minus skipping FFNs: paired 95% interval")


def verdict_table(shown: dict) -> pd.DataFrame:
    """The family as a table: accuracies, difference, interval, p, Holm's adjusted p, corrected verdict."""
    table = comparison_table(shown)
    table.insert(table.columns.get_loc("verdict"), "p (Holm)", [r["p_adjusted"] for r in shown.values()])
    return table


def decode_time_text(runs: pd.DataFrame, ks) -> str:
    """At how many k skipping MHAs decodes faster (or slower) than skipping as many FFNs beyond both IQRs, with
    the times; where not faster at every k, why that can be on this machine."""
    by = runs.set_index(["kind", "k"])
    sec, noise = by["ms / token"], by["ms / token IQR"]
    faster = [k for k in ks if sec["mha", k] + noise["mha", k] < sec["ffn", k] - noise["ffn", k]]
    slower = [k for k in ks if sec["mha", k] - noise["mha", k] > sec["ffn", k] + noise["ffn", k]]
    return (f"**Decode time:** skipping MHAs decodes faster than skipping as many FFNs, beyond the IQRs, at "
            f"{len(faster)} of {len(ks)} values of k and slower at {len(slower)} (paper: faster at every k): "
            + ", ".join(f"{sec['mha', k]:.1f} vs {sec['ffn', k]:.1f} ms / token at k={k}" for k in ks)
            + "." + ("" if len(faster) == len(ks) else
                     " Where an FFN's three large matmuls cost more than an attention's projections over a short KV "
                     "cache, as chapter 6 measures on this CPU, removing an FFN saves more time per module; the "
                     "paper's GPU, at 7B with a 600-token prompt, is the other way round."))


def mixed_text(runs: pd.DataFrame) -> str:
    mixed = runs[runs.kind == "mha_or_ffn"].set_index("k")
    share = ", ".join(f"{int(r['MHAs skipped'])} of {k} at k={k}" for k, r in mixed.iterrows())
    return f"When free to pick either kind, the bandit skipped MHAs for {share}."


def conclusion(*, rows: dict, recorded: pd.DataFrame, runs: pd.DataFrame, ks, margin: float, seed: int) -> str:
    """The chapter's verdict paragraph from the family (`family`'s rows, `recorded` as record_verdicts returned
    it): the headline, MHA against FFN at the other k, how accuracy moves from the smallest to the largest k
    beside the paper's Table 5, the no-worse claim, decode time, and the mixed runs' choices."""
    shown = report.corrected_rows(rows, recorded)
    head_k, kmin = headline_k(ks), min(ks)
    acc = runs.set_index(["kind", "k"]).accuracy
    heads = [label for label, h in zip(shown, recorded.headline.astype(bool)) if h]
    if len(heads) != 1:
        raise ValueError(f"expected one headline claim in the recorded family, found {len(heads)}.")
    head_label = heads[0]
    head = shown[head_label]
    others = {label: r for label, r in shown.items() if label.startswith("MHA - FFN") and label != head_label}
    text = (f"**The paper's claim that MHAs can be skipped with less loss than FFNs**, at k={head_k}: "
            + report.describe_corrected(head["comparison"], "skipping MHAs", "skipping FFNs", head["verdict"]) + ".")
    if others:
        noise = report.noise_note(next(iter(others.values()))["comparison"])
        text += (f" At the other k, at seed {seed} ({noise}): "
                 + report.comparison_sentence(others, strip="MHA - FFN, ") + ".")
    if kmin != head_k:
        ref = paper.table5_view()
        lo, hi = min(ref["mha"]), max(ref["mha"])
        gap = {kd: ref[kd][hi][1] - ref[kd][lo][1] for kd in ("mha", "ffn")}
        trend = shown[trend_label(head_k, kmin, margin)]
        ours = {kd: acc[kd, head_k] - acc[kd, kmin] for kd in ("mha", "ffn")}
        text += (f" Between k={kmin} and k={head_k} the MHA runs change by {ours['mha']:+.1f} points and the FFN "
                 f"runs by {ours['ffn']:+.1f} (paper, k={lo} to {hi}: {gap['mha']:+.1f} and {gap['ffn']:+.1f}); "
                 f"the claim that skipping {head_k} MHAs costs at most {margin:g} points against {kmin}: "
                 f"**{trend['verdict']}** (detectable {trend['mdd']:.1f}).")
    parts = [text, decode_time_text(runs, ks)]
    if "mha_or_ffn" in set(runs.kind):
        parts.append(mixed_text(runs))
    return " ".join(parts)
