"""Turning generated text into the paper's metric columns. Pure functions: no model, no generation.

Parsing is deterministic and strict: an answer that cannot be read counts as wrong (the reference
code picked a random option instead, which inflates accuracy by chance).
"""

from __future__ import annotations

import math
import re
import string

import pandas as pd

from eas.data import Example

METRIC_COLUMNS = {
    "scienceqa": ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"],
    "vqa": ["Open", "Closed", "Avg", "Open (exact)"],
    "classification": ["Acc"],
}

ANSWER_PHRASE = re.compile(r"the answer is\s*:?\s*", re.IGNORECASE)
PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")
BARE_LETTER = re.compile(r"([A-Z])(?=[\s.,:;)!]|$)")  # upper case only: "The answer is a dog" is not (A)
ARTICLES = re.compile(r"\b(a|an|the)\b")


def check_task(task: str) -> None:
    if task not in METRIC_COLUMNS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(METRIC_COLUMNS)}")


def normalise(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed."""
    text = text.lower().translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(ARTICLES.sub(" ", text).split())


def first_line(text: str) -> str:
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def parse_choice(text: str, choices: list[str]) -> str | None:
    """Option letter stated by `text`, or None. A letter beyond the options is None, not a guess."""
    letters = "".join(chr(ord("A") + i) for i in range(len(choices)))
    whole = text.strip().rstrip(".")
    if re.fullmatch(r"\(?[A-Z]\)?", whole):  # a bare "B" or "(B)" reply
        letter = whole.strip("()")
        return letter if letter in letters else None
    phrase = ANSWER_PHRASE.search(text)
    if phrase is None:
        return None
    rest = text[phrase.end() :]
    for pattern in (PAREN_LETTER, BARE_LETTER):
        match = pattern.match(rest)
        if match:
            letter = match.group(1).upper()
            return letter if letter in letters else None
    # "The answer is <option text>": the longest option that the statement begins with
    said = normalise(rest)
    matches = [(len(normalise(c)), i) for i, c in enumerate(choices)
               if normalise(c) and (said + " ").startswith(normalise(c) + " ")]
    return letters[max(matches)[1]] if matches else None


def parse_class(text: str, classes: list[str]) -> str | None:
    said = normalise(first_line(text))
    by_form = {normalise(c): c for c in classes}
    if said in by_form:
        return by_form[said]
    # otherwise the class named earliest in the whole reply
    # (longest name on a tie: "dense residential" over "residential")
    padded = " " + normalise(text) + " "
    found = [(padded.find(" " + form + " "), -len(form), name) for form, name in by_form.items()
             if " " + form + " " in padded]
    return min(found)[2] if found else None


def parse_vqa(text: str, example: Example) -> str | None:
    """Closed questions: the first "yes" or "no" said as a word ("The answer is no." reads no).
    Open questions: the reply's first line, normalised; `is_correct` then scores it by recall."""
    said = normalise(first_line(text))
    if example.meta.get("answer_type") == "closed":
        words = [w for w in said.split() if w in ("yes", "no")]
        return words[0] if words else None
    return said or None


def open_answer_recall(parsed: str, answer: str) -> float:
    """Share of the gold answer's words present in the reply: LLaVA-Med's score for open Slake /
    VQA-RAD answers. An open answer counts as correct at full recall ("The circle is gray." for
    "gray"); `exact` in the per-example table keeps the stricter whole-reply match as well."""
    gold = normalise(answer).split()
    said = set(parsed.split())
    return sum(w in said for w in gold) / len(gold) if gold else 0.0


def parse_answer(task: str, text: str, example: Example) -> str | None:
    check_task(task)
    if task == "scienceqa":
        choices = example.meta.get("choices") or [""] * int(example.meta["n_choices"])
        return parse_choice(text, choices)
    if task == "vqa":
        return parse_vqa(text, example)
    return parse_class(text, example.meta["classes"])


def is_correct(task: str, parsed: str | None, example: Example) -> bool:
    if parsed is None:
        return False
    if task == "vqa":
        if example.meta.get("answer_type") == "closed":
            return parsed == normalise(example.answer)
        return open_answer_recall(parsed, example.answer) == 1.0
    if task == "classification":
        return normalise(parsed) == normalise(example.answer)
    return parsed == example.answer


def score(task: str, examples: list[Example], generations: list[str]) -> pd.DataFrame:
    """One row per example: uid, prediction (raw text), parsed, correct, answer, and the scalar meta fields."""
    check_task(task)
    if len(examples) != len(generations):
        raise ValueError(f"{len(examples)} examples but {len(generations)} generations")
    rows = []
    for example, text in zip(examples, generations):
        parsed = parse_answer(task, text, example)
        meta = {k: v for k, v in example.meta.items() if isinstance(v, (str, int, float, bool))}
        exact = parsed is not None and normalise(str(parsed)) == normalise(example.answer)
        rows.append({"uid": example.uid, "prediction": text, "parsed": parsed,
                     "correct": is_correct(task, parsed, example), "exact": exact, "answer": example.answer, **meta})
    return pd.DataFrame(rows)


def percent(correct: pd.Series) -> float:
    return float(100.0 * correct.mean()) if len(correct) else math.nan


def summarise(task: str, per_example: pd.DataFrame) -> dict[str, float]:
    """The paper's columns in percent; a column with no items is NaN."""
    check_task(task)
    df = per_example
    ok = df["correct"].astype(bool)
    if task == "classification":
        return {"Acc": percent(ok)}
    if task == "vqa":
        kind = df["answer_type"]
        exact = df["exact"].astype(bool)
        return {"Open": percent(ok[kind == "open"]), "Closed": percent(ok[kind == "closed"]), "Avg": percent(ok),
                "Open (exact)": percent(exact[kind == "open"])}
    text, image = df["has_text"].astype(bool), df["has_image"].astype(bool)
    groups = {
        "NAT": df["subject"] == "NAT",
        "SOC": df["subject"] == "SOC",
        "LAN": df["subject"] == "LAN",
        "TXT": text,
        "IMG": image,
        "NO": ~text & ~image,
        "G1-6": df["grade"] == "G1-6",
        "G7-12": df["grade"] == "G7-12",
    }
    summary = {name: percent(ok[mask]) for name, mask in groups.items()}
    summary["Avg"] = percent(ok)
    return summary


def chance_odds(task: str, examples: list[Example]) -> list[float]:
    """Each item's probability of being right by uniform guessing among its possible answers.

    scienceqa: 1 / number of options; vqa: 1/2 for closed items and 1 / (distinct open answers among
    `examples`) for open ones; classification: 1 / number of classes.
    """
    check_task(task)
    if task == "scienceqa":
        return [1 / int(e.meta["n_choices"]) for e in examples]
    if task == "classification":
        return [1 / len(e.meta["classes"]) for e in examples]
    open_answers = {normalise(e.answer) for e in examples if e.meta["answer_type"] == "open"}
    return [0.5 if e.meta["answer_type"] == "closed" else 1 / len(open_answers) for e in examples]


def chance_accuracy(task: str, examples: list[Example]) -> float:
    """Expected accuracy, in percent, of guessing uniformly among the possible answers of each item."""
    odds = chance_odds(task, examples) if examples else []
    return 100.0 * sum(odds) / len(odds) if odds else math.nan


def chance_z(task: str, examples: list[Example], correct) -> float:
    """How many standard deviations the number of correct answers lies above uniform guessing
    (normal approximation of the Poisson-binomial count): a z above 2 is unlikely to be luck."""
    odds = chance_odds(task, examples)
    variance = sum(p * (1 - p) for p in odds)
    return (float(sum(bool(c) for c in correct)) - sum(odds)) / math.sqrt(variance) if variance else math.nan
