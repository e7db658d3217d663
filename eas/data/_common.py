"""Shared pieces of the dataset builders and loaders: the Example record, errors, and safe builds."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from eas.core.io import atomic_path, write_json

SPLITS = ("train", "val", "test")
MARKER = ".eas_build.json"  # written last: its presence with matching params means "build complete"
FORMAT_VERSION = 2  # bump when a generator or a prompt changes: old builds and cached generations are redone


@dataclass(frozen=True)
class Example:
    uid: str  # unique id within the task
    prompt: str  # the user's turn as plain text, no chat template, no image placeholder
    target: str  # the full text the model should produce (teacher-forcing label)
    answer: str  # gold label for the metric: option letter, word/phrase, or class name
    image: str | None  # absolute path to the image file, or None
    meta: dict = field(default_factory=dict)  # task fields the metrics need


class DatasetError(ValueError):
    """A dataset is malformed or a request names something that does not exist."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """A dataset folder or file is missing (also a FileNotFoundError, for callers that expect one)."""


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    if split not in allowed:
        raise DatasetError(f"unknown split {split!r}; expected one of {allowed}")
    return split


def require_dir(root: Path, layout: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFound(f"dataset folder {root} does not exist; expected layout: {layout}")
    return root


def require_file(path: Path, layout: str) -> Path:
    if not Path(path).is_file():
        raise DatasetNotFound(f"missing file {path}; expected layout: {layout}")
    return Path(path)


def read_json(path: Path, layout: str) -> Any:
    require_file(path, layout)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); expected layout: {layout}") from None


def seeded_rng(seed: int, *salt: object) -> random.Random:
    # a string seed is hashed deterministically by random.Random (unlike hash(), no PYTHONHASHSEED)
    return random.Random(":".join(str(s) for s in (seed, *salt)))


def take(items: list, limit: int | None) -> list:
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    return items if limit is None else items[:limit]


def save_image(image, path: Path, fmt: str, **options) -> Path:
    """Write a PIL image atomically; fixed options keep the bytes identical across runs."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **options)
    return Path(path)


def build_once(root: Path, params: dict, write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` unless `root` already holds a complete build with these `params`.

    The build goes to a staging folder beside `root` and is swapped in only once complete, so an
    interrupted build leaves `root` as it was. A non-empty `root` without our marker may be a real
    dataset: we refuse to replace it.
    """
    root = Path(root).resolve()
    marker = root / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return root
        except json.JSONDecodeError:
            pass  # a corrupt marker means an unknown build: redo it
    elif root.is_dir() and any(root.iterdir()):
        raise DatasetError(
            f"{root} is not empty and was not built by eas (no {MARKER}); refusing to overwrite it. "
            "Pass another root or remove the folder."
        )
    staging = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
        write_json(staging / MARKER, params)
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        if root.exists():
            os.replace(root, old)
        os.replace(staging, root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
