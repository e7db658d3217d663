"""The answer letter's share of a ScienceQA target, read apart from the rest (issue 21): the two answer formats,
the letter's loss and accuracy against a hand computation, and the monitor's file and row columns."""

from __future__ import annotations

import dataclasses
import math
import os

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from eas.core import io
from eas.data import DatasetError, build_task, load_task, scienceqa
from eas.models.scoring import LetterError, letter_scores, letter_slot, letter_summary
from eas.study import experiments
from eas.study.experiments import ExperimentError, ExperimentSpec, run_experiment

SIZES = {"train": 24, "val": 8, "test": 8}


@pytest.fixture(scope="module")
def sqa_root(tmp_path_factory):
    return build_task("scienceqa", tmp_path_factory.mktemp("sqa") / "sqa", seed=0, **SIZES)


def test_answer_formats(sqa_root):
    ale = load_task("scienceqa", "train", sqa_root, limit=6)
    only = load_task("scienceqa", "train", sqa_root, limit=6, answer_format="QCM-A")
    for a, b in zip(ale, only):
        assert a.uid == b.uid and a.answer == b.answer and a.image == b.image and a.meta == b.meta
        assert b.target == f"The answer is ({b.answer})."
        assert a.target.startswith(b.target[:-1] + ". BECAUSE: ") and len(a.target) > len(b.target) + 10
        assert a.prompt.endswith(scienceqa.INSTRUCTIONS["QCM-ALE"])
        assert b.prompt.endswith(scienceqa.INSTRUCTIONS["QCM-A"])
        assert a.prompt.rsplit("\n", 1)[0] == b.prompt.rsplit("\n", 1)[0]  # the same question and options
    with pytest.raises(DatasetError, match="answer_format 'QCM-LEA'.*QCM-ALE"):
        load_task("scienceqa", "train", sqa_root, answer_format="QCM-LEA")


def _letter_position_by_decoding(model, example) -> int:
    """The first target token after which the decoded text shows "(X": found without option variants."""
    ids = model.target_ids(example.target)
    for j in range(len(ids)):
        if f"({example.answer}" in model.tokenizer.decode(ids[: j + 1]):
            return j
    raise AssertionError("letter not found")


@pytest.mark.parametrize("answer_format", scienceqa.LETTER_FORMATS)
def test_letter_loss_and_accuracy_match_a_hand_computation(tiny_mini_llava, sqa_root, answer_format):
    model = tiny_mini_llava
    examples = load_task("scienceqa", "test", sqa_root, answer_format=answer_format)
    rows = letter_scores(model, examples, batch_size=3)  # batches of 3: left padding must not matter
    assert [r["uid"] for r in rows] == [e.uid for e in examples]
    for ex, row in zip(examples, rows):
        slot = letter_slot(model, ex)
        assert slot.slot == _letter_position_by_decoding(model, ex)
        assert len(set(slot.option_ids)) == ex.meta["n_choices"]
        batch = model.collate([ex], with_target=True)  # alone: no padding at all
        with torch.no_grad():
            hidden, _ = model(batch.input_ids, batch.attention_mask, batch.image_features,
                              prompt_mask=batch.prompt_mask)
            n_target = len(model.target_ids(ex.target))
            logits = model.lm_head(hidden[0, -n_target - 1:-1]).float()
        target = torch.tensor(model.target_ids(ex.target))
        ce = F.cross_entropy(logits, target, reduction="none")
        assert row["letter_loss"] == pytest.approx(float(ce[slot.slot]), abs=1e-4)
        rest = torch.cat([ce[: slot.slot], ce[slot.slot + 1:]])
        if len(rest):
            assert row["rest_loss"] == pytest.approx(float(rest.mean()), abs=1e-4)
        option_logits = logits[slot.slot, list(slot.option_ids)]
        assert row["letter_correct"] == (int(option_logits.argmax()) == slot.answer_index)
        assert row["letter_chance"] == pytest.approx(1 / ex.meta["n_choices"])


def _scored_with_boost(model, example, token: int) -> dict:
    """letter_scores of one example with `token`'s logit raised by a lot at every position (a hook on the LM head)."""

    def boost(_module, _inputs, out):
        out = out.clone()
        out[..., token] += 1e4
        return out

    handle = model.lm_head.register_forward_hook(boost)
    try:
        (row,) = letter_scores(model, [example])
    finally:
        handle.remove()
    return row


def test_a_model_that_prefers_the_right_letter_scores_every_item(tiny_mini_llava, sqa_root):
    model = tiny_mini_llava
    examples = load_task("scienceqa", "test", sqa_root, answer_format="QCM-A")
    before = letter_summary(letter_scores(model, examples))
    # Raise the correct letter's logit by a lot, at every position (a hook on the LM head), one item at a time.
    for ex in examples:
        slot = letter_slot(model, ex)
        row = _scored_with_boost(model, ex, slot.option_ids[slot.answer_index])
        assert row["letter_correct"] and row["letter_loss"] < 1e-3
    assert 0.0 <= before["letter_acc"] <= 1.0 and before["letter_loss"] > 0


def test_text_answers_are_scored_at_the_first_token_where_the_options_differ(tiny_mini_llava, sqa_root):
    """QCM-A-text ("The answer is eagle."): the slot is where greedy decoding commits to an option; options that
    share that token count once, and a model boosted towards the right option's token there scores every item."""
    model = tiny_mini_llava
    examples = load_task("scienceqa", "test", sqa_root, answer_format="QCM-A-text")
    rows = letter_scores(model, examples, batch_size=3)
    for ex, row in zip(examples, rows):
        slot = letter_slot(model, ex)
        ids = model.target_ids(ex.target)
        assert model.tokenizer.decode(ids[:slot.slot]).strip().startswith("The answer is")
        choice = ex.meta["choices"][slot.answer_index]
        assert choice.strip() in ex.target and ids[slot.slot] == slot.option_ids[slot.answer_index]
        variants = [model.target_ids(f"The answer is {c.strip()}.") for c in ex.meta["choices"]]
        assert all(v[:slot.slot] == ids[:slot.slot] for v in variants)  # a shared prefix up to the slot
        assert len({v[slot.slot] for v in variants}) > 1
        assert row["letter_chance"] == pytest.approx(1 / len(set(slot.option_ids)))
        boosted = _scored_with_boost(model, ex, slot.option_ids[slot.answer_index])
        assert boosted["letter_correct"] and boosted["letter_loss"] < 1e-3
    wrong_words = dataclasses.replace(examples[0], target="The answer is something else entirely.")
    with pytest.raises(LetterError, match="nor its option's words"):
        letter_slot(model, wrong_words)


def test_summary_and_bad_examples(tiny_mini_llava, sqa_root):
    examples = load_task("scienceqa", "test", sqa_root, limit=4, answer_format="QCM-A")
    summary = letter_summary(letter_scores(tiny_mini_llava, examples))
    assert set(summary) == {"letter_loss", "rest_loss", "letter_acc", "letter_chance"}
    assert 0 < summary["letter_chance"] < 1 and summary["letter_loss"] > 0
    with pytest.raises(LetterError, match="no examples"):
        letter_summary([])
    no_letter = dataclasses.replace(examples[0], target="A yellow circle.")
    with pytest.raises(LetterError, match=f"example {examples[0].uid}.*names no option letter"):
        letter_scores(tiny_mini_llava, [no_letter])


def test_answer_format_in_the_spec_key():
    base = ExperimentSpec(task="scienceqa", method="lora")
    # The default is left out of the key, so runs keyed before the field existed keep their keys.
    legacy = {k: v for k, v in base.to_dict().items()
              if k not in experiments.NOT_IN_KEY and k not in ("answer_format", "dataset")}
    assert base.key() == io.key_of(legacy)
    assert base.replace(answer_format="QCM-A").key() != base.key()
    assert base.replace(letter_every=5, letter_items=8).key() == base.key()  # monitoring changes no result
    vqa = ExperimentSpec(task="vqa", method="lora", answer_format="QCM-A")
    assert vqa.answer_format == "QCM-ALE" and vqa.key() == ExperimentSpec(task="vqa", method="lora").key()
    with pytest.raises(ExperimentError, match="answer_format 'QCM'"):
        ExperimentSpec(task="scienceqa", method="lora", answer_format="QCM")
    with pytest.raises(ExperimentError, match="letter_every must be an integer >= 0"):
        ExperimentSpec(task="scienceqa", method="lora", letter_every=-1)


def test_fine_tuning_logs_the_letter(tmp_path, monkeypatch, tokenizer):
    from eas.models.mini_llava import MiniLlava, tiny_language_model

    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    if "EAS_CACHE" not in os.environ:
        monkeypatch.setenv("EAS_CACHE", str(io.REPO_ROOT / "data" / "cache"))

    def factory():
        torch.manual_seed(0)
        return MiniLlava(tiny_language_model(seed=0, layers=4), tokenizer, visual_grid=2).eval()

    s = ExperimentSpec(task="scienceqa", method="lora", model="tiny", sizes=SIZES, n_eval=8, heldout=8, steps=5,
                       batch_size=4, lr=1e-2, max_new_tokens=8, answer_format="QCM-A", letter_every=2, letter_items=6)
    row = run_experiment(s, model_factory=factory, progress=False)
    letters = pd.read_csv(s.run_dir() / experiments.LETTERS_FILE)
    assert list(letters["step"]) == [2, 4, 5]  # the cadence, then the last step
    for split in ("train", "val"):
        for col in ("letter_loss", "rest_loss", "letter_acc", "letter_chance"):
            assert letters[f"{split}_{col}"].notna().all(), (split, col)
    assert row["answer_format"] == "QCM-A" and row["val_letter_acc"] == letters["val_letter_acc"].iloc[-1]
    assert math.isfinite(row["val_letter_loss"])
    vqa = run_experiment(s.replace(task="vqa", sizes={"train": 24, "val": 8, "test": 8}), model_factory=factory,
                         progress=False)
    assert math.isnan(vqa["val_letter_acc"]) and vqa["answer_format"] is None
    assert not (ExperimentSpec.from_dict({**s.to_dict(), "task": "vqa", "sizes": {"train": 24, "val": 8, "test": 8}})
                .run_dir() / experiments.LETTERS_FILE).exists()
