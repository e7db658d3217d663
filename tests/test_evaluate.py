"""Answer parsing and metric columns, on hand-made examples whose right numbers are known."""

from __future__ import annotations

import math

import pytest

from eas.data import Example
from eas.data.evaluate import METRIC_COLUMNS, chance_accuracy, normalise, parse_answer, score, summarise

CLASSES = ["airport", "bare land", "baseball field", "dense residential", "residential"]


def sqa(uid="1", answer="B", choices=("circle", "red square", "triangle"), subject="NAT", text=False, image=False,
        grade="G1-6"):
    meta = {"subject": subject, "has_text": text, "has_image": image, "grade": grade,
            "n_choices": len(choices), "choices": list(choices)}
    return Example(uid, "prompt", f"The answer is ({answer}). BECAUSE: why", answer, None, meta)


def vqa(uid, answer, kind):
    return Example(uid, "q", answer, answer, None, {"answer_type": kind})


def aid(uid, label):
    return Example(uid, "which?", label, label, None, {"label": label, "classes": CLASSES})


@pytest.mark.parametrize("text, parsed", [
    ("The answer is (B). BECAUSE: it has three sides.", "B"),
    ("the answer is (b).", "B"),
    ("The answer is B.", "B"),
    ("The answer is C, because ...", "C"),
    ("Let me think. The answer is (A). Later: the answer is (C).", "A"),  # first statement wins
    ("The answer is (D).", None),  # only 3 options: out of range is not mapped to anything
    ("The answer is E.", None),
    ("The answer is red square.", "B"),  # the option's text instead of its letter
    ("The answer is a triangle because it has corners.", "C"),  # articles ignored, not read as (A)
    ("(B)", "B"),
    ("B", "B"),
    ("I think it is the triangle.", None),  # no statement of an answer: wrong, never a guess
    ("", None),
    ("The answer is unclear.", None),
])
def test_parse_scienceqa(text, parsed):
    assert parse_answer("scienceqa", text, sqa()) == parsed


def test_parse_vqa():
    closed, open_ = vqa("1", "yes", "closed"), vqa("2", "x-ray", "open")
    assert parse_answer("vqa", "Yes, there is a circle.", closed) == "yes"
    assert parse_answer("vqa", "No.\nBecause...", closed) == "no"
    assert parse_answer("vqa", "The Circle.\nmore text", open_) == "circle"
    assert parse_answer("vqa", "X-Ray", open_) == normalise("x-ray")
    assert parse_answer("vqa", "   \n", open_) is None
    assert parse_answer("vqa", "The answer is no, there is none.", closed) == "no"
    assert parse_answer("vqa", "I cannot tell.", closed) is None  # unparsable: wrong, never a guess


def test_open_answers_score_by_recall_and_exact():
    gray, ray = vqa("1", "gray", "open"), vqa("2", "x ray", "open")
    df = score("vqa", [gray, ray, gray], ["The circle is gray.", "An x-ray image", "It is grey."])
    assert df.correct.tolist() == [True, True, False]
    assert df.exact.tolist() == [False, False, False]
    assert summarise("vqa", score("vqa", [gray], ["Gray"]))["Open (exact)"] == 100.0


def test_parse_classification():
    e = aid("1", "residential")
    assert parse_answer("classification", "Dense Residential", e) == "dense residential"  # exact beats contained
    assert parse_answer("classification", "residential.", e) == "residential"
    assert parse_answer("classification", "It looks like a baseball field, maybe an airport", e) == "baseball field"
    # longest at a position
    assert parse_answer("classification", "This is dense residential housing", e) == "dense residential"
    assert parse_answer("classification", "a forest", e) is None
    assert parse_answer("classification", "airports", e) is None  # whole words only


def test_scienceqa_metrics_by_hand():
    examples = [
        sqa("1", "A", subject="NAT", image=True, grade="G1-6"),
        sqa("2", "B", subject="NAT", text=True, image=True, grade="G7-12"),
        sqa("3", "C", subject="SOC", text=True, grade="G1-6"),
        sqa("4", "A", subject="LAN", grade="G7-12"),
    ]
    generations = ["The answer is (A).", "The answer is (C).", "The answer is C.", "no idea"]
    df = score("scienceqa", examples, generations)
    assert list(df["correct"]) == [True, False, True, False]
    assert list(df["parsed"][:3]) == ["A", "C", "C"] and df["parsed"].isna().tolist() == [False] * 3 + [True]
    assert {"uid", "prediction", "parsed", "correct", "subject", "grade", "n_choices"} <= set(df.columns)
    s = summarise("scienceqa", df)
    assert list(s) == METRIC_COLUMNS["scienceqa"]
    assert s == {"NAT": 50.0, "SOC": 100.0, "LAN": 0.0, "TXT": 50.0, "IMG": 50.0, "NO": 0.0,
                 "G1-6": 100.0, "G7-12": 0.0, "Avg": 50.0}


def test_empty_column_is_nan():
    df = score("scienceqa", [sqa("1", "A", subject="NAT")], ["The answer is (A)."])
    s = summarise("scienceqa", df)
    assert s["NAT"] == 100.0 and math.isnan(s["SOC"]) and math.isnan(s["IMG"]) and math.isnan(s["G7-12"])


def test_vqa_and_classification_metrics_by_hand():
    examples = [vqa("1", "yes", "closed"), vqa("2", "no", "closed"), vqa("3", "circle", "open"),
                vqa("4", "red", "open"), vqa("5", "triangle", "open")]
    df = score("vqa", examples, ["yes", "Yes.", "a circle", "blue", "Triangle!"])
    assert summarise("vqa", df) == pytest.approx({"Open": 200 / 3, "Closed": 50.0, "Avg": 60.0,
                                                  "Open (exact)": 200 / 3})
    df = score("classification", [aid("1", "airport"), aid("2", "bare land")], ["Airport", "residential"])
    assert summarise("classification", df) == {"Acc": 50.0}


def test_chance_accuracy():
    assert chance_accuracy("scienceqa",
                           [sqa(choices=("a", "b")), sqa(choices=("a", "b", "c", "d"))]) == pytest.approx(37.5)
    assert chance_accuracy("classification", [aid("1", "airport")]) == pytest.approx(20.0)
    assert chance_accuracy("vqa", [vqa("1", "yes", "closed"), vqa("2", "circle", "open"),
                                   vqa("3", "red", "open")]) == pytest.approx(100 * (0.5 + 0.5 + 0.5) / 3)


def test_bad_calls():
    with pytest.raises(ValueError, match="unknown task"):
        score("mnist", [], [])
    with pytest.raises(ValueError, match="2 generations"):
        score("vqa", [vqa("1", "yes", "closed")], ["yes", "no"])
