"""One experiment = one tidy results row: data -> model -> skip set -> adapters -> fine-tuning -> greedy eval.

    spec = ExperimentSpec(task="scienceqa", method="eas", kind="mha", k=12, selector="bandit")
    row = run_experiment(spec)          # trains, evaluates, stores; a finished spec returns its row at once
    table = results_table("table1")     # every finished row of a study, for the notebooks

Methods and their selectors (`check_spec` says the same in its errors):
    eas        skip k modules of `kind` (mha | ffn | mha_or_ffn) chosen by `selector`, PIAs fine-tuned
    das        skip k whole layers (kind "layer"), DAS adapters fine-tuned
    skip-only  skip k modules, no adapters, no training: what skipping alone costs (a control)
    lora | adapter | mam | full   skip nothing (selector "none", k 0)

The bandit selector (eas, das) trains a "supernet" first: adapters in every slot that any skip set can
use, trained with random skip sets for `bandit_warmup_steps`, then with policy-sampled sets while the
search compares m sub-networks on a held-out val batch every T steps (eas.method.bandit, run under eas.models.train,
so it resumes). The chosen set's adapters then start from the supernet's weights (`warm_start`) and are
fine-tuned for `steps`. Other selectors score the base model (or nothing) and go straight to fine-tuning.

On disk, under data/results/runs/{spec.key()}/:
    search/          the bandit's training run and bandit.jsonl (bandit selectors only)
    selection.json   the chosen candidates and the selector's scores
    train/           eas.models.train's run directory (checkpoints; done.json when finished)
    generations.csv  one row per test example: raw reply, parsed answer, correct, meta
    row.json         the results row; written last, so its presence means "finished"
Every stage resumes: an interrupted run picks up at the last training checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from accelerate import PartialState
from torch import nn
from transformers import AutoConfig

from eas import baselines
from eas.core import io
from eas.core.results import cached_frame
from eas.data.evaluate import METRIC_COLUMNS, chance_accuracy, chance_z, score, summarise
from eas.data.scienceqa import ANSWER_FORMATS
from eas.measure import cost
from eas.measure.memory import training_memory
from eas.measure.shapes import param_count, shape_config
from eas.method import reparam, selectors
from eas.method.bandit import LOG_NAME, BanditConfig, BanditSearch, _load_log, candidate_skip_set, max_skippable
from eas.method.pia import PIAConfig, SkipPIA
from eas.method.pia.config import TABLE6_ROWS
from eas.method.reparam import calibrate_static_router, prepare_reparam, reparam_hook
from eas.method.skip import SkipSet, apply_skips, eas_blocks, set_checkpointing
from eas.models import arch
from eas.models import train as trainlib
from eas.models.generate import generate_texts
from eas.models.scoring import letter_scores, letter_slot, letter_summary
from eas.models.zoo import load_model
from eas.study import runs, stats

TASKS = tuple(METRIC_COLUMNS)
KINDS = ("mha", "ffn", "mha_or_ffn", "layer")
SELECTORS = ("bandit", "random", "last", "attention_drop", "block_influence", "greedy", "none")
SKIPPING = ("eas", "das", "skip-only")
NON_SKIPPING = ("lora", "adapter", "mam", "full")
METHODS = SKIPPING + NON_SKIPPING

# What each skipping method may skip, and how the skipped set may be chosen.
ALLOWED_KINDS = {"eas": ("mha", "ffn", "mha_or_ffn"), "das": ("layer",), "skip-only": KINDS}
ALLOWED_SELECTORS = {
    "eas": ("bandit", "random", "last", "attention_drop", "block_influence", "greedy"),
    "das": ("bandit", "random", "last", "block_influence", "greedy"),
    # skip-only has no adapters: nothing to search with
    "skip-only": ("random", "last", "attention_drop", "block_influence", "greedy"),
}
# Selectors that only score some kinds: attention drop measures a sub-block, block influence any
# single-kind candidate (a layer, or one sub-block), never the mixed "mha_or_ffn" list.
SELECTOR_KINDS = {"attention_drop": ("mha", "ffn"), "block_influence": ("mha", "ffn", "layer")}

# Spec fields that change how a run is executed or labelled, not what it computes: not in the key.
NOT_IN_KEY = ("study", "checkpoint_every", "letter_every", "letter_items", "gradient_checkpointing")
# Fields left out of the key while they hold these values, so that keys made before the field existed still
# name the same runs.
KEY_OMITTED_AT = {"answer_format": "QCM-ALE", "dataset": None}


class ExperimentError(ValueError):
    pass


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ExperimentError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}.")


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything that determines one results row (JSON-serialisable; not hashable, use `key()`)."""

    task: str = "scienceqa"
    method: str = "eas"
    kind: str | None = None  # None: "mha" for eas / skip-only, "layer" for das, nothing for the others
    k: int = 0  # modules skipped
    selector: str | None = None  # None: "bandit" for eas / das, "none" for methods that skip nothing
    train_fraction: float = 0.2  # classification only: the AID "20%" / "50%" columns
    answer_format: str = "QCM-ALE"  # scienceqa only: the paper's answer + rationale, or "QCM-A" (answer only)
    # PIA options (eas): PIAConfig fields, plus "preset" ("llava" | "lavin") or "ablation" (a Table 6 row)
    pia: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)  # the baseline's config: LoRA r, adapter hidden, ...
    # fine-tuning
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 0  # learning-rate warm-up
    grad_accum: int = 1
    # Batches of similar-length examples (eas.models.train): less padding (a ScienceQA step 3.74 -> 2.55 s here), but on
    # templated data length follows the question type, so each batch holds one type: under cpu on VQA that made
    # the step losses swing and one 03 run diverge (loss 0.5 -> 7.7 at step 24). Off unless asked for.
    group_by_length: bool = False
    # bandit search (bandit selector only)
    bandit_warmup_steps: int = 20  # supernet training with uniformly random skip sets
    bandit_comparisons: int = 5
    bandit_m: int = 3  # sub-networks per comparison
    bandit_T: int = 10  # training steps between comparisons
    bandit_lr: float = 20.0
    heldout: int = 16  # val examples: the bandit's held-out batch / the similarity selectors' inputs
    warm_start: bool = True  # fine-tune the chosen set from the supernet's adapters (else fresh ones)
    # data and evaluation
    sizes: dict = field(default_factory=dict)  # runs.prepare_task sizes (train/val/test or per_class)
    # a folder holding the task's official release (e.g. ScienceQA's problems.json, pid_splits.json, images/);
    # None: the study's offline analog, built from `sizes` and `data_seed`
    dataset: str | None = None
    n_train: int | None = None  # limit on training examples (None: the whole train split)
    n_eval: int = 100
    eval_batch_size: int = 8
    max_new_tokens: int = 64
    model: str = "mini-llava"  # "tiny" | "mini-llava" | a LLaVA-1.5 path / hub id
    data_seed: int = 0
    seed: int = 0
    # labels / execution (not in the key)
    study: str = "default"
    checkpoint_every: int = 50
    # recompute each decoder layer's activations in backward (eas.method.skip.set_checkpointing): the same
    # gradients, ~1/3 more compute, and activation memory of one layer instead of all (a 7B run's batches)
    gradient_checkpointing: bool = False
    # scienceqa only: every `letter_every` fine-tuning steps, the answer letter's loss and accuracy on
    # `letter_items` train and val items (eas.models.scoring; under QCM-A-text the first token at which the
    # options' words differ), saved as letters.csv; 0 turns it off
    letter_every: int = 20
    letter_items: int = 64

    def __post_init__(self):
        _one_of("task", self.task, TASKS)
        _one_of("method", self.method, METHODS)
        skipping = self.method in SKIPPING
        if self.kind is None and skipping:
            object.__setattr__(self, "kind", "layer" if self.method == "das" else "mha")
        if self.selector is None:
            object.__setattr__(self, "selector", "bandit" if self.method in ("eas", "das") else "none")
        if self.selector != "bandit":  # only a bandit search has a supernet to start from: one key per run
            object.__setattr__(self, "warm_start", False)
        for name in ("pia", "method_options", "sizes"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        if self.task != "scienceqa":  # only ScienceQA has answer formats: one key per run on the other tasks
            object.__setattr__(self, "answer_format", "QCM-ALE")
        if self.dataset is not None:  # one folder, one key, however the path was written
            if not isinstance(self.dataset, (str, Path)) or not str(self.dataset):
                raise ExperimentError(f"dataset must be the path of a folder holding the task's release, got "
                                      f"{self.dataset!r}.")
            object.__setattr__(self, "dataset", str(Path(self.dataset).expanduser().resolve()))
        check_spec(self)
        if self.method == "eas":  # the resolved PIA options: one design, one key, however it was named
            object.__setattr__(self, "pia", pia_config(self).to_dict())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ExperimentError(f"unknown ExperimentSpec field(s) {unknown}; known: {', '.join(sorted(known))}.")
        return cls(**d)

    def replace(self, **changes) -> "ExperimentSpec":
        return ExperimentSpec.from_dict({**self.to_dict(), **changes})

    def key(self) -> str:
        return io.key_of({k: v for k, v in self.to_dict().items()
                          if k not in NOT_IN_KEY and KEY_OMITTED_AT.get(k, object()) != v})

    def run_dir(self) -> Path:
        return io.results_dir("runs", self.key())


# ----------------------------------------------------------------------------- validation

def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ExperimentError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_spec(spec: ExperimentSpec) -> None:
    """Every error a spec can have without building the model (k's upper bound needs the layer count)."""
    m = spec.method
    if m in SKIPPING:
        _one_of(f"candidate kind for method {m!r}", spec.kind, ALLOWED_KINDS[m])
        _one_of(f"selector for method {m!r}", spec.selector, ALLOWED_SELECTORS[m])
        if spec.selector in SELECTOR_KINDS and spec.kind not in SELECTOR_KINDS[spec.selector]:
            raise ExperimentError(f"selector {spec.selector!r} cannot score kind {spec.kind!r}; "
                                  f"it takes kind {' or '.join(map(repr, SELECTOR_KINDS[spec.selector]))}.")
        _positive_int(f"k (modules skipped by {m!r})", spec.k)
    else:
        if spec.selector != "none" or spec.kind is not None or spec.k != 0:
            raise ExperimentError(f"method {m!r} skips nothing: it takes selector 'none', kind None and k 0 "
                                  f"(got selector={spec.selector!r}, kind={spec.kind!r}, k={spec.k!r}).")
    if spec.pia and m != "eas":
        raise ExperimentError(f"PIA options are for method 'eas', not {m!r}.")
    if spec.method_options and m in ("eas", "skip-only"):
        raise ExperimentError(f"method {m!r} takes no method_options (use `pia` for EAS's hidden sizes).")
    if m == "eas":
        pia_config(spec)  # raises PIAConfigError naming the bad option
    elif m in baselines.METHODS:
        opts = spec.method_options
        if m == "das" and ("layers" in opts or "all_layers" in opts):
            raise ExperimentError("DAS's layers are chosen by the selector: leave 'layers'/'all_layers' out.")
        baselines.make_config(m, **opts)  # raises BaselineError naming the bad option
    _one_of("answer_format", spec.answer_format, ANSWER_FORMATS)
    _positive_int("letter_every", spec.letter_every, 0)
    _positive_int("letter_items", spec.letter_items)
    for name in ("gradient_checkpointing", "group_by_length"):
        if not isinstance(getattr(spec, name), bool):
            raise ExperimentError(f"{name} must be true or false, got {getattr(spec, name)!r}.")
    if spec.task == "classification" and spec.train_fraction not in runs.TRAIN_FRACTIONS.values():
        raise ExperimentError(f"train_fraction {spec.train_fraction!r} is not one of the paper's "
                              f"{sorted(runs.TRAIN_FRACTIONS.values())}.")
    for name in ("steps", "batch_size", "grad_accum", "bandit_comparisons", "bandit_T", "heldout", "n_eval",
                 "eval_batch_size", "max_new_tokens"):
        _positive_int(name, getattr(spec, name))
    _positive_int("warmup_steps", spec.warmup_steps, 0)
    _positive_int("bandit_warmup_steps", spec.bandit_warmup_steps, 0)
    _positive_int("bandit_m", spec.bandit_m, 2)
    if spec.n_train is not None:
        _positive_int("n_train", spec.n_train)
    if not spec.lr > 0 or not spec.bandit_lr > 0:
        raise ExperimentError(f"lr and bandit_lr must be positive, got {spec.lr!r}, {spec.bandit_lr!r}.")


def check_k_for(spec: ExperimentSpec, n_layers: int) -> None:
    """k's upper bound, once the model (and so its layer count) is known."""
    if spec.method not in SKIPPING:
        return
    top = max_skippable(spec.kind, n_layers)
    if spec.k > top:
        raise ExperimentError(f"k={spec.k} is out of range for kind {spec.kind!r} on a {n_layers}-layer model: "
                              f"allowed 1..{top} (at least one attention must stay).")


def pia_config(spec: ExperimentSpec) -> PIAConfig:
    """PIAConfig from spec.pia: a preset or a Table 6 row (if named), then the explicit options."""
    opts = dict(spec.pia)
    preset, row = opts.pop("preset", None), opts.pop("ablation", None)
    if preset is not None and row is not None:
        raise ExperimentError("give either pia['preset'] or pia['ablation'], not both.")
    if preset is not None:
        return PIAConfig.preset(preset, **opts)
    if row is not None:
        return PIAConfig.ablation(row, **opts)
    return PIAConfig.from_dict(opts)


# ----------------------------------------------------------------------------- data and model

def load_data(spec: ExperimentSpec) -> dict[str, list]:
    root = runs.prepare_task(spec.task, spec.sizes, seed=spec.data_seed, release=spec.dataset)
    kw = {"train_fraction": spec.train_fraction, "answer_format": spec.answer_format}
    return {"train": runs.load_split(spec.task, root, "train", limit=spec.n_train, **kw),
            "val": runs.load_split(spec.task, root, "val", limit=spec.heldout, **kw),
            "test": runs.load_split(spec.task, root, "test", limit=spec.n_eval, **kw)}


def build_model(spec: ExperimentSpec, model_factory: Callable[[], nn.Module] | None = None,
                progress: bool = True) -> nn.Module:

    model = model_factory() if model_factory is not None else load_model(spec.model, seed=spec.seed,
                                                                          progress=progress)
    baselines.detach(model)  # frozen base, no skips
    eas_blocks(model)  # every method attaches to the wrapped layers: checkpoint names never depend on order
    set_checkpointing(model, spec.gradient_checkpointing)
    return model


def _n_layers(model: nn.Module) -> int:
    return len(eas_blocks(model))


# ----------------------------------------------------------------------------- attaching methods

def attach_eas(model: nn.Module, skips: SkipSet, config: PIAConfig) -> list[nn.Module]:
    """baselines.attach "eas" for any skip set: EASConfig names skipped MHAs only, so skipped FFNs are
    applied afterwards, and a layer that loses both sub-blocks drops its (then unused) skip PIA."""
    both = set(skips.mha) & set(skips.ffn)
    modules = baselines.attach(model, "eas", baselines.EASConfig(mha=tuple(skips.mha), pia=config))
    apply_skips(model, skips)
    state = baselines.attached(model)
    for i in both:
        blk = eas_blocks(model)[i]
        state.modules.remove(blk.ffn_adapter)
        blk.ffn_adapter = None
    return [m for m in modules if m in state.modules]


def attach_method(model: nn.Module, spec: ExperimentSpec, skips: SkipSet) -> None:
    """The spec's method with its final skip set; seeded, so the adapters' initial weights are reproducible."""
    torch.manual_seed(spec.seed)
    if spec.method == "eas":
        attach_eas(model, skips, pia_config(spec))
    elif spec.method == "das":
        baselines.attach(model, "das", layers=tuple(skips.layer), **spec.method_options)
    elif spec.method == "skip-only":
        baselines.detach(model)
        apply_skips(model, skips)
    else:
        baselines.attach(model, spec.method, **spec.method_options)


class WhenAttentionSkipped(nn.Module):
    """A skip PIA for the EAS supernet: it acts only while its block's attention is skipped, as in the
    final model (where kept layers have no skip PIA); otherwise it adds nothing and gets no gradient."""

    def __init__(self, pia: SkipPIA, block: nn.Module):
        super().__init__()
        self.pia = pia
        self._block = (block,)  # a tuple keeps the block out of this module's children (no cycle)

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        return self.pia(n) if self._block[0].skip_attn else torch.zeros_like(n)


def attach_supernet(model: nn.Module, spec: ExperimentSpec) -> None:
    """Adapters in every slot any skip set of the search can use, all trainable."""
    torch.manual_seed(spec.seed)
    if spec.method == "das":
        baselines.attach(model, "das", all_layers=True, **spec.method_options)
        return
    config = pia_config(spec)
    attach_eas(model, SkipSet(), config)  # adaptation PIAs in front of every attention
    state = baselines.attached(model)
    d = arch.text_config(model).hidden_size
    for blk in eas_blocks(model):
        w = arch.layer_parts(blk.block).ffn_norm.weight
        pia = SkipPIA(d, config, device=w.device, dtype=w.dtype)
        blk.ffn_adapter = WhenAttentionSkipped(pia, blk)
        state.modules.append(blk.ffn_adapter)
        blk.ffn_adapter.requires_grad_(True)

    def undo():  # detach_pia clears PIAs only, not their wrappers
        for blk in eas_blocks(model):
            if isinstance(blk.ffn_adapter, WhenAttentionSkipped):
                blk.ffn_adapter = None

    state.undo.append(undo)


def _supernet_name(name: str) -> str:
    return name.replace(".ffn_adapter.pia.", ".ffn_adapter.")


@torch.no_grad()
def copy_supernet_weights(supernet_state: dict[str, torch.Tensor], model: nn.Module) -> int:
    """Start the chosen set's adapters from the supernet's trained ones (same slot, same layer)."""
    by_name = {_supernet_name(k): v for k, v in supernet_state.items()}
    own = trainlib.trainable_parameters(model)
    missing = sorted(set(own) - set(by_name))
    if missing:
        raise ExperimentError(f"the supernet has no weights for {missing[:4]}{'...' if len(missing) > 4 else ''}")
    for name, p in own.items():
        p.copy_(by_name[name].to(p.device, p.dtype))
    return len(own)


# ----------------------------------------------------------------------------- selecting the skip set

def train_config(spec: ExperimentSpec, steps: int, eval_every: int = 0) -> trainlib.TrainConfig:
    return trainlib.TrainConfig(lr=spec.lr, steps=steps, batch_size=spec.batch_size, grad_accum=spec.grad_accum,
                                warmup_steps=min(spec.warmup_steps, steps - 1), seed=spec.seed,
                                checkpoint_every=spec.checkpoint_every, log_every=10,
                                group_by_length=spec.group_by_length, eval_every=eval_every)


# ----------------------------------------------------------------------------- what training learns

LETTERS_FILE = "letters.csv"


def letter_sets(spec: ExperimentSpec, data: dict) -> dict[str, list] | None:
    """The train and val items whose answer letter is monitored during fine-tuning (scienceqa only)."""
    if spec.task != "scienceqa" or not spec.letter_every:
        return None
    return {"train": data["train"][:spec.letter_items], "val": val_split(spec, spec.letter_items)}


def val_split(spec: ExperimentSpec, limit: int) -> list:
    """The first `limit` items of the spec's val split (at most that many: the split may be shorter)."""
    root = runs.prepare_task(spec.task, spec.sizes, seed=spec.data_seed, release=spec.dataset)
    return runs.load_split(spec.task, root, "val", limit=limit, train_fraction=spec.train_fraction,
                           answer_format=spec.answer_format)


def letter_monitor(spec: ExperimentSpec, sets: dict[str, list]) -> Callable[[nn.Module], dict]:
    """eval_fn for eas.models.train: the letter's loss, the other target tokens' loss and the letter's
    accuracy among the options, on each monitored set ("train_letter_loss", "val_letter_acc", ...)."""

    slots = {}  # each set's letter slots, found once: they depend on the text, not the weights

    def evaluate(model: nn.Module) -> dict:
        out = {}
        for name, examples in sets.items():
            if name not in slots:
                slots[name] = [letter_slot(model, ex) for ex in examples]
            rows = letter_scores(model, examples, batch_size=spec.eval_batch_size, slots=slots[name])
            out.update({f"{name}_{col}": value for col, value in letter_summary(rows).items()})
        return out

    return evaluate


def letter_curve(spec: ExperimentSpec) -> pd.DataFrame | None:
    """A finished run's letter monitor (`letters.csv`: one row per monitored step), or None where it has none
    (not ScienceQA, monitoring off, or a run from before the monitor existed)."""
    path = spec.run_dir() / LETTERS_FILE
    return pd.read_csv(path) if path.exists() else None


def letters_frame(evals: list[dict]) -> pd.DataFrame:
    """The monitor's rows, one per evaluated step (step counts optimizer steps done: 0 is before training)."""
    return pd.DataFrame(evals).sort_values("step").reset_index(drop=True)


def bandit_config(spec: ExperimentSpec) -> BanditConfig:
    return BanditConfig(k=spec.k, m=spec.bandit_m, T=spec.bandit_T, lr=spec.bandit_lr,
                        warmup_steps=spec.bandit_warmup_steps, kind=spec.kind, seed=spec.seed)


def bandit_search(model: nn.Module, spec: ExperimentSpec, data: dict, run_dir: Path,
                  progress: bool = True) -> tuple[list[int], dict, dict[str, torch.Tensor]]:
    """Warm-up + search on the supernet (resumable); (chosen candidates, info, supernet weights)."""
    attach_supernet(model, spec)
    search = BanditSearch(bandit_config(spec), _n_layers(model), run_dir=run_dir,
                          heldout_batch=model.collate(data["val"], with_target=True))
    result = trainlib.train(model, data["train"], train_config(spec, search.search_steps(spec.bandit_comparisons)),
                            run_dir=run_dir, skip_sampler=search.skip_sampler, on_step=search.on_step,
                            stateful={"bandit": search}, progress=progress)
    weights = {k: p.detach().clone() for k, p in trainlib.trainable_parameters(model).items()}
    info = {"scores": search.s.tolist(), "comparisons": len(search.records), "search_steps": result.steps,
            "search_train_wall_s": result.wall_time, "search_final_loss": result.losses[-1]}
    baselines.detach(model)
    return search.chosen(), info, weights


def select_skips(model: nn.Module, spec: ExperimentSpec, data: dict, run_dir: Path,
                 progress: bool = True) -> tuple[SkipSet, dict, dict | None]:
    """The spec's skip set: (skip set, a JSON-able record of how it was chosen, supernet weights or None)."""

    n = _n_layers(model)
    if spec.method not in SKIPPING:
        return SkipSet(), {"selector": "none"}, None
    weights = None
    if spec.selector == "bandit":
        chosen, info, weights = bandit_search(model, spec, data, run_dir / "search", progress)
    else:
        if spec.selector == "random":
            sel = selectors.random_k(n, spec.k, seed=spec.seed, kind=spec.kind)
        elif spec.selector == "last":
            sel = selectors.last_k(n, spec.k, kind=spec.kind)
        elif spec.selector == "attention_drop":
            sel = selectors.attention_drop(model, data["val"], spec.kind, spec.k, batch_size=spec.eval_batch_size)
        elif spec.selector == "greedy":  # SLEB-style removal rounds on the held-out examples
            sel = selectors.greedy(model, data["val"], spec.kind, spec.k, spec.eval_batch_size, progress)
        else:
            sel = selectors.block_influence(model, data["val"], spec.kind, spec.k, batch_size=spec.eval_batch_size)
        chosen, info = list(sel.chosen), {"scores": [None if math.isnan(s) else s for s in sel.scores]}
    skips = candidate_skip_set(chosen, spec.kind, n)
    return skips, {"selector": spec.selector, "kind": spec.kind, "chosen": sorted(chosen),
                   "skip_set": skips.to_dict(), **info}, weights


# ----------------------------------------------------------------------------- evaluation

def after_prefill_hook(model: nn.Module, spec: ExperimentSpec) -> Callable | None:
    """EAS merges its PIAs after prefill when its config says reparam (Table 6's last row)."""

    return reparam_hook(model) if spec.method == "eas" else None


def evaluate_model(model: nn.Module, spec: ExperimentSpec, examples: list,
                   progress: bool = True) -> tuple[pd.DataFrame, dict, float]:
    """(per-example table, metric columns + chance, eval wall time in seconds)."""
    if spec.method == "lora":
        baselines.merge_lora(model)  # LoRA's inference runs at base cost (Table 1 "+0.0G")
    model.eval()
    # Image features are loaded (or computed) before the clock starts: they are not decoding.
    if hasattr(model, "cache_features"):
        model.cache_features(examples, progress=progress)
    t0 = time.perf_counter()
    texts = generate_texts(model, examples, batch_size=spec.eval_batch_size, max_new_tokens=spec.max_new_tokens,
                          after_prefill=after_prefill_hook(model, spec), progress=progress,
                          desc=f"eval {spec.task} ({len(examples)})")
    wall = time.perf_counter() - t0
    per_example = score(spec.task, examples, texts)
    metrics = {**summarise(spec.task, per_example), "chance": chance_accuracy(spec.task, examples)}
    return per_example, metrics, wall


# ----------------------------------------------------------------------------- memory, before anything is loaded

PROMPT_TEXT_TOKENS = 160  # a ScienceQA prompt's text tokens, generously (the analog's longest is ~140)


def model_shape(name: str) -> tuple[object, int, int, int]:
    """(language model config, vision + projector parameters, visual tokens, bytes per weight) of a model name,
    read from config files only: the embedded model's known shape, a LLaVA folder's config.json, or (a hub id
    this machine cannot resolve) LLaVA-1.5-7B's shape."""
    cuda = torch.cuda.is_available()
    if name == "tiny":
        return shape_config("tiny-llama"), 0, 4, 4
    if name == "mini-llava":
        return shape_config("smollm2-135m"), 0, 4, 4
    try:
        cfg = AutoConfig.from_pretrained(name, local_files_only=True)  # a folder, or the hub's local cache
        text, vision = cfg.text_config, cfg.vision_config
        d_v, layers_v = vision.hidden_size, vision.num_hidden_layers
        extra = layers_v * 12 * d_v * d_v + d_v * text.hidden_size + text.hidden_size ** 2
        visual = (vision.image_size // vision.patch_size) ** 2
    except (OSError, ValueError, AttributeError):
        text, extra, visual = shape_config("llava-1.5-7b"), 303_000_000 + 21_000_000, 576
    return text, extra, visual, 2 if cuda else 4


def trainable_estimate(spec: ExperimentSpec, config) -> int:
    """The trained parameters of `spec`'s method from the shapes (bottlenecks: down + up projections)."""
    d, n_layers = config.hidden_size, config.num_hidden_layers
    opts = spec.method_options
    if spec.method == "eas":
        cfg = pia_config(spec)
        return 2 * d * (spec.k * cfg.skip_hidden + n_layers * cfg.adapt_hidden)
    if spec.method == "lora":
        r = opts.get("r", baselines.LoRAConfig().r)
        return n_layers * 7 * r * 2 * d  # q, k, v, o, gate, up, down (peft's default targets here)
    if spec.method in ("adapter", "mam"):
        return n_layers * 2 * 2 * d * opts.get("hidden", 128)
    if spec.method == "das":
        return 2 * d * (spec.k * opts.get("layer_hidden", 256) + n_layers * (opts.get("kept_hidden") or 0))
    if spec.method == "full":
        return param_count(config)
    return 0


def memory_estimate(spec: ExperimentSpec):
    """eas.measure.memory.training_memory for `spec`, from config files only (nothing is loaded): printed by the
    chapters before their runs start, so a run that cannot fit says so before it loads 14 GB."""
    config, extra, visual, weight_bytes = model_shape(spec.model)
    seq_len = visual + PROMPT_TEXT_TOKENS + spec.max_new_tokens
    return training_memory(config, trainable=trainable_estimate(spec, config), micro_batch=spec.batch_size,
                           seq_len=seq_len, answer_tokens=spec.max_new_tokens, weight_bytes=weight_bytes,
                           extra_params=extra, checkpointing=spec.gradient_checkpointing)


def memory_table(specs: dict[str, ExperimentSpec], budget_gb: float = 80.0) -> pd.DataFrame:
    """One row per run label: the estimate's terms and total in GB, and whether it fits `budget_gb`."""
    rows = {}
    for label, spec in specs.items():
        est = memory_estimate(spec)
        rows[label] = {"weights GB": est.weights / 2**30, "trainable GB": est.trainable / 2**30,
                       "activations GB": est.activations / 2**30, "total GB": est.total_gb,
                       f"fits {budget_gb:.0f} GB": est.total_gb <= budget_gb}
    return pd.DataFrame(rows).T


# ----------------------------------------------------------------------------- the experiment

ROW_FILE = "row.json"


def _hidden_sizes(spec: ExperimentSpec, model: nn.Module) -> dict:
    state = baselines.attached(model)
    if spec.method == "eas":
        cfg = pia_config(spec)
        return {"skip_hidden": cfg.skip_hidden, "adapt_hidden": cfg.adapt_hidden}
    if state is None:
        return {}
    return {k: v for k, v in state.config.to_dict().items() if k in ("r", "hidden", "layer_hidden", "kept_hidden")}


def _pia_setting(spec: ExperimentSpec) -> str | None:
    if spec.method != "eas":
        return None
    cfg = pia_config(spec).to_dict()
    switches = ("info_exchange", "router", "frozen_bias", "reparam")
    for name, row in TABLE6_ROWS.items():
        if all(cfg[s] == row[s] for s in switches):
            return name
    return "custom"


def _stored_row(run_dir: Path, study: str) -> dict | None:
    path = run_dir / ROW_FILE
    if not path.exists():
        return None
    row = json.loads(path.read_text())
    if study not in row["studies"]:  # the same experiment serves several tables: label it, don't redo it
        row["studies"] = row["studies"] + [study]
        io.write_json(path, row)
    return row


def run_experiment(spec: ExperimentSpec, *, model_factory: Callable[[], nn.Module] | None = None,
                   progress: bool = True, on_step: Callable | None = None) -> dict:
    """Run `spec` once (resuming an interrupted run) and return its results row; a finished spec returns
    its stored row without building anything. `model_factory()` replaces models.load_model (tests);
    `on_step(step, model, loss)` is passed to the fine-tuning's eas.models.train.train."""
    run_dir = spec.run_dir()
    row = _stored_row(run_dir, spec.study)
    if row is not None:
        return row
    # Under `accelerate launch` every process trains its share of each batch; one process (the main one) writes,
    # evaluates and times, and the others wait for its row.
    process = PartialState()
    if process.is_main_process:
        io.write_json(run_dir / "spec.json", spec.to_dict())

    data = load_data(spec)
    model = build_model(spec, model_factory, progress)
    n_layers = _n_layers(model)
    check_k_for(spec, n_layers)

    t0 = time.perf_counter()
    skips, selection, supernet = select_skips(model, spec, data, run_dir, progress)
    # A bandit search's own clock sums its resumed pieces (and includes its comparisons).
    search_wall = selection.get("search_train_wall_s", time.perf_counter() - t0)
    if process.is_main_process:
        io.write_json(run_dir / "selection.json", selection)

    attach_method(model, spec, skips)
    if supernet is not None and spec.warm_start:
        copy_supernet_weights(supernet, model)
    counts = baselines.count_parameters(model)

    result, letters = None, None
    monitored = letter_sets(spec, data)
    monitor = letter_monitor(spec, monitored) if monitored else None
    if spec.method != "skip-only":  # skip-only has nothing to train
        result = trainlib.train(model, data["train"], train_config(spec, spec.steps, spec.letter_every if monitor
                                                                   else 0),
                                run_dir=run_dir / "train", on_step=on_step, eval_fn=monitor, progress=progress)
    if not process.is_main_process:
        process.wait_for_everyone()  # until the main process has written the row
        return _stored_row(run_dir, spec.study)
    if monitor is not None:  # every `letter_every` steps, and at the end when the step count is off the cadence
        done = {e["step"] + 1 for e in result.evals} if result else set()
        evals = [{"step": e["step"] + 1, **{k: v for k, v in e.items() if k != "step"}}
                 for e in (result.evals if result else [])]
        final_step = result.steps if result else 0
        if final_step not in done:
            evals.append({"step": final_step, **monitor(model)})
        letters = letters_frame(evals)
        io.save_frame(run_dir / LETTERS_FILE, letters)

    per_example, metrics, eval_wall = evaluate_model(model, spec, data["test"], progress)
    io.save_frame(run_dir / "generations.csv", per_example)

    row = {
        "studies": [spec.study],
        "task": spec.task,
        "train_fraction": spec.train_fraction if spec.task == "classification" else None,
        "method": spec.method,
        "kind": spec.kind,
        "k": spec.k,
        "selector": spec.selector,
        "skipped": json.dumps(skips.to_dict()),
        "n_layers": n_layers,
        "hidden": json.dumps(_hidden_sizes(spec, model)),
        "pia_setting": _pia_setting(spec),
        "reparam": after_prefill_hook(model, spec) is not None,
        "updated_params_pct": counts["updated_percent"],
        "trainable_params": counts["trainable"],
        **{col: metrics.get(col, math.nan) for col in METRIC_COLUMNS[spec.task]},
        "chance": metrics["chance"],
        "answer_format": spec.answer_format if spec.task == "scienceqa" else None,
        # the answer letter after fine-tuning, teacher-forced on val items (NaN where not monitored)
        "val_letter_acc": float(letters["val_letter_acc"].iloc[-1]) if letters is not None else math.nan,
        "val_letter_loss": float(letters["val_letter_loss"].iloc[-1]) if letters is not None else math.nan,
        "n_train": len(data["train"]),
        "n_eval": len(data["test"]),
        "model": spec.model,
        "seed": spec.seed,
        "train_steps": result.steps if result else 0,
        # the mean of the last 10 steps: one step's loss is one batch's, too noisy to compare runs by
        "final_train_loss": float(sum(result.losses[-10:]) / len(result.losses[-10:])) if result else None,
        "search_comparisons": selection.get("comparisons"),
        "search_wall_s": search_wall,
        "train_wall_s": result.wall_time if result else 0.0,
        "eval_wall_s": eval_wall,
        # wall time of the whole greedy evaluation divided by its examples: a progress figure, not a
        # benchmark (batched, variable output lengths, shared machine); eas.measure.cost does the timing
        "eval_wall_s_per_sample": eval_wall / max(1, len(data["test"])),
        "key": spec.key(),
        "spec": spec.to_json(),
    }
    io.write_json(run_dir / ROW_FILE, row)  # last: its presence marks the run finished
    process.wait_for_everyone()
    return row


def run_all(specs, **kw) -> pd.DataFrame:
    """Run (or fetch) each spec in turn; one row each."""
    return pd.DataFrame([run_experiment(s, **kw) for s in specs])


def results_table(study: str | None = None) -> pd.DataFrame:
    """Every finished row (of `study`, if given), sorted by task, method, kind, k; no training happens."""
    rows = []
    for path in sorted(io.results_dir("runs").glob(f"*/{ROW_FILE}")):
        row = json.loads(path.read_text())
        if study is None or study in row["studies"]:
            rows.append({**row, "studies": ",".join(row["studies"])})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["task", "method", "kind", "k", "seed"], na_position="first",
                             key=lambda c: c.astype(str)).reset_index(drop=True)


# ----------------------------------------------------------------------------- reading runs back (notebooks)

# The one accuracy column per task that the paper's ablation tables report.
HEADLINE = {"scienceqa": "Avg", "vqa": "Avg", "classification": "Acc"}


def accuracy(row) -> float:
    """The headline accuracy of a results row (a dict or a DataFrame row)."""
    return float(row[HEADLINE[row["task"]]])


def read_selection(spec: ExperimentSpec) -> dict:
    """selection.json of a finished (or at least selected) run: chosen candidates and the selector's scores."""
    path = spec.run_dir() / "selection.json"
    if not path.exists():
        raise ExperimentError(f"no selection stored for {spec.key()}: run the experiment first.")
    return json.loads(path.read_text())


def bandit_trajectory(spec: ExperimentSpec) -> pd.DataFrame:
    """The bandit search of `spec` as a long table, from its bandit.jsonl: one row per (comparisons done,
    candidate) with the preference s after that many comparisons (0: the all-zero start), the candidate's
    module ("mha" / "ffn" / "layer") and layer, and the comparison's mean reward."""

    if spec.selector != "bandit":
        raise ExperimentError(f"spec uses selector {spec.selector!r}: only 'bandit' runs have a search log.")
    path = spec.run_dir() / "search" / LOG_NAME
    lines = _load_log(path)
    records = [r for r in lines if "comparison" in r]
    if not records:
        raise ExperimentError(f"no bandit comparisons logged in {path}: run the experiment first.")
    n_layers = lines[0]["header"]["n_layers"] if "header" in lines[0] else None

    def module(c: int) -> tuple[str, int]:
        if spec.kind == "mha_or_ffn":
            return ("mha", c) if c < n_layers else ("ffn", c - n_layers)
        return spec.kind, c

    points = [(0, None, records[0]["s_before"], math.nan)]
    points += [(r["comparison"] + 1, r["step"], r["s_after"], r["mean_reward"]) for r in records]
    return pd.DataFrame([{"comparisons": done, "step": step, "candidate": c, "module": module(c)[0],
                          "layer": module(c)[1], "preference": s, "mean_reward": reward}
                         for done, step, prefs, reward in points for c, s in enumerate(prefs)])


def gap_se(acc_a: float, acc_b: float, n: int) -> float:
    """Standard error (in points) of the difference of two accuracies (in %) each measured on n examples,
    treating them as independent binomials: the yardstick for "within noise" in the notebooks' verdicts."""
    pa, pb = acc_a / 100, acc_b / 100
    return 100 * math.sqrt(max(pa * (1 - pa), 0.0) / n + max(pb * (1 - pb), 0.0) / n)


# ----------------------------------------------------------------------------- paired comparisons of finished runs

GENERATIONS_FILE = "generations.csv"


def item_correctness(spec: ExperimentSpec) -> pd.DataFrame:
    """A finished run's per-item correctness, as stored in its generations.csv: columns uid and correct (test-split
    order). Read as it is, so that `eas.study.stats.pair_by_item` sees an empty or malformed cell and says so."""
    path = spec.run_dir() / GENERATIONS_FILE
    if not (spec.run_dir() / ROW_FILE).exists() or not path.exists():
        raise ExperimentError(f"run {spec.key()} ({spec.method}, k={spec.k}, seed {spec.seed}) is not finished: "
                              "run it first.")
    return pd.read_csv(path, usecols=["uid", "correct"], dtype={"uid": str})


def chance_check(spec: ExperimentSpec) -> dict:
    """A finished run against uniform guessing on its own test items: accuracy and chance (points), and z, how
    many standard deviations the number correct lies above chance (eas.data.evaluate.chance_z; above 2: not luck)."""

    correct = stats.pair_by_item(item_correctness(spec), item_correctness(spec)).a
    examples = load_data(spec)["test"]
    z = chance_z(spec.task, examples, correct)
    return {"accuracy": 100.0 * float(correct.mean()), "chance": chance_accuracy(spec.task, examples), "z": z,
            "n": int(len(correct)), "above_chance": bool(z > 2)}


# ----------------------------------------------------------------------------- choices made on the val split

VALIDATION_FILE = "validation.csv"


def validation_accuracy(spec: ExperimentSpec, n_val: int, *, model_factory: Callable[[], nn.Module] | None = None,
                        progress: bool = False) -> dict:
    """A finished run's accuracy on the first `n_val` items of the val split, generated and scored as its test items
    are: what a choice between runs (a learning rate, say) may look at, so that no test item informs it. Stored
    once in the run folder (validation.csv, one row per item, recomputed if its items are not these); the base
    model is built only when a result has to be computed."""

    if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 1:
        raise ExperimentError(f"n_val={n_val!r}: expected a positive number of val items.")
    path = spec.run_dir() / VALIDATION_FILE
    examples = val_split(spec, n_val)
    if len(examples) < n_val:
        raise ExperimentError(f"n_val={n_val} but the val split of {spec.task} has only {len(examples)} items: ask "
                              "for at most that many.")
    per_example = pd.read_csv(path, dtype={"uid": str}) if path.exists() else None
    if per_example is None or list(per_example["uid"]) != [e.uid for e in examples]:
        model, _ = trained_model(spec, build_model(spec, model_factory, progress=progress).eval())
        per_example, _, _ = evaluate_model(model, spec, examples, progress)
        io.save_frame(path, per_example)
    return {"val_accuracy": 100.0 * float(per_example["correct"].mean()), "n_val": n_val,
            "val_chance": chance_accuracy(spec.task, examples)}


def _data_of(spec: ExperimentSpec) -> tuple:
    """What fixes a run's val and test items: runs that differ here are not scored on the same items."""
    return spec.task, spec.data_seed, json.dumps(spec.sizes, sort_keys=True), spec.dataset


def choose_by_validation(candidates: dict, n_val: int, *,
                         model_factory: Callable[[], nn.Module] | None = None) -> tuple[object, pd.DataFrame]:
    """Among finished runs {label: spec} (one method at several settings), the one with the best val accuracy
    (`validation_accuracy`; a tie goes to the first listed) and a table of every candidate's val accuracy."""

    if not candidates:
        raise ExperimentError("choose_by_validation needs at least one finished run.")
    first = next(iter(candidates.values()))
    # one base model and one set of val items serve every candidate
    if other := [label for label, s in candidates.items()
                 if (s.model, _data_of(s)) != (first.model, _data_of(first))]:
        raise ExperimentError(f"candidates {other} use another model, task or data than the first: a choice on the "
                              "val split compares runs scored on the same val items.")

    @functools.cache
    def shared_base() -> nn.Module:  # built once, and only if some candidate's result is not stored yet
        return build_model(first, model_factory, progress=False).eval()

    table = pd.DataFrame([{"candidate": label, "lr": spec.lr,
                           **validation_accuracy(spec, n_val, model_factory=shared_base)}
                          for label, spec in candidates.items()]).set_index("candidate")
    best = table.val_accuracy.idxmax()  # the first of the maxima: ties keep the listed order
    table["chosen"] = table.index == best
    return best, table


def _aligned(specs_a: list, specs_b: list) -> tuple:
    """(seeds x items) correctness of A's and B's runs, paired by item id: duplicate ids, empty cells and items
    that some run lacks are errors naming them (eas.study.stats.pair_by_item)."""
    if not specs_a or not specs_b:
        raise ExperimentError("compare needs at least one finished run on each side.")
    tasks = {_data_of(s) for s in [*specs_a, *specs_b]}
    if len(tasks) != 1:
        raise ExperimentError(f"runs on different tasks or test splits cannot be paired: {sorted(tasks)}.")
    paired = stats.pair_by_item([item_correctness(s) for s in specs_a], [item_correctness(s) for s in specs_b])
    return paired.a, paired.b


def compare_seeds(specs_a: list, specs_b: list, *, claim: str = "better", margin: float = 0.0,
                  n_boot: int = 10_000, seed: int = 0, power: float = 0.8) -> dict:
    """A (one finished run per training seed) against B on the test items they share: one tidy row with the
    seed-mean difference (points), its 95% interval (a paired bootstrap with one seed each, else seeds then
    items), p, the smallest difference this budget detects at `power`, and the verdict on `claim`
    ("better": A better than B; "no_worse": A at most `margin` points worse). See eas.study.stats."""

    A, B = _aligned(list(specs_a), list(specs_b))
    cmp = stats.seeds_comparison(A, B, n_boot=n_boot, seed=seed, power=power)
    return {**cmp.to_row(claim=claim, margin=margin), "seeds_list_a": [s.seed for s in specs_a],
            "seeds_list_b": [s.seed for s in specs_b], "comparison": cmp}


def compare_runs(spec_a: ExperimentSpec, spec_b: ExperimentSpec, **kw) -> dict:
    """`compare_seeds` for one run each: exact McNemar p and the paired item bootstrap."""
    return compare_seeds([spec_a], [spec_b], **kw)


COMPARISON_COLUMNS = ["acc_a", "acc_b", "diff", "ci_low", "ci_high", "p", "mdd", "seeds_a", "seeds_b", "verdict"]


def comparison_table(rows: dict) -> pd.DataFrame:
    """label -> a `compare_runs` / `compare_seeds` row, as one tidy table (points; the verdict last)."""
    return pd.DataFrame([{c: r[c] for c in COMPARISON_COLUMNS} for r in rows.values()], index=list(rows))


# ----------------------------------------------------------------------------- timing finished runs

def weight_sharing_copy(base: nn.Module) -> nn.Module:
    """A copy of `base` with modules of its own but `base`'s parameter and buffer tensors: attaching a method to it
    leaves `base` as it was, and N timed runs hold one set of weights instead of N + 1 (at LLaVA-7B, 03's nine
    runs would otherwise hold ~140 GB). Anything that writes into a weight must first replace it with a copy."""
    memo = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
    return copy.deepcopy(base, memo)


def trained_model(spec: ExperimentSpec, base: nn.Module) -> tuple[nn.Module, Callable | None]:
    """A finished run's final model, built on a copy of `base`: its stored skip set, its method and its
    trained weights (LoRA merged and unloaded, EAS's merge prepared), with the after-prefill hook it is
    evaluated with."""

    if not (spec.run_dir() / ROW_FILE).exists():
        raise ExperimentError(f"run {spec.key()} ({spec.method}, k={spec.k}) is not finished: run it first.")
    skips = SkipSet(**read_selection(spec)["skip_set"]) if spec.method in SKIPPING else SkipSet()
    # Full fine-tuning trains every weight: its own copy. Every other method adds modules beside the frozen
    # weights, so its copy shares them with `base` (and with every other run's copy).
    model = copy.deepcopy(base) if spec.method == "full" else weight_sharing_copy(base)
    build_model(spec, lambda: model, progress=False)  # frozen, no skips, wrapped: the layout training saw
    attach_method(model, spec, skips)
    if spec.method != "skip-only":
        trainlib.load_tensors_into(trainlib.trainable_parameters(model),
                                    spec.run_dir() / "train" / "final.safetensors")
    if spec.method == "lora":
        for layer in baselines.lora_layers(model):  # the merge writes into these weights: not the shared ones
            linear = layer.get_base_layer()
            linear.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        baselines.merge_lora(model, unload=True)  # deployed form: plain Linear layers, no peft wrappers
    hook = after_prefill_hook(model, spec)
    if hook is not None:
        prepare_reparam(model)  # once per task, after training: not part of any timed run
    return model.eval(), hook


def time_runs(specs: dict[str, ExperimentSpec], *, batch_size: int = 1, new_tokens: int = 16, repeats: int = 3,
              model_factory: Callable[[], nn.Module] | None = None, progress: bool = False) -> pd.DataFrame:
    """Time finished runs' final models side by side with the base model, interleaved in one
    `cost.compare` run on the first `batch_size` test prompts, `new_tokens` generated (EOS ignored).

    Evaluation wall time (the `eval_wall_s` column) mixes prompt lengths, answer lengths and batch
    padding; this is the like-for-like time of each trained configuration. One row per label (and
    "base"): medians and IQRs of prefill, merge and decode, time per sample, ratios to the base model, and
    the FLOPs per sample of the same generation (counted by torch.utils.flop_counter) with their change."""

    if not specs:
        raise ExperimentError("time_runs needs at least one finished run.")
    first = next(iter(specs.values()))
    mixed = [label for label, s in specs.items() if (s.model, s.task) != (first.model, first.task)]
    if mixed:
        raise ExperimentError(f"runs {mixed} use another model or task than {first.model!r} / {first.task!r}: "
                              "time them separately.")
    if "base" in specs:
        raise ExperimentError("the label 'base' is reserved for the unmodified model.")
    base = build_model(first, model_factory, progress=progress).eval()
    examples = load_data(first)["test"][:batch_size]
    if hasattr(base, "cache_features"):
        base.cache_features(examples, progress=progress)
    batch = base.collate(examples)
    variants = {"base": lambda: (base, None)}
    for label, spec in specs.items():
        model, hook = trained_model(spec, base)
        if hook is not None:  # timed as deployed: the adaptation PIAs folded into q/k/v once (no merged copies)
            reparam.prepare_deployment(model)
        variants[label] = lambda m=model, h=hook: (m, h)
    with torch.no_grad():
        df = cost.compare(variants, batch, new_tokens, repeats=repeats, baseline="base")
        # FLOPs of the same generation, counted op by op (outside the clocks)
        gflops = {}
        for label, make in variants.items():
            model, hook = make()
            gflops[label] = cost.counted_flops(model, batch, new_tokens, hook).gflops_per_sample
    df = df.reset_index().rename(columns={"variant": "label"})
    df["time_vs_base"] = df.total_ms / df.total_ms[df.label == "base"].iloc[0]
    df["gflops_per_sample"] = df.label.map(gflops)
    df["delta_gflops"] = df.gflops_per_sample - gflops["base"]
    return df


def timing_table(study: str, specs: dict[str, ExperimentSpec], *, batch_size: int = 1, new_tokens: int = 16,
                 repeats: int = 3) -> pd.DataFrame:
    """`time_runs`, stored under data/results/{study}/ and keyed by the runs and the timing settings, so a
    re-run of a notebook reads the table back instead of timing again."""

    params = {"runs": {label: s.key() for label, s in specs.items()}, "batch_size": batch_size,
              "new_tokens": new_tokens, "repeats": repeats, "threads": torch.get_num_threads(),
              "cuda": torch.cuda.is_available()}
    return cached_frame(study, "decode_timing", params,
                        lambda: time_runs(specs, batch_size=batch_size, new_tokens=new_tokens, repeats=repeats))


def evaluate_static_router(spec: ExperimentSpec, *, calibration: int = 64,
                           model_factory: Callable[[], nn.Module] | None = None, progress: bool = False) -> dict:
    """Accuracy of a finished EAS run with its routers fixed per task (`reparam.calibrate_static_router`,
    beyond the paper): the router weights averaged over the first `calibration` training prompts, so one
    merged weight serves every prompt. No retraining; the run's own row is left as it is. Stored in the
    run's directory (static_router-{calibration}.json, its per-example answers beside it in
    static_router-{calibration}.csv for paired comparisons), so asking again reads it back."""

    if spec.method != "eas" or not pia_config(spec).router:
        raise ExperimentError(f"a static router needs an EAS run whose PIAs have a router; run {spec.key()} is "
                              f"method {spec.method!r}.")
    _positive_int("calibration", calibration)
    path = spec.run_dir() / f"static_router-{calibration}.json"
    if path.exists() and path.with_suffix(".csv").exists():
        return json.loads(path.read_text())
    base = build_model(spec, model_factory, progress=progress).eval()
    data = load_data(spec)
    prompts = data["train"][:calibration]
    if hasattr(base, "cache_features"):
        base.cache_features(prompts, progress=progress)  # the test set's are loaded by evaluate_model
    model, hook = trained_model(spec, base)
    step = spec.eval_batch_size
    batches = [model.collate(prompts[i:i + step]) for i in range(0, len(prompts), step)]
    weights = torch.stack(list(calibrate_static_router(model, batches).values())).float()  # (layers, 2)
    if hook is not None:
        prepare_reparam(model)  # the merge plan of the calibrated routers: one shared weight per layer
    per_example, metrics, _ = evaluate_model(model, spec, data["test"], progress)
    io.save_frame(path.with_suffix(".csv"), per_example)
    metrics.pop("chance")
    # how far the calibrated mix of the two paths is from even: near 0, a fixed router changes little
    result = {"calibration": len(prompts), "merged": hook is not None,
              "router_first_path_min": float(weights[:, 0].min()), "router_first_path_max": float(weights[:, 0].max()),
              **metrics}
    io.write_json(path, result)
    return result


def static_router_correctness(spec: ExperimentSpec, calibration: int = 64) -> pd.DataFrame:
    """Per-item correctness (uid, correct) of `evaluate_static_router(spec, calibration=...)`, to pair with the
    run's own per-prompt routing (`item_correctness(spec)`) through `eas.study.stats.pair_by_item`."""
    path = spec.run_dir() / f"static_router-{calibration}.csv"
    if not path.exists():
        raise ExperimentError(f"no static-router evaluation stored for {spec.key()}: call evaluate_static_router.")
    return pd.read_csv(path, usecols=["uid", "correct"], dtype={"uid": str})
