"""The three evaluation tasks, each read from its real dataset's file format.

`build_task` writes an offline analog of a dataset in that format (nothing is downloaded); `load_task`
reads either the analog or the official release into a list of `Example`s.

    scienceqa       ScienceQA layout (problems.json, pid_splits.json, images/)   Tables 1-2
    vqa             Slake layout (train/validate/test.json, imgs/)              Table 3, Slake
    classification  AID layout (one folder of images per class)                 Table 3, AID
"""

from __future__ import annotations

from pathlib import Path

from eas.core.io import data_root, datasets_dir
from eas.data import classification, scienceqa, vqa
from eas.data._common import FORMAT_VERSION, DatasetError, DatasetNotFound, Example, build_once

TASKS = ("scienceqa", "vqa", "classification")
MODULES = {"scienceqa": scienceqa, "vqa": vqa, "classification": classification}

__all__ = ["Example", "TASKS", "FORMAT_VERSION", "DatasetError", "DatasetNotFound", "build_task", "load_task",
           "default_sizes"]


def task_module(name: str):
    if name not in MODULES:
        raise DatasetError(f"unknown task {name!r}; expected one of {TASKS}")
    return MODULES[name]


def default_sizes(name: str) -> dict[str, int]:
    return dict(task_module(name).DEFAULT_SIZES)


def build_task(name: str, root: Path | None = None, *, seed: int = 0, **sizes: int) -> Path:
    """Write the offline analog of task `name` under `root` in the real dataset's format; return `root`.

    Sizes: scienceqa and vqa take train/val/test (items per split); classification takes per_class.
    scienceqa also takes heldout_templates (phrasings per question kind that only test uses; see
    eas.data.scienceqa).
    A finished build with the same parameters is reused as is.
    """
    module = task_module(name)
    options = getattr(module, "BUILD_OPTIONS", ())  # optional integer settings that travel with the sizes
    unknown = set(sizes) - set(module.DEFAULT_SIZES) - set(options)
    if unknown:
        raise DatasetError(f"unknown sizes {sorted(unknown)} for task {name!r}; it takes "
                           f"{sorted(module.DEFAULT_SIZES)}"
                           + (f" and optionally {sorted(options)}" if options else ""))
    sizes = {**module.DEFAULT_SIZES, **sizes}
    if any(not isinstance(v, int) or v < 1 for v in sizes.values()):
        raise DatasetError(f"sizes must be positive integers, got {sizes}")
    root = Path(root) if root is not None else datasets_dir(name)
    params = {"task": name, "seed": seed, "sizes": sizes, "format_version": FORMAT_VERSION}
    if hasattr(module, "ANALOG_VERSION"):  # a task's own generator change rebuilds only that task's analogs
        params["analog_version"] = module.ANALOG_VERSION
    return build_once(root, params, lambda folder: module.write_analog(folder, seed, sizes))


def load_task(name: str, split: str, root: Path | None = None, *, limit: int | None = None, **kw) -> list[Example]:
    """Read split `split` ("train", "val" or "test") of task `name` from `root`.

    classification also takes seed, train_fraction (0.2 or 0.5 in the paper) and val_fraction.
    """
    module = task_module(name)
    root = Path(root) if root is not None else data_root() / "datasets" / name  # no mkdir: missing is an error
    return module.load(root, split, limit=limit, **kw)
