"""Stage-1 alignment of the mini-LLaVA projector (as LLaVA-1.5's pre-training stage).

Only the projector trains; the language model and the vision encoder stay frozen. The image-text
pairs are short captions of easy-vqa *training* images, built from the shape and colour their
questions reveal. The downstream tasks evaluate on easy-vqa *test* images, so zero-shot results
are never measured on an image the projector saw.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import torch
from tqdm import tqdm  # text bars: they also reach papermill's log and the book

from eas.data import Example
from eas.models.mini_llava import answer_loss

SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")

_ASK = ("Describe the image.", "What do you see in the picture?", "Give a short caption for this image.")
_SAY = ("A {c} {s}.", "The picture shows a {c} {s}.", "There is a {c} {s} in the image.")


def easy_vqa_attributes(split: str = "train") -> dict[str, tuple[str, str]]:
    """image path -> (shape, colour), read off the answers of easy-vqa's own questions."""
    import easy_vqa

    questions = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    found: dict[int, dict[str, str]] = defaultdict(dict)
    for _, answer, image_id in zip(*questions):
        if answer in SHAPES:
            found[image_id]["shape"] = answer
        elif answer in COLOURS:
            found[image_id]["colour"] = answer
    return {paths[i]: (f["shape"], f["colour"]) for i, f in sorted(found.items()) if len(f) == 2}


def caption_examples(n: int, seed: int = 0):

    rng = random.Random(seed)
    items = sorted(easy_vqa_attributes("train").items())
    rng.shuffle(items)
    out = []
    for k, (path, (shape, colour)) in enumerate(items[:n]):
        out.append(Example(
            uid=f"caption-{k}", prompt=rng.choice(_ASK), target=rng.choice(_SAY).format(c=colour, s=shape),
            answer=f"{colour} {shape}", image=path, meta={},
        ))
    return out


def train_projector(model, examples, *, steps: int, batch_size: int = 16, lr: float = 1e-3,
                    warmup: int = 20, seed: int = 0, progress: bool = True) -> list[float]:
    """Train `model.projector` on teacher-forced captions; returns the loss per step."""

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    model.cache_features(examples, progress=progress)
    opt = torch.optim.AdamW(model.projector.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    model.train()
    bar = tqdm(range(steps), desc="align projector", disable=not progress)
    order: list[int] = []
    for _ in bar:
        if len(order) < batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch = model.collate([examples[i] for i in order[:batch_size]], with_target=True)
        order = order[batch_size:]
        loss = answer_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite alignment loss {loss.item()} at step {len(losses)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    model.projector.requires_grad_(False)
    return losses
