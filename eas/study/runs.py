"""Running a model on the study's tasks: datasets prepared by their parameters, then scored.

Datasets are built once per (task, sizes, seed) under `data/datasets/{task}-{key}`, so profiles
with different sizes never overwrite each other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eas.core import io
from eas.data import TASKS, Example, build_task, load_task, task_module
from eas.data._common import require_dir
from eas.data.evaluate import chance_accuracy, chance_z, score, summarise
from eas.models.generate import generate_texts

# The paper's classification columns: test accuracy after training on 20% / 50% of each class.
TRAIN_FRACTIONS = {"20%": 0.2, "50%": 0.5}


def prepare_task(task: str, sizes: dict, seed: int = 0, release: str | Path | None = None) -> Path:
    """The folder a task's examples are read from: `release`, a folder holding the dataset's official release
    (checked, never written), or else the study's analog built from `sizes` and `seed`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if release is not None:
        return check_release(task, release)
    root = io.datasets_dir(f"{task}-{io.key_of({'sizes': sizes, 'seed': seed})}")
    return build_task(task, root, seed=seed, **sizes)


def check_release(task: str, release: str | Path) -> Path:
    """`release` as a task's official-release folder, or a DatasetError (DatasetNotFound) naming the folder or
    file that is missing or malformed and the layout expected. ScienceQA's problems and splits are read here;
    each image is looked for when its problem is loaded, before any training."""
    root = Path(release).expanduser()
    module = task_module(task)
    if task == "scienceqa":
        module.read_release(root)
    else:
        require_dir(root, module.LAYOUT)
    return root.resolve()


def load_split(task: str, root: Path, split: str, *, limit: int | None = None,
               train_fraction: float = 0.2, answer_format: str = "QCM-ALE") -> list[Example]:
    """`train_fraction` is classification's, `answer_format` ScienceQA's; each task ignores the other's."""
    kw = {"train_fraction": train_fraction} if task == "classification" else {}
    if task == "scienceqa":
        kw["answer_format"] = answer_format
    return load_task(task, split, root, limit=limit, **kw)


def evaluate_examples(model, task: str, examples: list[Example], *, batch_size: int, max_new_tokens: int,
                      progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Greedy answers, parsed and scored: (one row per example, the summary columns)."""
    texts = generate_texts(model, examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           progress=progress, desc=f"{task} ({len(examples)})")
    per_example = score(task, examples, texts)
    summary = summarise(task, per_example)
    summary["chance"] = chance_accuracy(task, examples)
    return per_example, summary


def zero_shot_sets(roots: dict[str, Path], n_eval: int) -> dict[str, tuple[str, list[Example]]]:
    """The evaluation sets of the "ZS" row: label -> (task, test examples). Classification is
    evaluated on the test split of both training fractions, as the paper's AID columns are."""
    sets = {}
    for task in TASKS:
        fractions = TRAIN_FRACTIONS if task == "classification" else {"": 0.2}
        for label, fraction in fractions.items():
            name = f"{task} ({label})" if label else task
            sets[name] = (task, load_split(task, roots[task], "test", limit=n_eval, train_fraction=fraction))
    return sets


def generate_sets(model, sets: dict[str, tuple[str, list[Example]]], *, batch_size: int, max_new_tokens: dict,
                  progress: bool = True) -> pd.DataFrame:
    """The expensive part, worth caching: one row per (set, example) with the raw generated text."""
    rows = []
    for name, (task, examples) in sets.items():
        texts = generate_texts(model, examples, batch_size=batch_size, max_new_tokens=max_new_tokens[task],
                               progress=progress, desc=f"{name} ({len(examples)})")
        rows += [{"set": name, "task": task, "uid": e.uid, "prediction": t} for e, t in zip(examples, texts)]
    return pd.DataFrame(rows)


def score_sets(sets: dict[str, tuple[str, list[Example]]], generations: pd.DataFrame) -> tuple[dict, dict]:
    """The cheap part, redone on every run so a change of the parser never needs new generations:
    one dict of "{set}:{column}" values (plus each set's chance level) and per-example tables."""
    row: dict[str, float] = {}
    details: dict[str, pd.DataFrame] = {}
    for name, (task, examples) in sets.items():
        texts = generations[generations["set"] == name].set_index("uid")["prediction"].fillna("")
        per_example = score(task, examples, [texts[e.uid] for e in examples])
        scores = {**summarise(task, per_example), "chance": chance_accuracy(task, examples),
                  "chance_z": chance_z(task, examples, per_example["correct"])}
        for col, value in scores.items():
            row[f"{name}:{col}"] = value
        details[name] = per_example
    return row, details
