"""Notebook parameters: one dataclass per notebook, their values per profile in YAML files.

`notebooks/profiles/{smoke,cpu,cpu-full,gpu}.yaml` hold the values (not code); a profile file may start
with `extends: <profile>`, taking that profile's values for every notebook and overriding only what it sets
(per notebook, key by key: `cpu-full` is `cpu` with more seeds and test questions). A notebook's tagged
`parameters` cell holds the cpu defaults; papermill injects a profile's values after it; the
notebook then calls `notebook_params(name, globals())`, which validates every value against the
dataclass below and fails with a message naming the parameter, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from eas import versions_line
from eas.core.io import REPO_ROOT
from eas.data import TASKS
from eas.method.pia.config import MERGE_STRATEGIES, TABLE6_ROWS
from eas.models.zoo import check_model_name
from eas.study import runs
from eas.study.experiments import ExperimentSpec

PROFILES = ("smoke", "cpu", "cpu-full", "gpu", "paper")
SOURCE_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = SOURCE_DIR / "profiles"


def notebook_names() -> list[str]:
    """The chapters: notebooks/NN_name.ipynb."""
    return sorted(p.stem for p in SOURCE_DIR.glob("[0-9][0-9]_*.ipynb"))


class ParameterError(ValueError):
    pass


@dataclass(frozen=True)
class BaseModelParams:
    """01_base_model: zero-shot accuracy of the base model and the single-module removal probe."""

    profile: str = "cpu"
    model: str = "mini-llava"
    visual_grid: int = 2
    align_captions: int = 4000
    align_steps: int = 250
    seed: int = 0
    dataset_sizes: dict = field(default_factory=lambda: {
        "scienceqa": {"train": 2000, "val": 300, "test": 500},
        "vqa": {"train": 2000, "val": 300, "test": 500},
        "classification": {"per_class": 100},
    })
    n_eval: int = 100
    eval_batch_size: int = 8
    max_new_tokens: dict = field(default_factory=lambda: {"scienceqa": 64, "vqa": 12, "classification": 12})
    probe_task: str = "scienceqa"
    probe_examples: int = 16
    probe_batch_size: int = 8
    scienceqa_root: str = ""  # the official ScienceQA release's folder ("": the study's analog)

    def __post_init__(self):
        check_scienceqa_root(self.scienceqa_root)

    def release_key(self, task: str = "scienceqa") -> dict:
        """What a cached result's key adds when `task` is read from a release folder rather than the analog."""
        return {"scienceqa_root": self.scienceqa_root} if task == "scienceqa" and self.scienceqa_root else {}

    def task_root(self, task: str) -> Path:
        """The folder `task`'s examples are read from (the analog, built once, or the official release)."""
        release = self.scienceqa_root if task == "scienceqa" and self.scienceqa_root else None
        return runs.prepare_task(task, self.dataset_sizes[task], self.seed, release=release)


def check_scienceqa_root(root: str) -> None:
    """An official ScienceQA folder's problems.json and pid_splits.json, read before anything runs."""
    if not root:
        return
    try:
        runs.check_release("scienceqa", root)
    except ValueError as err:
        raise ParameterError(f"parameter scienceqa_root={root!r}: {err}") from None


@dataclass(frozen=True)
class BenchParams:
    """`make bench` (eas.study.bench): the core side-by-side timing of base / skip-only / EAS."""

    profile: str = "cpu"
    model: str = "mini-llava"
    ks: list = field(default_factory=lambda: [4, 8, 12])
    batches: list = field(default_factory=lambda: [1, 8])
    new_tokens: int = 64
    repeats: int = 5
    threads: int = 0  # 0: leave torch's default
    skip_hidden: int = 32
    adapt_hidden: int = 8
    merge_strategy: str = "low_rank"  # per sample: ties per_example at batch 1, far faster at 8 (chapter 5)
    scale_layers: int = 2   # full-width LLaVA-1.5-7B layers built for the merge-cost-at-scale check (0: skip it)
    seed: int = 0
    typical_tokens: int = 64  # output length the strategies suite reports time per sample at
    # `--suite strategies`: scale -> batches (and optional k, new_tokens, repeats, strategies, prompt lengths).
    # At 1B, per_example holds B x 12 x d x 2 d_ff fp32 weights (1.4 GB an example): batches stay small.
    # An entry's `shape` (default: its name) lets one shape appear twice: the 1B shape at batch 8 times only
    # the default low_rank merge, as base + skip-only + EAS is already three 4.4 GB copies.
    strategy_scales: dict = field(default_factory=lambda: {
        "mini-llava": {"batches": [1, 8]},
        "llama-1b": {"batches": [1, 2], "new_tokens": 8, "repeats": 3, "strategies": ["per_example", "low_rank"]},
        "llama-1b-batch8": {"shape": "llama-1b", "batches": [8], "new_tokens": 8, "repeats": 5,
                            "strategies": ["low_rank"]},
    })

    def __post_init__(self):

        if not isinstance(self.strategy_scales, dict) or not self.strategy_scales:
            raise ParameterError(f"parameter strategy_scales={self.strategy_scales!r}; expected a non-empty mapping "
                                 "of scale name to its settings.")
        for name, s in self.strategy_scales.items():
            bad = sorted(set(s or {}) - set(STRATEGY_SCALE_KEYS)) if isinstance(s, dict) else None
            if bad is None or bad or not s.get("batches"):
                raise ParameterError(f"strategy_scales[{name!r}]={s!r}; expected a dict with `batches` and keys "
                                     f"among {list(STRATEGY_SCALE_KEYS)}.")
            unknown = [v for v in s.get("strategies", []) if v not in MERGE_STRATEGIES]
            if unknown:
                raise ParameterError(f"strategy_scales[{name!r}] names unknown strategies {unknown}; expected "
                                     f"among {list(MERGE_STRATEGIES)}.")


STRATEGY_SCALE_KEYS = ("shape", "batches", "k", "new_tokens", "repeats", "strategies", "visual_tokens",
                       "text_tokens")


@dataclass(frozen=True)
class ReparamParams:
    """05_reparameterisation: merged = unmerged, the merge's cost, decode time and KV cache vs k."""

    profile: str = "cpu"
    model: str = "mini-llava"
    seed: int = 0
    ks: list = field(default_factory=lambda: [4, 8, 12])
    check_k: int = 12
    check_batch: int = 4
    check_tokens: int = 16
    merge_batches: list = field(default_factory=lambda: [1, 8])
    timing_batch: int = 1
    new_tokens: int = 32
    repeats: int = 3
    skip_hidden: int = 32
    adapt_hidden: int = 8
    scale_layers: int = 2


STRATEGIES_AT = ("largest_k", "every_k")  # LatencyParams.strategies_at


@dataclass(frozen=True)
class LatencyParams:
    """06_latency and `make bench --suite latency` (eas.study.latency): every method of Table 1 timed side by
    side. `scales` maps a scale name ("tiny", "mini-llava", or an eas.measure.shapes shape such as "llama-1b",
    "llava-1.5-7b") to its own overrides of the settings below (keys: eas.study.latency.SCALE_KEYS)."""

    profile: str = "cpu"
    scales: dict = field(default_factory=lambda: {
        "mini-llava": {},
        "llama-1b": {"batches": [1], "ks": [12], "das_ks": [4], "visual_tokens": 64, "text_tokens": 32,
                     "new_tokens": 8, "repeats": 2},
    })
    methods: list = field(default_factory=lambda: ["base", "lora", "adapter", "mam", "das", "skip-only",
                                                   "eas-unmerged", "eas-merged"])
    ks: list = field(default_factory=lambda: [4, 8, 12])
    das_ks: list = field(default_factory=lambda: [1, 2, 4])
    batches: list = field(default_factory=lambda: [1, 4])
    new_tokens: int = 16      # the fixed, timed output length (EOS ignored)
    typical_tokens: int = 64  # the task's typical output length: time per sample is extrapolated to it
    repeats: int = 3
    warmup: int = 1
    module_repeats: int = 3   # repeats of eas.measure.cost.module_times (the ideal speed-up's inputs)
    threads: int = 0          # 0: leave torch's default
    skip_hidden: int = 32
    adapt_hidden: int = 8
    merge_strategy: str = "low_rank"  # EAS merged's primary row (Table 1, Fig. 4)
    # EAS merged is also timed with each of these (eas.method.reparam); per_example is the paper's reference
    merge_strategies: list = field(default_factory=lambda: ["per_example", "low_rank", "static_router"])
    # where those others are timed: "largest_k" (each scale's largest k, where `latency.best_strategy`
    # compares them; the other ks get the primary row only) or "every_k"
    strategies_at: str = "largest_k"
    adapter_hidden: int = 128  # Adapter, MAM's parallel adapter, DAS's kept-block adapters (the paper's LLaVA sizes)
    das_layer_hidden: int = 256
    lora_r: int = 16
    mam_prefix: int = 10
    seed: int = 0

    def __post_init__(self):
        for name in ("ks", "das_ks", "batches"):
            v = getattr(self, name)
            if not v or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in v):
                raise ParameterError(f"parameter {name}={v!r}; expected a non-empty list of positive integers.")
        if self.new_tokens < 2:
            raise ParameterError(f"parameter new_tokens={self.new_tokens!r} must be >= 2 (one decode step at least).")
        if not self.scales or any(not isinstance(v, (dict, type(None))) for v in self.scales.values()):
            raise ParameterError(f"parameter scales={self.scales!r}; expected a non-empty mapping of scale name "
                                 "to a dict of overrides.")

        for name, values in (("merge_strategy", [self.merge_strategy]), ("merge_strategies", self.merge_strategies)):
            bad = [v for v in values if v not in MERGE_STRATEGIES]
            if bad or not isinstance(self.merge_strategies, list):
                raise ParameterError(f"parameter {name}={getattr(self, name)!r}; expected strategies among "
                                     f"{list(MERGE_STRATEGIES)}.")
        if self.strategies_at not in STRATEGIES_AT:
            raise ParameterError(f"parameter strategies_at={self.strategies_at!r}; expected one of "
                                 f"{', '.join(STRATEGIES_AT)}.")


NOTEBOOK_PARAMS = {"01_base_model": BaseModelParams, "05_reparameterisation": ReparamParams, "bench": BenchParams,
                   "06_latency": LatencyParams, "latency": LatencyParams}

_POSITIVE = {"align_captions", "align_steps", "n_eval", "eval_batch_size", "new_tokens", "repeats",
             "probe_examples", "probe_batch_size", "visual_grid", "check_k", "check_batch", "check_tokens",
             "timing_batch", "skip_hidden", "adapt_hidden", "typical_tokens", "module_repeats", "adapter_hidden",
             "das_layer_hidden", "lora_r"}


def _check(name: str, value, expected) -> None:
    origin = typing.get_origin(expected) or expected
    ok = isinstance(value, origin) and not (origin is int and isinstance(value, bool))
    if not ok:
        raise ParameterError(f"parameter {name}={value!r} has type {type(value).__name__}; expected {expected}.")
    if name in _POSITIVE and value <= 0:
        raise ParameterError(f"parameter {name}={value!r} must be a positive integer.")
    if name == "profile" and value not in PROFILES:
        raise ParameterError(f"parameter profile={value!r} is unknown; expected one of {', '.join(PROFILES)}.")
    if name in ("dataset_sizes", "max_new_tokens"):

        for task, v in value.items():
            if task not in TASKS:
                raise ParameterError(f"parameter {name} has an entry for unknown task {task!r}; "
                                     f"expected {', '.join(TASKS)}.")
            counts = v.values() if name == "dataset_sizes" and isinstance(v, dict) else [v]
            if name == "dataset_sizes" and not isinstance(v, dict) or any(
                not isinstance(c, int) or isinstance(c, bool) or c <= 0 for c in counts
            ):
                what = "a dict of positive split sizes" if name == "dataset_sizes" else "a positive integer"
                raise ParameterError(f"parameter {name}[{task!r}]={v!r}; expected {what}.")


def resolve_params(notebook: str, namespace: dict) -> tuple[dict, dict]:
    """A notebook's parameter values and where each comes from: the dataclass default, overridden by the
    profile's section (`profile` from the namespace, default cpu), overridden by any parameter the namespace
    sets itself (a papermill `-p name value`, or a line added to the parameters cell)."""
    if notebook not in NOTEBOOK_PARAMS:
        raise ParameterError(f"no parameters are defined for notebook {notebook!r}; "
                             f"known: {', '.join(NOTEBOOK_PARAMS)}")
    cls = NOTEBOOK_PARAMS[notebook]
    hints = typing.get_type_hints(cls)
    profile = namespace.get("profile", cls.profile)
    _check("profile", profile, hints["profile"])
    values = {f.name: getattr(cls(), f.name) for f in fields(cls)}
    source = dict.fromkeys(values, "default")
    from_profile = profile_values(profile, notebook, provided={f.name for f in fields(cls) if f.name in namespace})
    for name, value in from_profile.items():
        if name != "profile" and value != values[name]:
            source[name] = f"{profile}.yaml"
        values[name] = value
    for f in fields(cls):
        if f.name in namespace and f.name != "profile" and namespace[f.name] != values[f.name]:
            values[f.name], source[f.name] = namespace[f.name], "set in the notebook"
    for name, value in values.items():
        _check(name, value, hints[name])
    return values, source


def notebook_params(notebook: str, namespace: dict):
    """A notebook's validated parameters (see `resolve_params`), e.g. `P = notebook_params("02_redundancy",
    globals())`; the values live in the dataclasses below and the profile files, not in the notebook."""
    values, _ = resolve_params(notebook, namespace)
    params = NOTEBOOK_PARAMS[notebook](**values)
    if hasattr(params, "probe_task"):

        if params.probe_task not in TASKS:
            raise ParameterError(f"parameter probe_task={params.probe_task!r}; expected one of {', '.join(TASKS)}.")
    if hasattr(params, "model"):

        try:
            check_model_name(params.model)
        except ValueError as err:
            raise ParameterError(f"parameter model: {err}") from None

    print(versions_line())  # every executed notebook records the stack it ran on
    return params


def parameter_table(notebook: str, namespace: dict) -> pd.DataFrame:
    """The parameters a notebook ran with, one row each: value and where it came from (for the rendered page,
    which shows this table instead of code)."""
    values, source = resolve_params(notebook, namespace)
    return pd.DataFrame({"value": [repr(v) for v in values.values()], "from": list(source.values())},
                        index=pd.Index(list(values), name="parameter"))


def profile_values(profile: str, notebook: str, directory: str | Path | None = None, provided=()) -> dict:
    """The values a profile sets for a notebook, checked against the notebook's parameters.
    `directory` holds the profile files (default: PROFILE_DIR, notebooks/profiles/). `provided`: parameters the
    caller sets itself (papermill's -p), whose profile values are then not expanded (`expand_env`)."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}.")
    directory = Path(directory) if directory is not None else PROFILE_DIR
    path = directory / f"{profile}.yaml"
    values = _profile_section(profile, notebook, directory)
    cls = NOTEBOOK_PARAMS.get(notebook)
    if cls is not None:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(
                f"{path} sets unknown parameters {unknown} for {notebook}; expected a subset of {sorted(known)}."
            )
    values = {name: value if name in provided else expand_env(value, f"{path} ({notebook}.{name})")
              for name, value in values.items()}
    values["profile"] = profile
    return values


ENV_VALUE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value, where: str):
    """A profile value with `${NAME}` or `${NAME:-default}` in it, the environment variable's value put in (the
    `paper` profile's checkpoint and dataset folders). An unset variable with no default is an error naming it."""
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(match):
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name]:
            return os.environ[name]
        if default is not None:
            return default
        raise ParameterError(f"{where} is {value!r}, but the environment variable {name} is not set: set it "
                             f"(e.g. `export {name}=/path/to/...`) or pass the parameter with papermill's -p.")

    return ENV_VALUE.sub(one, value)


EXTENDS = "extends"  # a top-level key of a profile file that is not a section: the profile it starts from
CHAPTERS = "chapters"  # another: the chapters (notebooks) the profile runs, in order (default: every chapter)


def profile_sections() -> tuple[str, ...]:
    """The section names a profile file may hold: the notebooks' (notebooks/NN_*.ipynb) and every name with
    parameters (NOTEBOOK_PARAMS: the chapters and the benchmark suites `bench`, `latency`)."""

    return tuple(sorted(set(NOTEBOOK_PARAMS) | set(notebook_names())))


def read_profile(path: Path) -> dict:
    """A profile file's top-level mapping, every key checked: `extends` or a known section (a mapping) each.
    A misspelt key would otherwise be ignored, leaving a chapter on its defaults."""
    import difflib

    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParameterError(f"{path} is not valid YAML: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ParameterError(f"{path} holds a {type(data).__name__}; expected a mapping of `{EXTENDS}` and "
                             f"notebook sections.")
    valid = (EXTENDS, CHAPTERS, *profile_sections())
    chapters = data.get(CHAPTERS)
    if chapters is not None and (not isinstance(chapters, list) or not chapters
                                 or any(c not in notebook_names() for c in chapters)):
        raise ParameterError(f"{path}: `{CHAPTERS}` is {chapters!r}; expected a non-empty list of chapters among "
                             f"{', '.join(notebook_names())}.")
    for key, section in data.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParameterError(f"{path} has an unknown top-level key {key!r}{hint}; expected `{EXTENDS}` or "
                                 f"a section among {', '.join(profile_sections())}.")
        if key not in (EXTENDS, CHAPTERS) and section is not None and not isinstance(section, dict):
            raise ParameterError(f"{path}: section {key!r} holds {section!r}; expected a mapping of parameter "
                                 "names to values.")
    return data


def _profile_section(profile: str, notebook: str, directory: Path = PROFILE_DIR, seen: tuple = ()) -> dict:
    """A profile's values for one notebook, following `extends:` (the extended profile's values first)."""
    if profile in seen:
        raise ParameterError(f"profiles extend each other in a cycle: {' -> '.join([*seen, profile])}.")
    if profile not in PROFILES:
        raise ParameterError(f"profile {seen[-1]!r} extends unknown profile {profile!r}.")
    data = read_profile(directory / f"{profile}.yaml")
    data.pop(CHAPTERS, None)
    parent = data.pop(EXTENDS, None)
    values = _profile_section(parent, notebook, directory, (*seen, profile)) if parent else {}
    return {**values, **dict(data.get(notebook) or {})}


def profile_chapters(profile: str, directory: str | Path | None = None) -> list[str]:
    """The chapters a profile runs, in order: its file's `chapters` (or the extended profile's), else all."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}.")
    directory = Path(directory) if directory is not None else PROFILE_DIR
    data = read_profile(directory / f"{profile}.yaml")
    if CHAPTERS in data:
        return list(data[CHAPTERS])
    return profile_chapters(data[EXTENDS], directory) if data.get(EXTENDS) else notebook_names()


def as_dict(params) -> dict:
    return dataclasses.asdict(params)


# ----------------------------------------------------------------------------- the fine-tuning chapters (02-04)

@dataclass(frozen=True)
class FineTuneParams:
    """Shared by the chapters that fine-tune (02-04): every run is an eas.study.experiments.ExperimentSpec built by
    `spec()` from these values, so identical settings give identical (cached) runs across chapters."""

    profile: str = "cpu"
    model: str = "mini-llava"
    seed: int = 0
    task: str = "vqa"
    # ScienceQA's targets: "QCM-ALE" (answer, then the rationale: the paper's; gpu and paper) or "QCM-A" (the answer
    # only: cpu, whose budget is a fraction of an epoch; README "ScienceQA under cpu")
    answer_format: str = "QCM-A"
    scienceqa_root: str = ""  # the official ScienceQA release's folder ("": the study's analog)
    sizes: dict = field(default_factory=lambda: {"train": 2000, "val": 300, "test": 500})
    selector: str = "bandit"
    steps: int = 80              # fine-tuning steps of every run
    warmup_steps: int = 8        # linear learning-rate warm-up, then cosine decay
    batch_size: int = 8
    grad_accum: int = 1          # micro-batches of batch_size per optimizer step (a 7B model's activations)
    gradient_checkpointing: bool = False  # recompute activations in backward: same gradients, a fraction of the memory
    # batches of examples of similar length (eas.models.train.batch_indices): ScienceQA's prompts vary in length,
    # and a random batch of 8 pads to ~1.7x its real tokens; VQA's are all about the same length
    group_by_length: bool = False
    lr: float = 0.001
    skip_hidden: int = 32
    adapt_hidden: int = 8
    bandit_warmup_steps: int = 40  # supernet steps with random skip sets
    bandit_comparisons: int = 16
    bandit_m: int = 3
    bandit_T: int = 4
    bandit_lr: float = 20.0
    heldout: int = 16
    n_eval: int = 200
    eval_batch_size: int = 8
    answer_tokens: int = 12      # max new tokens while evaluating
    # training seeds of the chapter's headline comparison (`headline_seeds()`; `seed` is always among them);
    # every other run of the chapter uses `seed` only
    seeds: list = field(default_factory=lambda: [0])
    # where the paper claims parity ("A keeps B's accuracy"), the largest loss in points still read as parity
    parity_margin: float = 2.0
    timing_tokens: int = 16      # decode timing of the trained models (eas.study.experiments.time_runs), batch 1
    timing_repeats: int = 3

    def __post_init__(self):
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or not \
                0 <= self.warmup_steps < self.steps:
            raise ParameterError(f"parameter warmup_steps={self.warmup_steps!r} must be an integer in "
                                 f"0..steps-1 (steps={self.steps}).")
        if isinstance(self.timing_tokens, bool) or not isinstance(self.timing_tokens, int) or self.timing_tokens < 2:
            raise ParameterError(f"parameter timing_tokens={self.timing_tokens!r} must be an integer >= 2 "
                                 "(one prefill token and at least one timed decode step).")
        for name in ("timing_repeats", "steps", "batch_size", "grad_accum", "skip_hidden", "adapt_hidden",
                     "bandit_comparisons", "bandit_m", "bandit_T", "heldout", "n_eval", "eval_batch_size",
                     "answer_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ParameterError(f"parameter {name}={value!r} must be a positive integer.")
        if not isinstance(self.seeds, list) or not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.seeds):
            raise ParameterError(f"parameter seeds={self.seeds!r}; expected a non-empty list of distinct "
                                 "integers >= 0.")
        if isinstance(self.parity_margin, bool) or not isinstance(self.parity_margin, (int, float)) or \
                not 0 <= self.parity_margin < 100:
            raise ParameterError(f"parameter parity_margin={self.parity_margin!r} must be a number of points "
                                 "in [0, 100).")
        if not isinstance(self.sizes, dict) or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                                                   for v in self.sizes.values()):
            raise ParameterError(f"parameter sizes={self.sizes!r}; expected a dict of positive split sizes.")
        check_scienceqa_root(self.scienceqa_root)
        try:
            self.spec()  # every other combination error, named by eas.study.experiments
        except ValueError as err:
            raise ParameterError(f"parameters give an invalid experiment: {err}") from None

    def headline_seeds(self) -> list[int]:
        """The training seeds of the headline comparison: `seed` first, then the other `seeds`."""
        return [self.seed] + [s for s in self.seeds if s != self.seed]

    def spec(self, **changes):
        """The ExperimentSpec of one run of this chapter; `changes` are ExperimentSpec fields (a `seed` change
        is a training seed: the data, and so the test items, stay those of `self.seed`)."""

        pia = {"skip_hidden": self.skip_hidden, "adapt_hidden": self.adapt_hidden, **changes.pop("pia", {})}
        if changes.get("method", "eas") != "eas":
            pia = {}  # the PIA sizes belong to EAS; a baseline's sizes come in `method_options`
        values = dict(task=self.task, answer_format=self.answer_format, method="eas", kind="mha", k=1,
                      selector=self.selector, pia=pia,
                      sizes=self.sizes, steps=self.steps, warmup_steps=self.warmup_steps,
                      batch_size=self.batch_size, grad_accum=self.grad_accum,
                      gradient_checkpointing=self.gradient_checkpointing, group_by_length=self.group_by_length,
                      lr=self.lr,
                      bandit_warmup_steps=self.bandit_warmup_steps, bandit_comparisons=self.bandit_comparisons,
                      bandit_m=self.bandit_m, bandit_T=self.bandit_T, bandit_lr=self.bandit_lr,
                      heldout=self.heldout, n_eval=self.n_eval, eval_batch_size=self.eval_batch_size,
                      max_new_tokens=self.answer_tokens, model=self.model, data_seed=self.seed, seed=self.seed)
        values = {**values, **changes}
        if values["task"] == "scienceqa" and self.scienceqa_root and "dataset" not in changes:
            values["dataset"] = self.scienceqa_root
        return ExperimentSpec(**values)


def _check_list(name: str, values, allowed=None) -> None:
    if not isinstance(values, list) or not values:
        raise ParameterError(f"parameter {name}={values!r}; expected a non-empty list.")
    for v in values:
        if allowed is None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ParameterError(f"parameter {name}={values!r}; expected positive integers.")
        if allowed is not None and v not in allowed:
            raise ParameterError(f"parameter {name} has {v!r}; expected values from {', '.join(map(str, allowed))}.")


@dataclass(frozen=True)
class RedundancyParams(FineTuneParams):
    """02_redundancy: the bandit's search, and its chosen MHAs against simpler selectors, same fine-tuning."""

    k: int = 12
    # block influence is left out: for an MHA it ranks exactly as attention drop does (a duplicate row)
    selectors: list = field(default_factory=lambda: ["random", "last", "attention_drop", "greedy", "bandit"])

    def __post_init__(self):
        super().__post_init__()
        _check_list("selectors", self.selectors, ("random", "last", "attention_drop", "block_influence", "greedy",
                                                  "bandit"))
        if "bandit" not in self.selectors:
            raise ParameterError("parameter selectors must include 'bandit' (the chapter is about its search).")
        _check_list("k", [self.k])


@dataclass(frozen=True)
class SkipAblationParams(FineTuneParams):
    """03_skip_ablation: skipping k MHAs, FFNs or either (Table 5, Fig. 1b)."""

    kinds: list = field(default_factory=lambda: ["mha", "ffn", "mha_or_ffn"])
    ks: list = field(default_factory=lambda: [4, 12])
    # a shorter budget than 02/07: nine runs (three kinds x two k, and the bandit's) fit the chapter's time
    steps: int = 56
    warmup_steps: int = 4
    bandit_warmup_steps: int = 24
    bandit_comparisons: int = 8

    def __post_init__(self):
        super().__post_init__()
        _check_list("kinds", self.kinds, ("mha", "ffn", "mha_or_ffn"))
        _check_list("ks", self.ks)
        for kind in self.kinds:
            try:
                self.spec(kind=kind, k=max(self.ks))
            except ValueError as err:
                raise ParameterError(f"parameters give an invalid experiment for kind {kind!r}: {err}") from None


@dataclass(frozen=True)
class PIAAblationParams(FineTuneParams):
    """04_pia_ablation: PIA design switches (Table 6), skipped MHAs (Table 7), PIA hidden size (Table 8)."""

    selector: str = "attention_drop"  # training-free: every run at one k skips the same MHAs
    bandit_warmup_steps: int = 12     # unused by attention_drop; kept so its runs keep their cache keys
    bandit_comparisons: int = 4
    k: int = 12                       # Tables 6 and 8
    table6_rows: list = field(default_factory=lambda: ["base", "info_exchange", "frozen_bias", "reparam"])
    ks: list = field(default_factory=lambda: [4, 12, 16])          # Table 7
    hidden_sizes: list = field(default_factory=lambda: [8, 32, 64])  # Table 8 (skip-replacing PIA)

    def __post_init__(self):
        super().__post_init__()

        _check_list("table6_rows", self.table6_rows, tuple(TABLE6_ROWS))
        _check_list("ks", self.ks)
        _check_list("hidden_sizes", self.hidden_sizes)
        _check_list("k", [self.k])


TABLE1_METHODS = ("lora", "adapter", "mam", "das", "eas", "full")  # 07's row methods (row_methods labels them)


# cpu's Table 1 rates other than `lr` (1e-3), each the better of 1e-3 and 2e-3 on 200 val items (2026-12-07)
CPU_METHOD_LR = {"adapter": 0.002, "mam": 0.002, "das": 0.002, "eas": 0.002}


@dataclass(frozen=True)
class MethodsParams(FineTuneParams):
    """07_methods: EAS against the PETL baselines on one task (Tables 1 and 3): accuracy, updated parameters,
    FLOPs and time. Baseline sizes default to about EAS's share of updated parameters on the embedded model."""

    # Table 1 is ScienceQA under every shipped profile; cpu names the option's words, the design measured to
    # learn it in 80 steps (README, "ScienceQA under cpu")
    task: str = "scienceqa"
    answer_format: str = "QCM-A-text"
    # Table 1's learning rate per method, where it is not `lr` (method -> rate; Table 3 and the ScienceQA check
    # use `lr`): cpu's, chosen once on 200 val items from 1e-3 and 2e-3 for every method (README, "ScienceQA
    # under cpu"; LoRA kept 1e-3); {} gives every method `lr`
    method_lr: dict = field(default_factory=lambda: dict(CPU_METHOD_LR))
    # Table 1's methods trained at each of several learning rates (method -> rates), each row the rate with the
    # best accuracy on `n_val` val items, so that no test item picks it (eas.study.experiments.choose_by_validation);
    # a method listed here takes no `method_lr`
    lr_grid: dict = field(default_factory=dict)
    n_val: int = 200
    answer_tokens: int = 16  # "The answer is sunny windowsill." and every analog option fit
    methods: list = field(default_factory=lambda: ["lora", "adapter", "mam", "das", "eas"])
    eas_ks: list = field(default_factory=lambda: [12])  # EAS_k rows (MHAs skipped)
    das_k: int = 4                                       # DAS_k: whole layers skipped
    train_fraction: float = 0.2                          # classification: the AID "20%" column
    lora_r: int = 2
    adapter_hidden: int = 16
    mam_hidden: int = 16
    mam_prefix: int = 10
    das_layer_hidden: int = 32
    das_kept_hidden: int = 16
    # Table 3 (the same methods on the Slake and AID analogs); an empty list leaves it out
    transfer_tasks: list = field(default_factory=list)
    transfer_fractions: list = field(default_factory=lambda: [0.2, 0.5])  # AID's training shares
    transfer_steps: int = 0  # fine-tuning steps of the Table 3 runs (0: `steps`)
    transfer_sizes: dict = field(default_factory=lambda: {"per_class": 100})  # the AID analog's images per class
    transfer_answer_tokens: int = 12  # short answers: chapter 2's setting, so its VQA bandit run is EAS's row
    # where `task` is not ScienceQA (smoke): these methods also run on ScienceQA with the chapter's budget, to show
    # whether that budget learns it (accuracy against chance); [] leaves the check out
    scienceqa_check: list = field(default_factory=list)
    scienceqa_answer_tokens: int = 16  # the answer comes first in every format's target: 16 tokens score it

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.transfer_tasks, list) or any(t not in ("vqa", "classification")
                                                            for t in self.transfer_tasks):
            raise ParameterError(f"parameter transfer_tasks={self.transfer_tasks!r}; expected a list of 'vqa' and "
                                 "'classification' (or [] to leave Table 3 out).")
        if "classification" in self.transfer_tasks and (
                not isinstance(self.transfer_fractions, list) or not self.transfer_fractions or any(
                    isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1
                    for f in self.transfer_fractions)):
            raise ParameterError(f"parameter transfer_fractions={self.transfer_fractions!r}; expected a non-empty "
                                 "list of training shares in (0, 1].")
        if isinstance(self.transfer_steps, bool) or not isinstance(self.transfer_steps, int) or self.transfer_steps < 0:
            raise ParameterError(f"parameter transfer_steps={self.transfer_steps!r} must be an integer >= 0 "
                                 "(0: the chapter's `steps`).")
        _check_list("methods", self.methods, TABLE1_METHODS)
        if "eas" in self.methods:
            _check_list("eas_ks", self.eas_ks)
        for name in ("das_k", "lora_r", "adapter_hidden", "mam_hidden", "mam_prefix", "das_layer_hidden",
                     "das_kept_hidden"):
            _check_list(name, [getattr(self, name)])
        if not isinstance(self.method_lr, dict) or any(
                m not in TABLE1_METHODS or isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0
                for m, r in self.method_lr.items()):
            raise ParameterError(f"parameter method_lr={self.method_lr!r}; expected a mapping from methods "
                                 f"({', '.join(TABLE1_METHODS)}) to positive learning rates, e.g. {{eas: 0.002}}.")
        if not isinstance(self.lr_grid, dict) or any(
                m not in TABLE1_METHODS or not isinstance(rates, list) or not rates or len(set(rates)) != len(rates)
                or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 for r in rates)
                for m, rates in self.lr_grid.items()):
            raise ParameterError(f"parameter lr_grid={self.lr_grid!r}; expected a mapping from methods "
                                 f"({', '.join(TABLE1_METHODS)}) to lists of distinct positive learning rates, "
                                 "e.g. {lora: [0.001, 0.002]}.")
        if both := sorted(set(self.lr_grid) & set(self.method_lr)):
            raise ParameterError(f"methods {both} are in both lr_grid and method_lr: a method's rate is either "
                                 "chosen on the val split (lr_grid) or given (method_lr), not both.")
        _check_list("n_val", [self.n_val])
        if self.lr_grid and self.n_val > self.sizes.get("val", self.n_val):
            raise ParameterError(f"parameter n_val={self.n_val} is more than the val split's {self.sizes['val']} "
                                 "items (sizes); ask for at most that many.")
        _check_list("transfer_answer_tokens", [self.transfer_answer_tokens])
        _check_list("scienceqa_answer_tokens", [self.scienceqa_answer_tokens])
        if self.scienceqa_check:
            _check_list("scienceqa_check", self.scienceqa_check, TABLE1_METHODS)
        try:
            for method in self.methods:
                self.method_spec(method, max(self.eas_ks))
            self.rate_candidates()
            self.transfer_specs()
            self.scienceqa_specs()
        except ValueError as err:
            raise ParameterError(f"parameters give an invalid experiment: {err}") from None

    def method_spec(self, method: str, k: int | None = None, **changes):
        """The ExperimentSpec of one row: EAS_k and DAS_k searched by the bandit (warm_start off, as in
        chapter 2, so every method gets the same fine-tuning), the PETL baselines at this chapter's sizes."""
        common = {**dict(task=self.task, train_fraction=self.train_fraction, warm_start=False, study="07_methods",
                         lr=self.method_lr.get(method, self.lr)), **changes}
        if method == "eas":
            return self.spec(**{"k": k or max(self.eas_ks), "selector": "bandit", **common})
        options = {"lora": {"r": self.lora_r}, "adapter": {"hidden": self.adapter_hidden},
                   "mam": {"hidden": self.mam_hidden, "prefix_len": self.mam_prefix},
                   "das": {"layer_hidden": self.das_layer_hidden, "kept_hidden": self.das_kept_hidden},
                   "full": {}}[method]
        skipping = {"kind": "layer", "k": self.das_k, "selector": "bandit"} if method == "das" else \
            {"kind": None, "k": 0, "selector": "none"}
        return self.spec(**{"method": method, "method_options": options, **skipping, **common})

    def rate_candidates(self) -> dict[str, dict[str, "ExperimentSpec"]]:
        """Row label -> {"lr <rate>": spec} for each Table 1 row whose method is in `lr_grid` (the rates it is
        trained at, one of which `choose_by_validation` keeps)."""
        return {label: {f"lr {rate:g}": self.method_spec(method, k, lr=rate) for rate in self.lr_grid[method]}
                for label, (method, k) in self.row_methods().items() if method in self.lr_grid}

    def transfer_specs(self) -> dict[str, dict[str, "ExperimentSpec"]]:
        """Table 3: {column: {row label: spec}}, one column per `transfer_tasks` entry ("vqa": the Slake analog;
        "classification": the AID analog, one column per `transfer_fractions` entry), every method of `methods`
        fine-tuned `transfer_steps` steps (0: `steps`)."""
        steps = self.transfer_steps or self.steps
        warmup = min(self.warmup_steps, steps - 1)
        columns: dict[str, dict] = {}
        for task in self.transfer_tasks:
            fractions = self.transfer_fractions if task == "classification" else [self.train_fraction]
            for fraction in fractions:
                name = "Slake" if task == "vqa" else f"AID {round(100 * fraction)}%"
                sizes = self.transfer_sizes if task == "classification" else self.sizes
                columns[name] = {label: self.method_spec(method, k, task=task, train_fraction=fraction, sizes=sizes,
                                                         steps=steps, warmup_steps=warmup, lr=self.lr,
                                                         max_new_tokens=self.transfer_answer_tokens)
                                 for label, (method, k) in self.row_methods().items()}
        return columns

    def scienceqa_specs(self) -> dict[str, "ExperimentSpec"]:
        """Row label -> spec of the `scienceqa_check` methods on ScienceQA at this chapter's budget."""
        return {label: self.method_spec(method, k, task="scienceqa", max_new_tokens=self.scienceqa_answer_tokens,
                                     lr=self.lr)
                for label, (method, k) in self.row_methods(self.scienceqa_check).items()}

    def row_methods(self, methods: list | None = None) -> dict[str, tuple[str, int | None]]:
        """Row label -> (method, k): the PETL baselines, DAS_k and EAS_k for each k of `eas_ks`."""
        labels = {"lora": "LoRA", "adapter": "Adapter", "mam": "MAM", "das": f"DAS_{self.das_k}", "full": "Full FT"}
        rows: dict[str, tuple[str, int | None]] = {}
        for method in self.methods if methods is None else methods:
            if method == "eas":
                rows.update({f"EAS_{k}": ("eas", k) for k in self.eas_ks})
            else:
                rows[labels[method]] = (method, None)
        return rows


NOTEBOOK_PARAMS.update({"02_redundancy": RedundancyParams, "03_skip_ablation": SkipAblationParams,
                        "04_pia_ablation": PIAAblationParams, "07_methods": MethodsParams})


@dataclass(frozen=True)
class ClaimsParams:
    """08_claims: the claims ledger of the book run under `profile` (it reads what chapters 2-7 recorded)."""

    profile: str = "cpu"


NOTEBOOK_PARAMS["08_claims"] = ClaimsParams


THROUGHPUT_VARIANTS = ("base", "skip-only", "eas-merged", "das")


@dataclass(frozen=True)
class ThroughputParams:
    """`make bench SUITE=throughput` (eas.study.throughput): decode tokens per second where models are served,
    at several batch sizes x context lengths, every variant interleaved on one randomly initialised model of
    each shape (timing does not depend on weight values), against the ceilings its shape implies."""

    profile: str = "cpu"
    shapes: list = field(default_factory=lambda: ["smollm2-135m", "llama-1b"])  # eas.measure.shapes names
    batches: list = field(default_factory=lambda: [1, 8, 32])
    contexts: list = field(default_factory=lambda: [256, 1024])
    eas_ks: list = field(default_factory=lambda: [8, 12])   # EAS_k merged; skip-only (= attention drop) at max
    das_k: int = 4
    decode_steps: int = 4     # timed decode steps per run (after one untimed step)
    repeats: int = 3          # interleaved rounds (after one warm-up round)
    budgets_gb: list = field(default_factory=lambda: [4, 16])  # KV budgets for sequences per budget
    bytes_per: int = 4        # what the timed models hold (fp32 on a CPU; 2 for bf16 on a GPU)
    skip_hidden: int = 32
    adapt_hidden: int = 8
    merge_strategy: str = "low_rank"
    adapter_hidden: int = 128
    das_layer_hidden: int = 256
    lora_r: int = 16
    mam_prefix: int = 10
    seed: int = 0

    def __post_init__(self):
        for name in ("batches", "contexts", "eas_ks", "budgets_gb", "shapes"):
            v = getattr(self, name)
            if not isinstance(v, list) or not v:
                raise ParameterError(f"parameter {name}={v!r}; expected a non-empty list.")
        for name in ("batches", "contexts", "eas_ks"):
            if any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in getattr(self, name)):
                raise ParameterError(f"parameter {name}={getattr(self, name)!r}; expected positive integers.")
        if any(c < 16 for c in self.contexts):
            raise ParameterError(f"parameter contexts={self.contexts!r}; expected lengths >= 16 (the prompt "
                                 "prefilled before the cache is extended is 8 tokens).")
        if self.decode_steps < 1 or self.repeats < 1:
            raise ParameterError("parameters decode_steps and repeats must be >= 1.")
        if self.bytes_per not in (2, 4):
            raise ParameterError(f"parameter bytes_per={self.bytes_per!r}; expected 2 (bf16/fp16) or 4 (fp32).")


NOTEBOOK_PARAMS["throughput"] = ThroughputParams
