"""The EAS paper's numbers, each entered once with its table and row, and the list of its tables and figures.

Everything this project quotes from the paper (Wu, Zhou, Ye, Sun, Ji: *Not All Attention is Needed ...*)
lives here, as printed there. Three printed FLOPs do not add up and are kept as printed: Table 3's EAS_10
AID entry (4406.9G with a delta of -497.1G against 4869.9G), Table 4's DAS_4 Flickr30K delta (-11.6G for
82.1G against 93.2G) and its Shallow Prompt average (+28.7G for 107.9G against 79.8G); elsewhere value
and delta agree to the printed rounding. Tables are dicts of frozen dataclasses keyed by the paper's row;
the `*_view` helpers give the shapes the chapters and modules used to hard-code, so a caller switches
by replacing its literal with one call. `PAPER_CLAIMS` holds the paper's side of every claim the book's
ledger (`eas.study.ledger`) records, and `PAPER_ARTIFACTS` every table and figure with its status here.

Units: updated parameters in percent of the model, FLOPs in GFLOPs per sample (with the printed delta
against the table's base row), inference time in seconds per sample, accuracy in percent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LLAVA_7B_LAYERS = 32  # LLaVA-7B's decoder depth, against which the paper's k counts

# ----------------------------------------------------------------------------- Table 1: ScienceQA on LLaVA-7B


@dataclass(frozen=True)
class ScienceQARow:
    """A row of Table 1 or 2: ScienceQA accuracy by subject, context modality and grade."""

    params_pct: float
    gflops: float
    delta_gflops: float
    seconds: float
    NAT: float
    SOC: float
    LAN: float
    TXT: float
    IMG: float
    NO: float
    G1_6: float
    G7_12: float
    Avg: float


# Table 1 (LLaVA-7B, ScienceQA test): "LLaVA-7B" is the fully tuned base row.
TABLE1 = {
    "LLaVA-7B": ScienceQARow(100.00, 5018.4, 0.0, 2.19, 90.4, 96.0, 88.0, 89.5, 88.0, 90.7, 90.9, 90.9, 90.9),
    "LoRA": ScienceQARow(0.62, 5018.4, 0.0, 2.34, 86.5, 95.1, 85.9, 86.1, 86.6, 87.0, 88.7, 87.2, 88.1),
    "Adapter": ScienceQARow(0.54, 5041.6, 23.2, 2.89, 86.9, 95.5, 85.8, 86.4, 86.3, 87.7, 89.5, 86.5, 88.4),
    "MAM": ScienceQARow(0.54, 5041.6, 23.2, 2.87, 87.3, 95.7, 86.6, 86.5, 86.1, 88.9, 89.6, 87.7, 88.9),
    "DAS_4": ScienceQARow(0.59, 4475.0, -543.4, 2.53, 87.5, 95.5, 84.5, 87.4, 87.0, 86.4, 89.2, 87.0, 88.4),
    "EAS_8": ScienceQARow(0.78, 4616.3, -402.1, 1.98, 87.2, 96.1, 85.6, 86.6, 87.2, 87.4, 89.7, 86.8, 88.7),
    "EAS_12": ScienceQARow(0.90, 4415.4, -603.0, 1.82, 86.6, 94.9, 85.6, 86.2, 86.6, 86.8, 88.6, 87.2, 88.1),
}
# Table 1's rows as (method, k) of eas.study.latency / eas.baselines: EAS's rows are its merged (deployed) form.
TABLE1_METHODS = {"LLaVA-7B": ("base", 0), "LoRA": ("lora", 0), "Adapter": ("adapter", 0), "MAM": ("mam", 0),
                  "DAS_4": ("das", 4), "EAS_8": ("eas-merged", 8), "EAS_12": ("eas-merged", 12)}

# Table 2 (ScienceQA, PETL-based MLLMs; LLaVA-7B's FLOPs delta is against LaVIN-7B's base).
TABLE2 = {
    "LLaVA-7B": ScienceQARow(100.00, 5018.4, 3303.5, 2.19, 90.4, 96.0, 88.0, 89.5, 88.0, 90.7, 90.9, 90.9, 90.9),
    "LaVIN-7B": ScienceQARow(0.06, 1715.4, 0.6, 3.70, 89.3, 94.9, 85.2, 88.5, 87.5, 88.1, 90.2, 88.1, 89.4),
    "LLaMA-LoRA": ScienceQARow(0.08, 1714.8, 0.0, 2.22, 84.1, 78.0, 85.7, 82.8, 74.1, 88.6, 83.8, 82.2, 83.2),
    "LLaMA-Adapter": ScienceQARow(0.03, 1839.6, 124.7, 4.35, 84.4, 88.3, 84.4, 83.7, 80.3, 86.9, 85.8, 84.1, 85.2),
    "LaVIN-DAS_1": ScienceQARow(0.07, 1501.3, -213.6, 3.23, 89.0, 94.6, 85.1, 87.9, 86.5, 88.4, 89.7, 88.1, 89.2),
    "LaVIN-EAS_12": ScienceQARow(0.11, 1497.1, -217.7, 1.69, 89.5, 95.6, 86.4, 88.7, 88.3, 88.8, 91.3, 87.7, 90.0),
}

# ----------------------------------------------------------------------------- Table 3: Slake and AID on LLaVA-7B


@dataclass(frozen=True)
class TransferRow:
    """A row of Table 3: Slake (open / closed questions) and AID (20% / 50% of each class for training)."""

    params_pct: float
    slake_gflops: float
    slake_delta_gflops: float
    slake_open: float
    slake_closed: float
    aid_gflops: float
    aid_delta_gflops: float
    aid_20: float
    aid_50: float
    avg_gflops: float
    avg_delta_gflops: float
    avg: float


TABLE3 = {
    "LLaVA-7B-ZS": TransferRow(100.00, 4904.0, 0.0, 28.7, 56.5, 4869.9, 0.0, 25.5, 25.6, 4886.9, 0.0, 32.6),
    "LLaVA-7B-FT": TransferRow(100.00, 4904.0, 0.0, 80.3, 85.6, 4869.9, 0.0, 97.7, 97.9, 4886.9, 0.0, 90.4),
    "LoRA": TransferRow(0.61, 4904.0, 0.0, 79.2, 85.6, 4869.9, 0.0, 96.9, 97.3, 4886.9, 0.0, 89.8),
    "Adapter": TransferRow(0.53, 4926.7, 22.7, 77.5, 87.3, 4892.4, 22.5, 96.2, 96.8, 4909.5, 22.6, 89.5),
    "MAM": TransferRow(0.53, 4926.7, 22.7, 77.4, 87.7, 4892.4, 22.5, 96.2, 97.7, 4909.5, 22.6, 89.8),
    "DAS_4": TransferRow(0.63, 4373.0, -531.0, 79.2, 86.5, 4342.9, -527.0, 96.6, 97.8, 4358.0, -529.0, 90.0),
    "EAS_10": TransferRow(0.85, 4412.9, -491.1, 78.1, 87.0, 4406.9, -497.1, 97.5, 98.0, 4409.9, -477.1, 90.2),
    "EAS_12": TransferRow(0.86, 4314.7, -589.3, 77.4, 87.5, 4308.8, -561.1, 97.5, 97.58, 4311.8, -575.2, 89.5),
}

# ----------------------------------------------------------------------------- Table 4: METER (not reproduced)


@dataclass(frozen=True)
class MeterRow:
    """A row of Table 4: METER on VQAv2 (test-dev), NLVR2 (test-P) and Flickr30K (IR / TR R@1)."""

    params_pct: float
    vqa_gflops: float
    vqa_delta_gflops: float
    vqa_test_dev: float
    nlvr_gflops: float
    nlvr_delta_gflops: float
    nlvr_test_p: float
    flickr_gflops: float
    flickr_delta_gflops: float
    flickr_ir_r1: float
    flickr_tr_r1: float
    avg_gflops: float
    avg_delta_gflops: float
    avg: float


TABLE4 = {
    "Full Tuning": MeterRow(100.00, 93.2, 0.0, 77.4, 52.9, 0.0, 83.1, 93.2, 0.0, 82.2, 94.3, 79.8, 0.0, 84.3),
    "Shallow Prompt": MeterRow(0.09, 121.9, 28.7, 68.5, 79.7, 26.9, 65.7, 121.9, 28.7, 74.2, 88.6, 107.9, 28.7, 74.3),
    "Deep Prompt": MeterRow(0.57, 99.8, 6.5, 70.8, 58.5, 5.6, 72.6, 99.8, 6.5, 78.8, 89.4, 86.0, 6.2, 77.9),
    "LoRA": MeterRow(0.09, 93.2, 0.0, 74.0, 52.9, 0.0, 78.8, 93.2, 0.0, 79.9, 92.6, 79.8, 0.0, 81.3),
    "Adapter": MeterRow(1.65, 94.9, 1.6, 74.7, 54.3, 1.4, 79.9, 94.9, 1.6, 80.4, 91.9, 81.3, 1.6, 81.7),
    "MAM": MeterRow(1.11, 94.3, 1.1, 75.1, 53.5, 0.7, 80.4, 94.3, 1.1, 80.4, 93.2, 80.7, 1.0, 82.3),
    "DAS_4": MeterRow(1.65, 82.1, -11.2, 74.8, 47.7, -5.1, 80.1, 82.1, -11.6, 80.1, 91.8, 70.6, -9.2, 81.7),
    "EAS_8": MeterRow(1.26, 82.6, -10.7, 74.9, 45.5, -7.4, 80.1, 84.1, -9.1, 80.4, 92.2, 70.7, -9.1, 81.9),
    "EAS_10": MeterRow(1.26, 78.7, -14.5, 74.8, 42.7, -10.2, 80.1, 81.3, -11.9, 79.8, 90.4, 67.6, -12.2, 81.3),
}

# ----------------------------------------------------------------------------- Tables 5-8: LaVIN-7B, ScienceQA


@dataclass(frozen=True)
class AblationRow:
    """A row of Tables 5-8: updated parameters, inference time per sample, average ScienceQA accuracy."""

    params_pct: float
    seconds: float
    accuracy: float


# Table 5: which modules the search may skip ("mha", "ffn", "mha_or_ffn"), and how many (k).
TABLE5 = {
    ("mha", 4): AblationRow(0.08, 2.08, 89.4), ("mha", 8): AblationRow(0.10, 1.91, 89.8),
    ("mha", 12): AblationRow(0.11, 1.69, 90.0),
    ("ffn", 4): AblationRow(0.08, 2.26, 88.3), ("ffn", 8): AblationRow(0.11, 2.18, 85.0),
    ("ffn", 12): AblationRow(0.13, 2.11, 82.1),
    ("mha_or_ffn", 4): AblationRow(0.08, 2.13, 88.4), ("mha_or_ffn", 8): AblationRow(0.10, 2.09, 89.2),
    ("mha_or_ffn", 12): AblationRow(0.12, 1.78, 88.6),
}

# Table 6: PIA's design switches, cumulative, on EAS-7B_12 (keys as eas.method.pia.config's Table 6 rows).
TABLE6_LABELS = {"base": "Base", "info_exchange": "+ Info. Exc.", "frozen_bias": "+ Frozen bias",
                 "reparam": "+ Re-param."}
TABLE6 = {"base": AblationRow(0.09, 2.94, 87.1), "info_exchange": AblationRow(0.11, 3.23, 90.1),
          "frozen_bias": AblationRow(0.11, 2.97, 90.0), "reparam": AblationRow(0.11, 1.69, 90.0)}

# Table 7: the number of skipped MHAs (0: LaVIN-7B itself, nothing skipped).
TABLE7 = {0: AblationRow(0.06, 3.70, 89.4), 4: AblationRow(0.08, 2.08, 89.4), 8: AblationRow(0.10, 1.92, 89.8),
          12: AblationRow(0.11, 1.69, 90.0), 16: AblationRow(0.13, 1.56, 88.4)}

# Table 8: the hidden size of the skip-replacing PIAs (EAS-7B, ScienceQA).
TABLE8 = {8: AblationRow(0.04, 1.89, 87.6), 16: AblationRow(0.05, 1.91, 88.0), 32: AblationRow(0.08, 1.92, 89.8),
          64: AblationRow(0.22, 1.94, 90.1)}

# ----------------------------------------------------------------------------- numbers stated in the text


@dataclass(frozen=True)
class Quote:
    value: float | tuple
    where: str
    what: str


TEXT = {
    "mha_over_ffn_time": Quote(1.35, "Sec. 1, Fig. 1a",
                               "an MHA takes ~35% more time than an FFN (with half its parameters)"),
    "eas_vs_das_faster_pct": Quote((44.4, 51.6), "Sec. 5.3, Fig. 4",
                                   "at equal numbers of skipped modules EAS is faster than DAS by this range (%)"),
    "eas_vs_lavin_speedup": Quote(2.18, "Abstract, Sec. 5.3 (Table 2)", "LaVIN-EAS_12 against LaVIN-7B"),
    "das_vs_lavin_speedup": Quote(1.14, "Sec. 5.3 (Table 2)", "LaVIN-DAS against LaVIN-7B"),
    "llava_vs_llama_compute": Quote(6.2, "Sec. 1", "LLaVA's computation against LLaMA's on ScienceQA questions"),
    "das_vs_mam_table1": Quote((-0.6, 11.8), "Sec. 5.3 (Table 1)",
                               "DAS_4 against MAM: accuracy (points), efficiency (%)"),
    "eas12_table1": Quote((-1.0, 36.6), "Sec. 5.3 (Table 1)", "EAS_12: accuracy change (points), speed gain (%)"),
    "ffn12_drop": Quote(-6.99, "Sec. 5.3 (Table 5)", "accuracy change (%) from skipping 12 FFNs"),
    "no_info_exchange_drop": Quote(-3.30, "Sec. 5.3 (Table 6)", "accuracy change (%) without information exchange"),
    "frozen_bias_drop": Quote(-0.1, "Sec. 5.3 (Table 6)", "accuracy change from freezing the bias"),
    "skip16_drop": Quote(1.1, "Sec. 5.3 (Table 7)", "accuracy drop (%) when skipping 16 MHAs"),
    "hidden_gain": Quote((2.64, 0.18), "Sec. 5.3 (Table 8)", "accuracy gain for this many more updated params (%)"),
    "meter_eas_vs_adapter": Quote((81.9, 81.7, 13.0), "Sec. 5.3 (Table 4)", "EAS vs Adapter accuracy, FLOPs saved (%)"),
    "meter_eas_vs_das_flops": Quote((8.0, 12.0), "Sec. 5.3 (Table 4)", "FLOPs EAS_8 / EAS_12 save beyond DAS (%)"),
    "zero_shot_slake_aid": Quote((42.6, 25.5), "Sec. 5.3 (Table 3)", "LLaVA's zero-shot Slake and AID accuracy"),
}

# The paper's implementation details (Sec. 5.2) that the presets follow.
SETTINGS = {
    "llava_pia_hidden": {"skip": 256, "adapt": 128},
    "lavin_pia_hidden": {"skip": 32, "adapt": 8},
    "meter_pia_hidden": {"skip": 144},
    "search": {"warmup_epochs": 5, "search_epochs": 5, "subnetworks": 3, "every_steps": 10},
    "datasets": {"scienceqa": (12726, 4241, 4241), "slake": (9849, 2109, 2070), "aid_images": 10000,
                 "aid_classes": 30},
}


# ----------------------------------------------------------------------------- views in the shapes callers used

def latency_table1() -> dict:
    """{(method, k): (GFLOPs, s / sample)} of Table 1 (eas.study.latency's PAPER_TABLE1)."""
    return {TABLE1_METHODS[label]: (row.gflops, row.seconds) for label, row in TABLE1.items()}


def table1_base() -> tuple[float, float]:
    """Table 1's base row: (GFLOPs, s / sample) = (5018.4, 2.19)."""
    row = TABLE1["LLaVA-7B"]
    return row.gflops, row.seconds


def bench_table6() -> dict:
    """{row: (s / sample, accuracy)} of Table 6 (eas.study.bench's PAPER_TABLE6)."""
    return {k: (r.seconds, r.accuracy) for k, r in TABLE6.items()}


def table6_view() -> dict:
    """{row: (label, accuracy, s / sample)} of Table 6 (chapter 04's PAPER6)."""
    return {k: (TABLE6_LABELS[k], r.accuracy, r.seconds) for k, r in TABLE6.items()}


def table5_view() -> dict:
    """{kind: {k: (s / sample, accuracy)}} of Table 5 (chapter 03's PAPER)."""
    out: dict = {}
    for (kind, k), r in TABLE5.items():
        out.setdefault(kind, {})[k] = (r.seconds, r.accuracy)
    return out


def table7_view() -> dict:
    """{k: (accuracy, s / sample)} of Table 7's EAS rows (chapter 04's PAPER7)."""
    return {k: (r.accuracy, r.seconds) for k, r in TABLE7.items() if k}


def table8_view() -> dict:
    """{hidden: (accuracy, updated params %)} of Table 8 (chapter 04's PAPER8)."""
    return {h: (r.accuracy, r.params_pct) for h, r in TABLE8.items()}


def shapes_speedups() -> dict:
    """The measured speed-ups the paper reports, with what each compares (eas.measure.shapes' PAPER_SPEEDUPS)."""
    base, eas12 = TABLE1["LLaVA-7B"].seconds, TABLE1["EAS_12"].seconds
    t6b, t6r = TABLE6["base"].seconds, TABLE6["reparam"].seconds
    lavin = TEXT["eas_vs_lavin_speedup"].value
    return {
        f"EAS_12 vs LLaVA-1.5-7B (Table 1: {base} s -> {eas12} s)": (base / eas12, "skipping 12 MHAs, adapters merged"),
        f"EAS vs LaVIN (abstract: {lavin}x)": (lavin, "skipping 12 MHAs + LaVIN's unmerged adapters removed"),
        f"Re-param. vs Base PIA (Table 6: {t6b} s -> {t6r} s)": (t6b / t6r, "merging PIAs, same 12 MHAs skipped"),
    }


PETL_ROWS = ("LoRA", "Adapter", "MAM", "DAS_4")  # the PETL / PCETL rows EAS is compared with in Tables 1 and 3


def methods_base() -> dict:
    """{task: (base GFLOPs, base s / sample or None)} (chapter 07's PAPER_BASE): ScienceQA from Table 1,
    the Slake (vqa) and AID (classification) analogs from Table 3, which gives no times."""
    return {"scienceqa": table1_base(), "vqa": (TABLE3["LoRA"].slake_gflops, None),
            "classification": (TABLE3["LoRA"].aid_gflops, None)}


def methods_view(task: str) -> dict:
    """{row: (updated params %, FLOPs delta G, s / sample or None, {column: accuracy})} (chapter 07's PAPER):
    Table 1 for scienceqa (Avg), Table 3's Slake for vqa (Open, Closed), AID 20% for classification (Acc)."""
    if task == "scienceqa":
        return {k: (r.params_pct, r.delta_gflops, r.seconds, {"Avg": r.Avg}) for k, r in TABLE1.items()
                if k != "LLaVA-7B"}
    rows = {k: r for k, r in TABLE3.items() if not k.startswith("LLaVA")}
    if task == "vqa":
        return {k: (r.params_pct, r.slake_delta_gflops, None, {"Open": r.slake_open, "Closed": r.slake_closed})
                for k, r in rows.items()}
    if task == "classification":
        return {k: (r.params_pct, r.aid_delta_gflops, None, {"Acc": r.aid_20}) for k, r in rows.items()}
    raise KeyError(f"unknown task {task!r}; expected scienceqa, vqa or classification.")


def transfer_view() -> dict:
    """{row: (Slake Open, Slake Closed, AID 20%, AID 50%)} of Table 3's tuned rows (chapter 07's PAPER3)."""
    return {k: (r.slake_open, r.slake_closed, r.aid_20, r.aid_50) for k, r in TABLE3.items()
            if not k.startswith("LLaVA")}


def zero_shot_view() -> dict:
    """Table 3's LLaVA-7B-ZS row in chapter 01's row names (the paper has no zero-shot ScienceQA row)."""
    r = TABLE3["LLaVA-7B-ZS"]
    return {"VQA Open": r.slake_open, "VQA Closed": r.slake_closed, "Classification (20%)": r.aid_20,
            "Classification (50%)": r.aid_50}


def headline_accuracy(task: str, label: str) -> float | None:
    """The accuracy a chapter's headline column compares for a Table 1 / 3 row: ScienceQA Avg, the mean of
    Slake Open and Closed (the vqa analog's "Avg"), or AID 20% (classification). None if the row is absent."""
    if task == "scienceqa":
        return TABLE1[label].Avg if label in TABLE1 else None
    if label not in TABLE3:
        return None
    r = TABLE3[label]
    if task == "vqa":
        return (r.slake_open + r.slake_closed) / 2
    if task == "classification":
        return r.aid_20
    raise KeyError(f"unknown task {task!r}; expected scienceqa, vqa or classification.")


# ----------------------------------------------------------------------------- the paper's side of each claim


@dataclass(frozen=True)
class PaperClaim:
    """The paper's value for a claim of the book's ledger. `a` and `b` are the two sides (accuracy or time),
    `value` the difference or ratio as the claim states it; task / method_a / method_b None match any."""

    claim: str
    chapter: str
    metric: str
    source: str
    a: float | None = None
    b: float | None = None
    value: float | None = None
    note: str = ""
    task: str | None = None
    method_a: str | None = None
    method_b: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _acc_claim(claim, chapter, a, b, source, **kw) -> PaperClaim:
    return PaperClaim(claim, chapter, "accuracy", source, a=a, b=b, value=round(a - b, 4), **kw)


_LAVIN = "LaVIN-7B on ScienceQA, not this chapter's task"


def _claims() -> list[PaperClaim]:
    out = [
        PaperClaim("bandit_beats_best_rule", "02_redundancy", "accuracy", "not in the paper",
                   note="the paper's premise (Sec. 4.3) that a searched skip set beats simpler choices; it reports "
                        "no comparison with simple selection rules"),
        PaperClaim("bandit_beats_rule", "02_redundancy", "accuracy", "not in the paper",
                   note="as bandit_beats_best_rule, one rule at a time"),
        _acc_claim("mha_largest_k_no_worse_than_smallest", "03_skip_ablation", TABLE5["mha", 12].accuracy,
                   TABLE5["mha", 4].accuracy, "Table 5, MHA k=12 vs k=4", note=_LAVIN),
        _acc_claim("info_exchange_gain", "04_pia_ablation", TABLE6["info_exchange"].accuracy,
                   TABLE6["base"].accuracy, "Table 6, + Info. Exc. vs Base", note=_LAVIN),
        _acc_claim("reparam_no_worse", "04_pia_ablation", TABLE6["reparam"].accuracy,
                   TABLE6["frozen_bias"].accuracy, "Table 6, + Re-param. vs + Frozen bias", note=_LAVIN),
        PaperClaim("static_router_no_worse", "04_pia_ablation", "accuracy", "not in the paper",
                   note="a router fixed per task is this project's addition; the paper's nearest row is Table 6's "
                        "frozen bias (-0.1 against information exchange), a different mechanism"),
        _acc_claim("largest_k_no_worse_than_best", "04_pia_ablation", TABLE7[16].accuracy, TABLE7[12].accuracy,
                   "Table 7, EAS-7B_16 vs the best k (12)", note=_LAVIN),
        _acc_claim("larger_pia_better", "04_pia_ablation", TABLE8[64].accuracy, TABLE8[8].accuracy,
                   "Table 8, hidden 64 vs 8", note=_LAVIN),
        PaperClaim("mha_slower_than_ffn", "06_latency", "MHA / FFN time", "Sec. 1, Fig. 1a",
                   a=TEXT["mha_over_ffn_time"].value, b=1.0, value=TEXT["mha_over_ffn_time"].value,
                   note="LLaVA-7B on a GPU"),
        PaperClaim("eas_faster_than_das", "06_latency", "time saved vs DAS at equal k (%)", "Sec. 5.3, Fig. 4",
                   a=TEXT["eas_vs_das_faster_pct"].value[0], b=TEXT["eas_vs_das_faster_pct"].value[1],
                   note="a range over k, LaVIN-7B; a and b are its ends"),
    ]
    for k in (4, 8, 12):
        out.append(_acc_claim(f"mha_beats_ffn_k{k}", "03_skip_ablation", TABLE5["mha", k].accuracy,
                              TABLE5["ffn", k].accuracy, f"Table 5, MHA vs FFN at k={k}", note=_LAVIN))
    base_s = TABLE1["LLaVA-7B"].seconds
    eas_s = min(TABLE1[k].seconds for k in TABLE1 if k.startswith("EAS"))
    petl_s = min(TABLE1[k].seconds for k in PETL_ROWS)
    out.append(PaperClaim("eas_fastest", "07_methods", "time vs base", "Table 1, fastest EAS row vs fastest other",
                          a=round(eas_s / base_s, 4), b=round(petl_s / base_s, 4),
                          value=round(eas_s / base_s - petl_s / base_s, 4), task=None))
    out.append(PaperClaim("others_slower_than_base", "07_methods", "time vs base",
                          "Table 1, fastest PETL row vs the base", a=round(petl_s / base_s, 4), b=1.0,
                          value=round(petl_s / base_s - 1.0, 4)))
    tables = {"scienceqa": ("Table 1, Avg", TABLE1), "vqa": ("Table 3, Slake (Open + Closed) / 2", TABLE3),
              "classification": ("Table 3, AID 20%", TABLE3)}
    for task, (where, table) in tables.items():
        eas_rows = [k for k in table if k.startswith("EAS")]
        best = max(PETL_ROWS, key=lambda k: headline_accuracy(task, k))
        top = max(eas_rows, key=lambda k: int(k.split("_")[1]))
        out.append(_acc_claim("eas_no_worse_than_best_petl", "07_methods", headline_accuracy(task, top),
                              headline_accuracy(task, best), f"{where}, {top} vs the best PETL row ({best})",
                              task=task))
        for e in eas_rows:
            for p in PETL_ROWS:
                out.append(_acc_claim("eas_vs_baseline", "07_methods", headline_accuracy(task, e),
                                      headline_accuracy(task, p), f"{where}, {e} vs {p}", task=task, method_a=e,
                                      method_b=p))
    return out


PAPER_CLAIMS = _claims()


def paper_claim(claim: str, task: str | None = None, method_a: str | None = None,
                method_b: str | None = None) -> PaperClaim | None:
    """The paper's entry for a ledger claim: the most specific of `PAPER_CLAIMS` whose claim matches and
    whose task / method_a / method_b are each either unset or equal to the ones given. None if none."""
    best, best_score = None, -1
    for c in PAPER_CLAIMS:
        if c.claim != claim:
            continue
        fields = ((c.task, task), (c.method_a, method_a), (c.method_b, method_b))
        if any(want is not None and want != got for want, got in fields):
            continue
        score = sum(want is not None for want, _ in fields)
        if score > best_score:
            best, best_score = c, score
    return best


# ----------------------------------------------------------------------------- every table and figure, and its status

STATUSES = ("reproduced under cpu", "only under gpu", "not reproduced")


@dataclass(frozen=True)
class Artifact:
    name: str
    description: str
    status: str   # one of STATUSES
    chapter: str  # where the book takes it up ("" if nowhere)
    detail: str   # what runs under which profile, or why not and what a reader would need

    def to_dict(self) -> dict:
        return asdict(self)


PAPER_ARTIFACTS = [
    Artifact("Table 1", "EAS against LoRA, Adapter, MAM and DAS fine-tuned on ScienceQA with LLaVA-7B: updated "
                        "parameters, FLOPs, time per sample and accuracy by subject, context and grade",
             "reproduced under cpu", "06_latency, 07_methods",
             "timing and FLOPs columns on the mini-LLaVA and a 1B-shaped model (06); the accuracy columns on the VQA "
             "analog under cpu (ScienceQA is not learned at that budget: 07 re-measures it each run) and on the "
             "ScienceQA format, with EAS_8 and the full-tuning row, only under gpu"),
    Artifact("Table 2", "EAS and DAS inside LaVIN against other PETL-based multimodal LLMs (LaVIN, LLaMA-LoRA, "
                        "LLaMA-Adapter) on ScienceQA",
             "not reproduced", "",
             "needs LaVIN-7B (LLaMA-7B with ViT-L and its multimodal adapters) and the LLaMA-LoRA / LLaMA-Adapter "
             "MLLMs, trained on ScienceQA on GPUs; this project's models are LLaVA-style only, and an analog of "
             "LaVIN's adapter design would not say what the table says about those systems"),
    Artifact("Table 3", "the same methods on two out-of-domain tasks, Slake medical VQA (open, closed) and AID "
                        "remote-sensing classification (20% / 50% training), with LLaVA-7B zero-shot and full "
                        "tuning rows",
             "reproduced under cpu", "01_base_model, 07_methods",
             "zero-shot row (01) and the Slake columns (07's method table runs the Slake-format VQA analog) under "
             "cpu; the AID columns only under cpu-full and gpu (the cpu budget does not learn the AID analog), the "
             "full-tuning row only under gpu"),
    Artifact("Table 4", "EAS, DAS and PETL methods on METER for VQAv2, NLVR2 and Flickr30K retrieval",
             "not reproduced", "",
             "needs METER (a CLIP-ViT + RoBERTa co-attention encoder, not a decoder LLM) and VQAv2 / NLVR2 / "
             "Flickr30K with the DAS training recipe on GPUs; nothing here has METER's co-attention layers, and "
             "skipping attention in an encoder-only model is a different question from the decoder case"),
    Artifact("Table 5", "skipping MHAs vs FFNs vs either, at 4, 8 and 12 modules: accuracy and time",
             "reproduced under cpu", "03_skip_ablation",
             "on the VQA analog with k = 4 and 12 under cpu; ScienceQA and k = 8 only under gpu"),
    Artifact("Table 6", "PIA's design switches (one path, information exchange, frozen bias, merging): accuracy "
                        "and time",
             "reproduced under cpu", "04_pia_ablation, 05_reparameterisation",
             "accuracy on the VQA analog (04), time per sample of the four designs (05)"),
    Artifact("Table 7", "the number of skipped MHAs (4 to 16) against LaVIN: accuracy and time",
             "reproduced under cpu", "04_pia_ablation", "k = 4, 12, 16 under cpu; k = 8 only under gpu"),
    Artifact("Table 8", "the PIA hidden size (8 to 64): accuracy, updated parameters and time",
             "reproduced under cpu", "04_pia_ablation", "hidden 8, 32, 64 under cpu; 16 only under gpu"),
    Artifact("Figure 1", "(a) time of EAS, Adapter, DAS and the base model, MHA against FFN; (b) accuracy and "
                        "speed when skipping more MHAs or FFNs",
             "reproduced under cpu", "06_latency, 03_skip_ablation", "(a) in 06, (b) in 03"),
    Artifact("Figure 2", "schematic of LaVIN, DAS and EAS: where adapters sit and what is skipped",
             "not reproduced", "", "a diagram with no data; the three designs are implemented in eas.baselines "
                                   "and eas.method.pia"),
    Artifact("Figure 3", "schematic of PIA (multi-path down- and up-projections), its placement before the FFN "
                        "and its merge, and the bandit search",
             "not reproduced", "",
             "a diagram with no data; what it draws is implemented in eas.method.pia, eas.method.reparam "
                                   "and eas.method.bandit, and checked in 05 (merged equals unmerged)"),
    Artifact("Figure 4", "time per sample and accuracy of EAS and DAS on LaVIN as more modules are skipped",
             "reproduced under cpu", "06_latency",
             "the time axis at equal k under cpu; the accuracy axis would need DAS and EAS fine-tuned at every k, "
             "which no profile runs"),
    Artifact("Figure 5", "example answers with explanations of LLaVA-7B tuned by EAS and by full tuning",
             "not reproduced", "",
             "needs LLaVA-7B fully fine-tuned and EAS-tuned on ScienceQA with rationales; the 135M mini-LLaVA does "
             "not learn ScienceQA's rationales at any budget run here, so its explanations would show nothing"),
]
