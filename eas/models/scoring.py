"""What a teacher-forced forward says about the answer letter of a multiple-choice target.

A ScienceQA target is "The answer is (X). BECAUSE: ..." and the training loss averages over every target
token, so the one token that decides the score (the letter) is ~1.5% of the loss: the mean loss can fall
to ~0.1 by copying the rationale while the letter stays at chance. These functions split the loss into
the letter's token and the rest, and read off which option letter the model prefers at the letter's slot:

    rows = letter_scores(model, examples)       # one dict per example
    letter_summary(rows)                        # letter_loss, rest_loss, letter_acc, letter_chance

The letter's slot is found by tokenising the target once per option letter and taking the first answer
token at which the variants differ, so no assumption is made about how a tokenizer splits "(A)".
Examples need `meta["n_choices"]` (ScienceQA's loader sets it) and a target naming their `answer` letter.

A QCM-A-text target ("The answer is eagle.") names the option's words instead of its letter; there the
variants are the target with each option's words (`meta["choices"]`), and the slot is the first token at
which they differ: the token at which greedy decoding commits to an option. Options that share that token
(rare: "North America" and "North Korea") count as one there, so chance is 1 / (distinct tokens).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eas.data.scienceqa import TEXT_ANSWER_PREFIX, option_letters
from eas.models.prompt import prompt_context


class LetterError(ValueError):
    """An example whose target has no answer letter to score."""


@dataclass(frozen=True)
class LetterSlot:
    slot: int  # index among the example's answer (label) tokens
    option_ids: tuple[int, ...]  # the token each option letter puts at that slot, in option order
    answer_index: int  # which option is correct


def _answer_tokens(model, examples) -> list[list[int]]:
    batch = model.collate(examples, with_target=True)
    return [row[row != -100].tolist() for row in batch.labels.cpu()]


def letter_slot(model, example) -> LetterSlot:
    """Where the answer letter sits among `example`'s target tokens, and each option's token there."""
    targets, answer_index = _option_targets(example)
    rows = _answer_tokens(model, [dataclasses.replace(example, target=t) for t in targets])
    width = min(map(len, rows))
    differs = [j for j in range(width) if len({r[j] for r in rows}) > 1]
    if not differs:
        raise LetterError(f"example {example.uid}: its options tokenise identically in its target")
    slot = differs[0]
    return LetterSlot(slot=slot, option_ids=tuple(r[slot] for r in rows), answer_index=answer_index)


def _option_targets(example) -> tuple[list[str], int]:
    """`example`'s target as it would read for each option, in option order, and the correct option's index:
    the letter swapped ("(B)" -> "(A)", ...) where the target names one, else the option's words swapped
    (QCM-A-text)."""
    n = example.meta.get("n_choices")
    letters = option_letters(n) if isinstance(n, int) and n >= 2 else ""
    if example.answer not in letters:
        raise LetterError(f"example {example.uid}: answer {example.answer!r} names no option letter among {n!r} "
                          "options (meta['n_choices'])")
    index = letters.index(example.answer)
    marker = f"({example.answer})"
    if marker in example.target:
        return [example.target.replace(marker, f"({x})", 1) for x in letters], index
    choices = example.meta.get("choices")
    said = f"{TEXT_ANSWER_PREFIX}{choices[index].strip()}" if isinstance(choices, list) and len(choices) == n else None
    if said is None or not example.target.startswith(said):
        raise LetterError(f"example {example.uid}: target {example.target[:60]!r} names no option letter "
                          f"'({example.answer})' nor its option's words (meta['choices'])")
    rest = example.target[len(said):]
    return [f"{TEXT_ANSWER_PREFIX}{c.strip()}{rest}" for c in choices], index


@torch.no_grad()
def letter_scores(model, examples, *, batch_size: int = 8, slots: list[LetterSlot] | None = None) -> list[dict]:
    """Per example: the letter token's cross-entropy (full vocabulary), the mean over the other target
    tokens, and whether the correct letter has the highest logit among the option letters. `slots`: the
    examples' `letter_slot`s, when the caller scores the same examples repeatedly (they depend on the text only)."""
    slots = slots if slots is not None else [letter_slot(model, ex) for ex in examples]
    was_training = model.training
    model.eval()
    rows = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = model.collate(chunk, with_target=True)  # on the model's device
        with prompt_context(batch.prompt_mask, batch.attention_mask):
            hidden, _ = model(batch.input_ids, batch.attention_mask, batch.image_features)
        targets = batch.labels[:, 1:]
        for b, (ex, ls) in enumerate(zip(chunk, slots[start:start + batch_size])):
            where = (targets[b] != -100).nonzero().squeeze(-1)
            logits = model.lm_head(hidden[b, where]).float()  # position t predicts target token t + 1
            ce = F.cross_entropy(logits, targets[b, where], reduction="none")
            rest = torch.cat([ce[:ls.slot], ce[ls.slot + 1:]])
            distinct = sorted(set(ls.option_ids))  # options sharing their first distinct token count once
            option_logits = logits[ls.slot, distinct]
            right = distinct.index(ls.option_ids[ls.answer_index])
            rows.append({"uid": ex.uid, "letter_loss": float(ce[ls.slot]),
                         "rest_loss": float(rest.mean()) if len(rest) else math.nan,
                         "letter_correct": bool(int(option_logits.argmax()) == right),
                         "letter_chance": 1.0 / len(distinct)})
    model.train(was_training)
    return rows


def letter_summary(rows: list[dict]) -> dict:
    """Means over examples: letter_loss, rest_loss, letter_acc and its chance level (letter_chance)."""
    if not rows:
        raise LetterError("no examples to summarise")
    n = len(rows)
    return {"letter_loss": sum(r["letter_loss"] for r in rows) / n,
            "rest_loss": sum(r["rest_loss"] for r in rows) / n,
            "letter_acc": sum(r["letter_correct"] for r in rows) / n,
            "letter_chance": sum(r["letter_chance"] for r in rows) / n}
