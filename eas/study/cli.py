"""`python -m eas <command>`: the study's experiments from a shell, for batch jobs without notebooks.

    python -m eas search   --task vqa --k 12                   bandit search of the MHAs to skip
    python -m eas finetune --task vqa --method eas --k 12      one experiment: search, fine-tune, evaluate
    python -m eas evaluate --task vqa --method eas --k 12      the paper's metric columns of that run
    python -m eas export   --run data/results/runs/KEY --out my-model   the trained model as a transformers directory

Every flag of search / finetune is a field of eas.study.experiments.ExperimentSpec, with the same default, so a
command names one run, `data/results/runs/{key}/`. A finished run is read back, never repeated; an
interrupted one resumes from its last checkpoint. `search` runs a spec's search stage only: a later
`finetune` with the same flags starts from it. evaluate and export take the same flags, or `--run` with
a run directory (or its key) as printed by finetune.

Results go to stdout (`--format json` for scripts), progress bars to stderr. A bad flag value exits with
status 2 and a message naming the flag; a command that cannot be done (an unfinished run, a method that
cannot be exported) exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
from pathlib import Path

from eas.baselines import BaselineError
from eas.core import io
from eas.data import task_module
from eas.data.evaluate import METRIC_COLUMNS
from eas.export.pretrained import save_pretrained
from eas.method.pia.config import MERGE_STRATEGIES, PIAConfigError
from eas.models.mini_llava import GGUF_FILE, smollm2_package_dir, tiny_language_model
from eas.models.zoo import check_model_name
from eas.study import experiments
from eas.study.experiments import ExperimentError, ExperimentSpec

# Fields that take one of a fixed set of values: argparse lists them in --help and in its errors.
CHOICES = {"task": experiments.TASKS, "method": experiments.METHODS, "kind": experiments.KINDS,
           "selector": experiments.SELECTORS}
FORMATS = ("table", "json")
SEARCH_METHODS = ("eas", "das")  # the methods with adapters to train a supernet with
# What the less obvious fields mean (the rest are named plainly); see eas.study.experiments for the whole story.
FIELD_HELP = {
    "kind": "what is skipped (None: mha for eas / skip-only, layer for das)",
    "k": "modules skipped",
    "selector": "how the skipped set is chosen (None: bandit for eas / das, none otherwise)",
    "train_fraction": "classification only: the AID 20%% / 50%% training split",
    "pia": 'EAS PIA options, e.g. \'{"skip_hidden": 32, "adapt_hidden": 8}\' or \'{"preset": "lavin"}\'',
    "method_options": "the baseline's options, e.g. '{\"r\": 8}' for lora",
    "steps": "fine-tuning steps",
    "batch_size": "examples per micro-batch, over all processes",
    "heldout": "val examples: the bandit's held-out batch / the similarity selectors' inputs",
    "warm_start": "fine-tune the chosen set from the bandit supernet's adapters",
    "sizes": 'dataset sizes, e.g. \'{"train": 2000, "val": 300, "test": 500}\' ({"per_class": N} for classification)',
    "n_train": "limit on training examples (none: the whole train split)",
    "n_eval": "test examples evaluated",
    "model": "tiny | mini-llava | the path or hub id of a LLaVA-1.5 checkpoint",
    "study": "a label for results_table (not part of the run's key)",
    "checkpoint_every": "training steps between checkpoints (not part of the run's key)",
}


class CommandError(Exception):
    """A valid command line that cannot be carried out (exit status 1)."""


# ----------------------------------------------------------------------------- flag values

def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _optional(parse):
    """`none` for a field whose default is None (kind, selector, n_train)."""
    def convert(text: str):
        return None if text.lower() == "none" else parse(text)
    return convert


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"skip_hidden\": 8}}', got {text!r}")
    return value


def _choice(allowed):
    def convert(text: str) -> str | None:
        if text.lower() == "none" and None not in allowed:
            return None
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text
    return convert


# ----------------------------------------------------------------------------- spec flags

def _default_of(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _converter(f: dataclasses.Field):
    """The flag's type from the field's annotation (a string: experiments uses postponed annotations)."""
    annotation = str(f.type).replace(" ", "")
    if f.name in CHOICES:
        return _choice(CHOICES[f.name])
    base = {"int": _integer, "float": _number, "dict": _json_object, "str": str}.get(annotation.split("|")[0])
    if base is None:
        raise TypeError(f"ExperimentSpec.{f.name}: no command-line form for type {f.type!r}")
    return _optional(base) if "None" in annotation else base


def add_spec_flags(parser: argparse.ArgumentParser, fixed: dict | None = None) -> None:
    """One flag per ExperimentSpec field, except those `fixed` by the command. Flags the user leaves out
    stay out of the parsed namespace (SUPPRESS), so the spec gets its own defaults and `--run` can tell
    whether spec flags were given as well."""
    fixed = fixed or {}
    group = parser.add_argument_group("experiment (eas.study.experiments.ExperimentSpec fields)")
    for f in dataclasses.fields(ExperimentSpec):
        if f.name in fixed:
            continue
        default = _default_of(f)
        shown = json.dumps(default) if isinstance(default, dict) else default
        help_text = f"default: {shown}".replace("%", "%%")
        if f.name in CHOICES:
            help_text = f"one of {', '.join(CHOICES[f.name])}; {help_text}"
        if f.name in FIELD_HELP:
            help_text = f"{FIELD_HELP[f.name]}; {help_text}"
        if str(f.type) == "bool":
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = "JSON" if isinstance(default, dict) else f.name.upper()
            group.add_argument(flag(f.name), dest=f.name, type=_converter(f), default=argparse.SUPPRESS,
                               metavar=metavar, help=help_text)


def _spec_fields(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(ExperimentSpec)}
    return {k: v for k, v in vars(args).items() if k in names}


def flag_of_error(err: Exception) -> str | None:
    """The flag an ExperimentSpec error is about: the field its message names first (the messages lead
    with the field, e.g. "k=40 is out of range ...", "steps must be ..."), or the option dict it checks."""
    if isinstance(err, PIAConfigError):
        return flag("pia")
    if isinstance(err, BaselineError):
        return flag("method_options")
    message = str(err)
    found = []
    for f in dataclasses.fields(ExperimentSpec):
        match = re.search(rf"(?<![\w-]){re.escape(f.name)}(?![\w-])", message)
        if match:
            found.append((match.start(), flag(f.name)))
    return min(found)[1] if found else None


def spec_error(parser: argparse.ArgumentParser, err: Exception):
    """Exit 2 with the spec's own message, prefixed by the flag it concerns, like argparse's errors."""
    name = flag_of_error(err)
    parser.error(f"argument {name}: {err}" if name else str(err))


def build_spec(parser: argparse.ArgumentParser, fields: dict) -> ExperimentSpec:
    """The spec of the given flags, or exit 2 with the spec's own complaint and the flags it concerns."""

    if "model" in fields:
        try:
            check_model_name(fields["model"])
        except ValueError as err:
            parser.error(f"argument --model: {err}")
    try:
        return ExperimentSpec(**fields)
    except ValueError as err:  # ExperimentError, PIAConfigError, BaselineError
        spec_error(parser, err)


# GGUF value types (https://github.com/ggerganov/ggml/blob/master/docs/gguf.md): fixed sizes, 8 string, 9 array
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_block_count(file: Path) -> int | None:
    """`{arch}.block_count` from a GGUF file's header (its metadata comes first: a few KB are read), or None."""
    import struct

    def read(fmt):
        return struct.unpack("<" + fmt, fh.read(struct.calcsize("<" + fmt)))[0]

    def skip(kind):
        if kind == 8:
            fh.seek(read("Q"), 1)
        elif kind == 9:
            item, count = read("I"), read("Q")
            if item in _GGUF_SIZES:
                fh.seek(_GGUF_SIZES[item] * count, 1)
            else:
                for _ in range(count):
                    skip(item)
        else:
            fh.seek(_GGUF_SIZES[kind], 1)

    with open(file, "rb") as fh:
        if fh.read(4) != b"GGUF" or read("I") < 2:
            return None
        _, n_kv = read("Q"), read("Q")
        for _ in range(n_kv):
            key = fh.read(read("Q")).decode("utf-8", "replace")
            kind = read("I")
            if key.endswith(".block_count") and kind in (4, 5, 10, 11):
                return int(read({4: "I", 5: "i", 10: "Q", 11: "q"}[kind]))
            skip(kind)
    return None


def model_layer_count(name: str) -> int | None:
    """The decoder depth of model `name` read without building it (nor its data): k's upper bound is then
    checked before a command does any work or writes anything. None where it cannot be read cheaply (a hub
    id not in the local cache): that k is checked once the model is built, as before."""
    import inspect


    try:
        if name == "tiny":  # eas.models.zoo builds it with tiny_language_model's default depth
            return int(inspect.signature(tiny_language_model).parameters["layers"].default)
        if name == "mini-llava":
            return gguf_block_count(smollm2_package_dir() / GGUF_FILE)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, local_files_only=True)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return int(text.num_hidden_layers)
    except Exception:  # unreadable here: the check after the model is built still applies
        return None


def check_sizes(task: str, sizes: dict) -> None:
    """eas.data.build_task's checks of `sizes`, before anything is built (a dataset folder is made first)."""

    module = task_module(task)
    options = getattr(module, "BUILD_OPTIONS", ())
    unknown = set(sizes) - set(module.DEFAULT_SIZES) - set(options)
    if unknown:
        raise ValueError(f"unknown sizes {sorted(unknown)} for task {task!r}; it takes {sorted(module.DEFAULT_SIZES)}"
                         + (f" and optionally {sorted(options)}" if options else ""))
    full = {**module.DEFAULT_SIZES, **sizes}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in full.values()):
        raise ValueError(f"sizes must be positive integers, got {full}")
    if hasattr(module, "check_options"):
        module.check_options(full)


def check_before_work(parser: argparse.ArgumentParser, spec: ExperimentSpec) -> None:
    """What a spec alone cannot say but can be checked before any work or write: the dataset sizes and k
    against the model's depth. Exits 2 naming the flag, with no run directory or dataset made."""
    try:
        check_sizes(spec.task, spec.sizes)
    except ValueError as err:
        parser.error(f"argument --sizes: {err}")
    n_layers = model_layer_count(spec.model)
    if n_layers is not None:
        try:
            experiments.check_k_for(spec, n_layers)
        except ExperimentError as err:
            spec_error(parser, err)


def spec_of_run(parser: argparse.ArgumentParser, run: str) -> ExperimentSpec:
    """The spec stored in a run directory, given as a path or as the key under data/results/runs/."""
    path = Path(run)
    if not (path / "spec.json").is_file():
        path = io.results_dir("runs") / run
    if not (path / "spec.json").is_file():
        parser.error(f"argument --run: {run!r} is neither a run directory (with spec.json) nor a key under "
                     f"{io.results_dir('runs')}")
    return ExperimentSpec.from_dict(json.loads((path / "spec.json").read_text()))


def chosen_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ExperimentSpec:
    fields = _spec_fields(args)
    if args.run is None:
        return build_spec(parser, fields)
    if fields:
        parser.error(f"argument --run names a finished run already; leave out {', '.join(map(flag, fields))}")
    return spec_of_run(parser, args.run)


# ----------------------------------------------------------------------------- output

def emit(args: argparse.Namespace, record: dict, table: list[tuple[str, object]]) -> None:
    """The command's result on the real stdout (`args.stdout`; everything else printed goes to stderr)."""
    if args.format == "json":
        print(json.dumps(record, indent=2, default=str), file=args.stdout)
        return
    width = max(len(name) for name, _ in table)
    for name, value in table:
        shown = f"{value:.2f}" if isinstance(value, float) else value
        print(f"{name:<{width}}  {shown}", file=args.stdout)


def metric_table(row: dict) -> list[tuple[str, object]]:
    return [(col, row[col]) for col in METRIC_COLUMNS[row["task"]]] + [("chance", row["chance"]),
                                                                        ("n_eval", row["n_eval"])]


def row_table(run_dir: Path, row: dict) -> list[tuple[str, object]]:
    skipped = json.loads(row["skipped"])
    about = [("run", str(run_dir)), ("task", row["task"]), ("method", row["method"]),
             ("skipped", ", ".join(f"{kind} {layers}" for kind, layers in skipped.items() if layers) or "nothing"),
             ("updated_params_pct", row["updated_params_pct"]), ("final_train_loss", row["final_train_loss"]),
             ("train_wall_s", row["train_wall_s"])]
    return about + metric_table(row)


def note(message: str) -> None:
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------- commands

def cmd_search(parser, args) -> int:
    fields = {**_spec_fields(args), "selector": "bandit"}
    fields.setdefault("method", "eas")
    if fields["method"] not in SEARCH_METHODS:
        parser.error(f"argument --method: the bandit searches with adapters: expected one of "
                     f"{', '.join(SEARCH_METHODS)}, got {fields['method']!r}")
    spec = build_spec(parser, fields)
    check_before_work(parser, spec)
    run_dir = spec.run_dir()
    path = run_dir / "selection.json"
    if path.exists():
        note(f"search of run {spec.key()} found: read back")
        selection = json.loads(path.read_text())
    else:
        note(f"searching in {run_dir / 'search'} (an interrupted search resumes)")
        selection = search(spec, parser, progress=not args.no_progress)
    record = {"run_dir": str(run_dir), "key": spec.key(), **selection}
    order = sorted(range(len(selection["scores"])), key=lambda c: -selection["scores"][c])
    emit(args, record, [("run", str(run_dir)), ("chosen", selection["chosen"]),
                        ("skip_set", json.dumps(selection["skip_set"])), ("comparisons", selection["comparisons"]),
                        ("preferences (high: kept)", ", ".join(f"{c}:{selection['scores'][c]:.3f}" for c in order))])
    return 0


def search(spec: ExperimentSpec, parser, progress: bool) -> dict:
    """The search stage of run_experiment on its own, writing the same files in the same run directory."""
    run_dir = spec.run_dir()
    data = experiments.load_data(spec)
    model = experiments.build_model(spec, progress=progress)
    try:
        experiments.check_k_for(spec, len(experiments.eas_blocks(model)))
    except ExperimentError as err:
        spec_error(parser, err)
    io.write_json(run_dir / "spec.json", spec.to_dict())
    _, selection, _ = experiments.select_skips(model, spec, data, run_dir, progress)
    io.write_json(run_dir / "selection.json", selection)
    return selection


def cmd_finetune(parser, args) -> int:
    spec = build_spec(parser, _spec_fields(args))
    check_before_work(parser, spec)
    run_dir = spec.run_dir()
    if (run_dir / experiments.ROW_FILE).exists():
        note(f"finished run {spec.key()} found: its stored row, nothing recomputed")
    else:
        note(f"running in {run_dir} (an interrupted run resumes from its last checkpoint)")
    try:
        row = experiments.run_experiment(spec, progress=not args.no_progress)
    except ExperimentError as err:  # k beyond a model whose depth check_before_work could not read
        spec_error(parser, err)
    emit(args, {"run_dir": str(run_dir), **row}, row_table(run_dir, row))
    return 0


def finished_row(spec: ExperimentSpec) -> dict:
    path = spec.run_dir() / experiments.ROW_FILE
    if not path.exists():
        raise CommandError(f"run {spec.key()} ({spec.method}, {spec.task}, k={spec.k}) is not finished: "
                           f"run `python -m eas finetune` with the same flags first.")
    return json.loads(path.read_text())


def cmd_evaluate(parser, args) -> int:
    spec = chosen_spec(parser, args)
    row = finished_row(spec)
    record = {"run_dir": str(spec.run_dir()), "task": row["task"], "method": row["method"],
              **dict(metric_table(row))}
    emit(args, record, [("run", str(spec.run_dir()))] + metric_table(row))
    return 0


def cmd_export(parser, args) -> int:
    spec = chosen_spec(parser, args)
    finished_row(spec)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"argument --out: {out} exists; pass --overwrite to replace it")
    progress = not args.no_progress
    base = experiments.build_model(spec, progress=progress)
    model, _ = experiments.trained_model(spec, base)
    try:
        path = save_pretrained(model, out, merge_strategy=args.merge_strategy, fold=args.fold,
                               overwrite=args.overwrite)
    except ValueError as err:  # eas.export.pretrained's CheckpointError / FoldError: this run has no exported form
        raise CommandError(f"run {spec.key()} ({spec.method}) cannot be exported: {err}") from None
    emit(args, {"run_dir": str(spec.run_dir()), "exported": str(path)},
         [("run", str(spec.run_dir())), ("exported", str(path))])
    return 0


# ----------------------------------------------------------------------------- the parser

def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="stdout as a table or as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (on stderr)")


def _run_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, metavar="DIR_OR_KEY",
                        help="a run directory (or key) as printed by finetune, instead of the spec flags")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = commands.add_parser("search", usage="%(prog)s [options]",
                            help="bandit redundancy search: which k modules to skip",
                            description="The bandit search of a spec (selector 'bandit'; method eas or das): "
                                        "supernet warm-up, then comparisons on a held-out batch. Prints the "
                                        "chosen modules and the final preferences.")
    add_spec_flags(p, fixed={"selector": "bandit"})
    _common(p)
    p.set_defaults(run_command=cmd_search, command_parser=p)

    p = commands.add_parser("finetune", usage="%(prog)s [options]",
                            help="one experiment: select, fine-tune, evaluate (one results row)",
                            description="Run one eas.study.experiments.ExperimentSpec: skip set, adapters, "
                                        "fine-tuning, "
                                        "greedy evaluation. Resumes an interrupted run; a finished one is read "
                                        "back. Prints the run directory and its results row.")
    add_spec_flags(p)
    _common(p)
    p.set_defaults(run_command=cmd_finetune, command_parser=p)

    p = commands.add_parser("evaluate", usage="%(prog)s [options]", help="the paper's metric columns of a finished run",
                            description="Accuracy of a finished run on its task's test examples: the paper's "
                                        "columns (ScienceQA NAT ... Avg, VQA open/closed, classification Acc).")
    _run_flag(p)
    add_spec_flags(p)
    _common(p)
    p.set_defaults(run_command=cmd_evaluate, command_parser=p)

    p = commands.add_parser("export", usage="%(prog)s [options]",
                            help="a finished run's trained model as a transformers directory",
                            description="Write a finished run's trained model (skips, PIAs) with "
                                        "eas.export.save_pretrained: it loads with from_pretrained.")
    _run_flag(p)
    p.add_argument("--out", required=True, help="the directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--fold", action="store_true",
                   help="fold the adapters into the weights (exact only for prompt-free PIAs)")
    p.add_argument("--merge-strategy", default=None, choices=MERGE_STRATEGIES,
                   help="how generation merges the PIAs after prefill (default: the run's PIA config)")
    add_spec_flags(p)
    _common(p)
    p.set_defaults(run_command=cmd_export, command_parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    # Libraries print on stdout (efficientnet's "Loaded pretrained weights"): only the result goes there,
    # so that `--format json` output parses.
    args.stdout = sys.stdout
    try:  # errors found after parsing print the command's own usage line, as argparse's do
        with contextlib.redirect_stdout(sys.stderr):
            return args.run_command(args.command_parser, args)
    except CommandError as err:
        print(f"python -m eas {args.command}: error: {err}", file=sys.stderr)
        return 1
