"""AID-format image classification posed as generation: loader and offline analog from animal-mnist.

Layout (the official AID release): one folder per class, `root/{ClassName}/{classname}_{n}.jpg`.
AID ships no splits; the loader makes them: each class's files are shuffled with `seed`, the first
`train_fraction` of them are train, the next `val_fraction` (of the class, at least one image) are val,
and the rest are test. Val is carved out of the held-out part rather than the train part, so that
train keeps exactly the protocol's 20% / 50% and val never overlaps train or test.

The analog writes animal-mnist's 10 animal silhouette classes (Bear ... Zebra) as 64x64 RGB JPEGs.
Its data are read straight from the package's gzipped pickles, because the package's own loader
imports tensorflow.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import re
from pathlib import Path

from PIL import Image

from eas.data._common import (
    DatasetError,
    DatasetNotFound,
    Example,
    check_split,
    require_dir,
    save_image,
    seeded_rng,
    take,
)

LAYOUT = "root/{ClassName}/{classname}_{n}.jpg: one folder per class, holding that class's images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DEFAULT_SIZES = {"per_class": 100}
# animal-mnist labels 0..9 in this order (checked by eye on the silhouettes; alphabetical like its docs)
ANIMAL_CLASSES = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]
IMAGE_SIZE = 64


def display_name(folder: str) -> str:
    """'DenseResidential' -> 'dense residential': the words a language model should produce."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", folder).replace("_", " ").lower().strip()


def format_prompt(classes: list[str]) -> str:
    return (
        "Which category does this image belong to? Choose one of: "
        + ", ".join(classes)
        + ".\nReply with the category name only."
    )


def class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DatasetError(f"{root} has {len(folders)} class folders; expected layout: {LAYOUT}")
    return folders


def class_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise DatasetNotFound(f"class folder {folder} holds no images; expected layout: {LAYOUT}")
    return images


def split_class(images: list[Path], split: str, seed: int, train_fraction: float, val_fraction: float,
                name: str) -> list[Path]:
    order = list(images)
    seeded_rng(seed, "classification", name).shuffle(order)
    n_train = round(train_fraction * len(order))
    n_val = max(1, round(val_fraction * len(order))) if val_fraction > 0 else 0
    if n_train + n_val >= len(order):
        raise DatasetError(f"class {name} has only {len(order)} images: too few for train_fraction={train_fraction} "
                           "plus a val slice and a test part")
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(order))}
    start, stop = bounds[split]
    return order[start:stop]


def load(
    root: Path,
    split: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    train_fraction: float = 0.2,
    val_fraction: float = 0.1,
) -> list[Example]:
    check_split(split)
    if not (0 < train_fraction < 1 and 0 <= val_fraction < 1):
        raise DatasetError(f"train_fraction must be in (0, 1) and val_fraction in [0, 1); "
                           f"got {train_fraction}, {val_fraction}")
    root = require_dir(Path(root), LAYOUT)
    folders = class_folders(root)
    classes = [display_name(f.name) for f in folders]
    prompt = format_prompt(classes)
    examples = []
    for folder, name in zip(folders, classes):
        for path in split_class(class_images(folder), split, seed, train_fraction, val_fraction, folder.name):
            examples.append(Example(
                uid=f"{folder.name}/{path.name}",
                prompt=prompt,
                target=name,
                answer=name,
                image=str(path.resolve()),
                meta={"label": name, "classes": classes},
            ))
    # mix the classes so that `limit` gives a balanced-looking subset
    seeded_rng(seed, "classification", split, "order").shuffle(examples)
    return take(examples, limit)


# ----------------------------------------------------------------------------------------------
# the analog


def animal_mnist_arrays():
    spec = importlib.util.find_spec("animal_mnist")  # locate without importing (its __init__ may pull tensorflow)
    if spec is None or spec.origin is None:
        raise DatasetNotFound("package animal-mnist is not installed (pip install animal-mnist==0.4 --no-deps)")
    folder = Path(spec.origin).parent / "data" / "Animal_MNIST"
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
        images = pickle.load(f)
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
        labels = pickle.load(f)
    return images, labels


def write_analog(root: Path, seed: int, sizes: dict[str, int]) -> None:
    images, labels = animal_mnist_arrays()
    for label, folder in enumerate(ANIMAL_CLASSES):
        indices = [int(i) for i in (labels == label).nonzero()[0]]
        chosen = sorted(seeded_rng(seed, "classification", "build", folder)
                        .sample(indices, min(sizes["per_class"], len(indices))))
        for n, index in enumerate(chosen, start=1):
            picture = Image.fromarray(images[index]).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
            save_image(picture, root / folder / f"{folder.lower()}_{n}.jpg", "JPEG", quality=95)
