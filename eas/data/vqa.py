"""Slake-format open/closed visual question answering: loader and offline analog built from easy-vqa.

Layout (the official Slake release): `train.json`, `validate.json`, `test.json`, each a JSON list of
{img_id, img_name, question, answer, q_lang, answer_type: OPEN|CLOSED, qid, ...}; images under `imgs/`
at `img_name` (e.g. `xmlab1/source.jpg`). Only English questions are used.

The analog keeps easy-vqa's shape and colour questions as OPEN and its yes/no questions as CLOSED,
half and half per split, and the closed half itself half "yes" and half "no", so that guessing a
constant answer cannot look like skill. Train questions come from easy-vqa's train images; val and
test come from disjoint halves of its test images, so no image is shared between splits.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from eas.core.io import write_json
from eas.data._common import (
    DatasetError,
    DatasetNotFound,
    Example,
    check_split,
    read_json,
    require_dir,
    save_image,
    seeded_rng,
    take,
)

LAYOUT = (
    "root/train.json, root/validate.json, root/test.json (JSON lists of {img_name, question, answer, "
    "q_lang, answer_type: OPEN|CLOSED, qid, ...}) and the images at root/imgs/{img_name}"
)
SPLIT_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
REQUIRED_FIELDS = ("img_name", "question", "answer", "answer_type")
DEFAULT_SIZES = {"train": 2000, "val": 300, "test": 500}
# Slake marks each question OPEN or CLOSED, so the prompt can say which kind of reply is expected.
INSTRUCTION = {"open": "Reply with just one word or a short phrase.", "closed": "Answer yes or no."}


def format_prompt(question: str, answer_type: str = "open") -> str:
    return f"{question.strip()}\n{INSTRUCTION[answer_type]}"


def to_example(root: Path, index: int, item: dict, source: Path) -> Example:
    if not isinstance(item, dict):
        raise DatasetError(f"entry {index} of {source} is not an object; expected layout: {LAYOUT}")
    missing = [f for f in REQUIRED_FIELDS if f not in item]
    if missing:
        raise DatasetError(f"entry {index} of {source} lacks fields {missing}; expected layout: {LAYOUT}")
    answer_type = str(item["answer_type"]).lower()
    if answer_type not in ("open", "closed"):
        raise DatasetError(f"entry {index} of {source}: answer_type {item['answer_type']!r} is not OPEN or CLOSED")
    image = root / "imgs" / item["img_name"]
    if not image.is_file():
        raise DatasetNotFound(f"image {image} (entry {index} of {source}) does not exist; expected layout: {LAYOUT}")
    answer = str(item["answer"]).strip().lower()
    return Example(
        uid=str(item.get("qid", index)),
        prompt=format_prompt(item["question"], answer_type),
        target=answer,
        answer=answer,
        image=str(image.resolve()),
        meta={"answer_type": answer_type},
    )


def load(root: Path, split: str, *, limit: int | None = None) -> list[Example]:
    check_split(split)
    root = require_dir(Path(root), LAYOUT)
    source = root / SPLIT_FILES[split]
    items = read_json(source, LAYOUT)
    if not isinstance(items, list):
        raise DatasetError(f"{source} must hold a JSON list; expected layout: {LAYOUT}")
    # filter before `limit`, so limit counts English questions
    english = [(i, item) for i, item in enumerate(items)
               if not isinstance(item, dict) or item.get("q_lang", "en") == "en"]
    return [to_example(root, i, item, source) for i, item in take(english, limit)]


# ----------------------------------------------------------------------------------------------
# the analog


def easy_vqa_questions(train: bool) -> list[tuple[str, str, int, str]]:
    """(question, answer, image id, image path) for one easy-vqa split."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_train_questions() if train else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if train else easy_vqa.get_test_image_paths()
    return [(q, a, i, paths[i]) for q, a, i in zip(questions, answers, image_ids)]


def balanced_sample(questions: list, n: int, rng) -> list:
    """n questions: half open, a quarter closed "yes", a quarter closed "no" (as far as they exist)."""
    pools = {
        "open": [q for q in questions if q[1] not in ("yes", "no")],
        "yes": [q for q in questions if q[1] == "yes"],
        "no": [q for q in questions if q[1] == "no"],
    }
    wanted = {"open": n - 2 * (n // 4), "yes": n // 4, "no": n // 4}
    picked = []
    for kind, pool in pools.items():
        if wanted[kind] > len(pool):
            raise DatasetError(f"easy-vqa has only {len(pool)} {kind} questions for this split; "
                               f"asked for {wanted[kind]}")
        picked += rng.sample(pool, wanted[kind])
    rng.shuffle(picked)
    return picked


def write_analog(root: Path, seed: int, sizes: dict[str, int]) -> None:
    train = easy_vqa_questions(train=True)
    held_out = easy_vqa_questions(train=False)
    held_out_images = sorted({q[2] for q in held_out})
    seeded_rng(seed, "vqa", "images").shuffle(held_out_images)
    val_images = set(held_out_images[: len(held_out_images) // 2])
    pools = {
        "train": train,
        "val": [q for q in held_out if q[2] in val_images],
        "test": [q for q in held_out if q[2] not in val_images],
    }
    image_offset = {"train": 0, "val": 100_000, "test": 100_000}  # keeps img_ids of the two easy-vqa sets apart
    qid, written = 0, set()
    for split, pool in pools.items():
        entries = []
        for question, answer, image_id, path in balanced_sample(pool, sizes[split], seeded_rng(seed, "vqa", split)):
            img_id = image_offset[split] + image_id
            img_name = f"xmlab{img_id}/source.jpg"
            if img_name not in written:
                rgb = Image.open(path).convert("RGB")
                save_image(rgb, root / "imgs" / img_name, "JPEG", quality=95, subsampling=0)
                written.add(img_name)
            closed = answer in ("yes", "no")
            entries.append({
                "img_id": img_id,
                "img_name": img_name,
                "question": question[0].upper() + question[1:],
                "answer": answer,
                "q_lang": "en",
                "location": "Synthetic",
                "modality": "Drawing",
                "answer_type": "CLOSED" if closed else "OPEN",
                "base_type": "vqa",
                "content_type": "Presence" if closed else (
                    "Shape" if answer in ("circle", "rectangle", "triangle") else "Color"),
                "triple": ["vhead", "_", "_"],
                "qid": qid,
            })
            qid += 1
        write_json(root / SPLIT_FILES[split], entries)
