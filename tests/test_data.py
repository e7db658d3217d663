"""Dataset formats: the analogs round-trip through the real layouts, builds are deterministic, the
hand-written fixtures in the official formats load, and bad input fails with a clear error."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from eas.data import TASKS, DatasetError, Example, build_task, load_task
from eas.data._common import MARKER

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = {
    "scienceqa": {"train": 60, "val": 30, "test": 30},  # 30 = two cycles of the 15 templates
    "vqa": {"train": 40, "val": 20, "test": 20},
    "classification": {"per_class": 10},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("analogs")
    return {task: build_task(task, base / task, seed=0, **SMALL[task]) for task in TASKS}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# the analogs


@pytest.mark.parametrize("task", TASKS)
def test_analog_round_trips(task, built):
    for split in ("train", "val", "test"):
        examples = load_task(task, split, built[task])
        assert examples and all(isinstance(e, Example) for e in examples)
        assert len({e.uid for e in examples}) == len(examples)
        for e in examples:
            assert e.image is None or (Path(e.image).is_absolute() and Path(e.image).is_file())
            assert e.prompt and e.target and e.answer
    if task != "classification":
        assert len(load_task(task, "test", built[task])) == SMALL[task]["test"]


def test_scienceqa_layout_and_targets(built):
    root = built["scienceqa"]
    problems = json.loads((root / "problems.json").read_text())
    splits = json.loads((root / "pid_splits.json").read_text())
    for split, pids in splits.items():
        for pid in pids:
            problem = problems[pid]
            assert problem["split"] == split and 2 <= len(problem["choices"]) <= 5
            assert len(set(problem["choices"])) == len(problem["choices"])
            if problem["image"]:
                assert (root / "images" / split / pid / "image.png").is_file()
    for e in load_task("scienceqa", "test", root):
        assert e.target.startswith(f"The answer is ({e.answer}). BECAUSE: ")
        assert "ABCDE".index(e.answer) < e.meta["n_choices"]
        assert e.prompt.startswith("Context: ") and "\nQuestion: " in e.prompt and "\nOptions: (A) " in e.prompt


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_scienceqa_column_has_items(built, split):
    examples = load_task("scienceqa", split, built["scienceqa"])
    m = [e.meta for e in examples]
    assert {x["subject"] for x in m} == {"NAT", "SOC", "LAN"}
    assert any(x["has_text"] for x in m) and any(x["has_image"] for x in m)
    assert any(not x["has_text"] and not x["has_image"] for x in m)
    assert {x["grade"] for x in m} == {"G1-6", "G7-12"}


def test_rationales_are_long_and_specific(built):
    # Token count approximated by whitespace words (a BPE tokenizer gives ~1.3 tokens per English word),
    # so an average of >= 25 words is comfortably >= 20 tokens.
    solutions = [e.target.split("BECAUSE: ", 1)[1] for e in load_task("scienceqa", "train", built["scienceqa"])]
    assert statistics.mean(len(s.split()) for s in solutions) >= 25
    assert len(set(solutions)) > 0.8 * len(solutions)


def test_vqa_analog_is_balanced(built):
    examples = load_task("vqa", "train", built["vqa"])
    kinds = [e.meta["answer_type"] for e in examples]
    assert kinds.count("open") == kinds.count("closed") == 20
    closed = [e.answer for e in examples if e.meta["answer_type"] == "closed"]
    assert closed.count("yes") == closed.count("no")
    assert all(e.target == e.answer == e.answer.lower() for e in examples)


def test_vqa_splits_share_no_image(built):
    images = {s: {e.image for e in load_task("vqa", s, built["vqa"])} for s in ("train", "val", "test")}
    assert not images["train"] & images["test"] and not images["val"] & images["test"]


def test_classification_splits(built):
    root = built["classification"]
    assert len([p for p in root.iterdir() if p.is_dir()]) == 10
    assert (root / "Zebra" / "zebra_1.jpg").is_file()
    for fraction, n_train in ((0.2, 2), (0.5, 5)):
        parts = {s: load_task("classification", s, root, train_fraction=fraction) for s in ("train", "val", "test")}
        assert len(parts["train"]) == 10 * n_train and len(parts["val"]) == 10
        uids = [{e.uid for e in p} for p in parts.values()]
        assert sum(map(len, uids)) == len(set().union(*uids)) == 100  # a partition of all images
    e = parts["test"][0]
    assert e.target == e.answer == e.meta["label"] and e.meta["label"] in e.prompt


@pytest.mark.parametrize("task", TASKS)
def test_builds_are_deterministic_and_idempotent(task, built, tmp_path):
    again = build_task(task, tmp_path / task, seed=0, **SMALL[task])
    assert tree_bytes(again) == tree_bytes(built[task])
    marker = (again / MARKER).stat().st_mtime_ns
    build_task(task, again, seed=0, **SMALL[task])  # complete and same parameters: nothing rewritten
    assert (again / MARKER).stat().st_mtime_ns == marker
    assert [e.uid for e in load_task(task, "test", again)] == [e.uid for e in load_task(task, "test", built[task])]


def test_other_seed_or_size_rebuilds(built, tmp_path):
    root = build_task("vqa", tmp_path / "vqa", seed=0, **SMALL["vqa"])
    build_task("vqa", root, seed=1, **SMALL["vqa"])
    assert tree_bytes(root) != tree_bytes(built["vqa"])
    build_task("vqa", root, seed=0, train=4, val=4, test=4)
    assert len(load_task("vqa", "train", root)) == 4


def test_half_finished_build_is_not_trusted(tmp_path):
    root = tmp_path / "classification"
    root.mkdir()
    (root / "Bear").mkdir()  # looks like an interrupted build or someone else's data: no marker
    with pytest.raises(DatasetError, match="refusing"):
        build_task("classification", root, per_class=3)
    shutil.rmtree(root / "Bear")
    build_task("classification", root, per_class=3)
    (root / MARKER).write_text("{not json")
    build_task("classification", root, per_class=3)  # a corrupt marker means: build again
    assert json.loads((root / MARKER).read_text())["sizes"] == {"per_class": 3}


def test_limit(built):
    assert len(load_task("scienceqa", "train", built["scienceqa"], limit=7)) == 7
    assert load_task("vqa", "val", built["vqa"], limit=0) == []


# ---------------------------------------------------------------------------------------------
# the official formats, on hand-written fixtures


def test_scienceqa_fixture():
    root = FIXTURES / "scienceqa"
    train = load_task("scienceqa", "train", root)
    assert [e.uid for e in train] == ["7"]
    assert train[0].image == str((root / "images/train/7/image.png").resolve())
    assert train[0].meta == {"subject": "SOC", "has_text": False, "has_image": True, "grade": "G1-6",
                             "n_choices": 3, "choices": ["Oslo", "Madrid", "Cairo"]}
    assert train[0].answer == "A" and train[0].prompt.startswith("Context: N/A\n")
    test = load_task("scienceqa", "test", root)
    assert [e.answer for e in test] == ["A", "A"]
    assert test[1].image == str((root / "images/44/image.png").resolve())  # the images/{pid}/ layout
    assert test[1].meta["has_text"] and test[1].meta["has_image"] and test[1].meta["grade"] == "G7-12"
    assert test[0].image is None and "(D) 3°C" in test[0].prompt
    assert test[0].target.startswith("The answer is (A). BECAUSE: 38 degrees")
    assert load_task("scienceqa", "val", root)[0].meta["subject"] == "LAN"


def test_slake_fixture_keeps_english_only():
    root = FIXTURES / "slake"
    train = load_task("vqa", "train", root)
    assert [(e.uid, e.answer, e.meta["answer_type"]) for e in train] == [("1", "lung", "open"), ("2", "yes", "closed")]
    assert train[0].image == str((root / "imgs/xmlab1/source.jpg").resolve())
    assert [e.uid for e in load_task("vqa", "val", root)] == ["10"]
    assert [e.answer for e in load_task("vqa", "test", root)] == ["x-ray", "no"]


def test_aid_fixture():
    root = FIXTURES / "aid"
    train = load_task("classification", "train", root, train_fraction=0.5)
    assert len(train) == 6 and {e.answer for e in train} == {"airport", "bare land", "baseball field"}
    assert "bare land, baseball field" in train[0].prompt
    test = load_task("classification", "test", root, train_fraction=0.2)
    assert len(test) == 6
    assert load_task("classification", "test", root, seed=1) != load_task("classification", "test", root, seed=0)


# ---------------------------------------------------------------------------------------------
# bad input


def copy_fixture(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize("task", TASKS)
def test_missing_folder(task, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task(task, "train", tmp_path / "nowhere")


def test_unknown_task_or_split_or_size(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        load_task("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        build_task("mnist", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_task("scienceqa", "dev", FIXTURES / "scienceqa")
    with pytest.raises(ValueError, match="unknown sizes"):
        build_task("vqa", tmp_path / "x", per_class=3)


def test_problems_not_json(tmp_path):
    root = copy_fixture("scienceqa", tmp_path)
    (root / "problems.json").write_text("{oops")
    with pytest.raises(DatasetError, match="problems.json is not valid JSON"):
        load_task("scienceqa", "train", root)


def test_problem_missing_fields(tmp_path):
    root = copy_fixture("scienceqa", tmp_path)
    problems = json.loads((root / "problems.json").read_text())
    del problems["7"]["choices"]
    (root / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(DatasetError, match=r"problem 7 .* lacks fields \['choices'\]"):
        load_task("scienceqa", "train", root)


@pytest.mark.parametrize("choices", ["catdog", ["cat"], [], ["cat", 3], {"A": "cat", "B": "dog"}, None])
def test_problem_choices_must_be_a_list_of_strings(tmp_path, choices):
    """Issue 20.4a: a string was read letter by letter ("catdog": six one-letter options)."""
    root = copy_fixture("scienceqa", tmp_path)
    problems = json.loads((root / "problems.json").read_text())
    problems["7"]["choices"], problems["7"]["answer"] = choices, 0
    (root / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(DatasetError, match=r"problem 7 in .*problems.json: choices .* is not a list of at least "
                                           r"two strings"):
        load_task("scienceqa", "train", root)


def test_pid_without_problem(tmp_path):
    root = copy_fixture("scienceqa", tmp_path)
    (root / "pid_splits.json").write_text(json.dumps({"train": ["7", "999"], "val": [], "test": []}))
    with pytest.raises(DatasetError, match="999"):
        load_task("scienceqa", "train", root)


def test_missing_files(tmp_path):
    sq = copy_fixture("scienceqa", tmp_path)
    (sq / "images/train/7/image.png").unlink()
    with pytest.raises(FileNotFoundError, match="image for problem 7"):
        load_task("scienceqa", "train", sq)
    (sq / "pid_splits.json").unlink()
    with pytest.raises(FileNotFoundError, match="pid_splits.json"):
        load_task("scienceqa", "val", sq)
    slake = copy_fixture("slake", tmp_path)
    shutil.rmtree(slake / "imgs/xmlab2")
    with pytest.raises(FileNotFoundError, match="xmlab2"):
        load_task("vqa", "test", slake)
    (slake / "validate.json").unlink()
    with pytest.raises(FileNotFoundError, match="validate.json"):
        load_task("vqa", "val", slake)


def test_bad_slake_and_aid(tmp_path):
    slake = copy_fixture("slake", tmp_path)
    (slake / "train.json").write_text(json.dumps([{"question": "no image?", "q_lang": "en"}]))
    with pytest.raises(DatasetError, match="lacks fields"):
        load_task("vqa", "train", slake)
    aid = copy_fixture("aid", tmp_path)
    for jpg in (aid / "Airport").iterdir():
        jpg.unlink()
    with pytest.raises(FileNotFoundError, match="Airport holds no images"):
        load_task("classification", "train", aid)


# ---------------------------------------------------------------------------------------------
# ScienceQA templates: overlap between splits, held-out templates


def test_default_scienceqa_questions_are_unchanged_and_all_templates_are_seen(built):
    from eas.data import scienceqa

    root = built["scienceqa"]
    problems = json.loads((root / "problems.json").read_text())
    # the questions of builds before templates existed (seed 0): default builds must not move
    assert [problems[p]["question"] for p in ("1", "4", "8", "12", "15")] == [
        "Select the fish.", "What is the capital of Egypt?", "Where can Lena buy a jar of honey for the least money?",
        "Which continent is Mexico on?", "Which word from the sentence is an adjective?"]
    assert all(p["template"].endswith("/0") for p in problems.values())
    overlap = scienceqa.template_overlap(root)
    assert overlap["test"] == 30 and overlap["seen_template"] == 30 and overlap["unseen_template"] == 0
    assert overlap["seen_template_pct"] == overlap["seen_kind_pct"] == 100.0
    assert overlap["train_templates"] == overlap["test_templates"] == overlap["shared_templates"] == 15
    counts = scienceqa.template_counts(root)
    assert len(counts) == 15 and set(counts.train) == {4} and set(counts.val) == set(counts.test) == {2}
    assert counts.seen.all()
    assert all(e.meta["template_seen"] for e in load_task("scienceqa", "test", root))
    assert load_task("scienceqa", "test", root, templates="unseen") == []


def test_duplicates_are_counted(tmp_path):
    from eas.data import scienceqa

    root = copy_fixture("scienceqa", tmp_path)
    problems = json.loads((root / "problems.json").read_text())
    problems["12"]["split"] = "test"
    dup = {**problems["12"], "choices": problems["12"]["choices"][::-1], "answer": 1}  # option order is no disguise
    problems["99"] = dup
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"train": ["7", "12"], "val": [], "test": ["99", "31"]}))
    overlap = scienceqa.template_overlap(root, field="category")
    assert overlap["duplicate"] == 1 and overlap["seen_template"] == 1 and overlap["test"] == 2
    with pytest.raises(DatasetError, match="no 'template' field"):
        scienceqa.template_overlap(root)


HELDOUT = {"train": 45, "val": 15, "test": 45}  # three cycles of the 15 kinds per split


@pytest.fixture(scope="module")
def heldout_built(tmp_path_factory) -> Path:
    return build_task("scienceqa", tmp_path_factory.mktemp("heldout") / "sqa", seed=0, **HELDOUT, heldout_templates=1)


def test_heldout_templates_never_reach_train_or_val(heldout_built):
    from eas.data import scienceqa

    root = heldout_built
    problems = json.loads((root / "problems.json").read_text())
    splits = json.loads((root / "pid_splits.json").read_text())
    used = {s: {problems[p]["template"] for p in pids} for s, pids in splits.items()}
    assert len(used["test"]) == 45 and len(used["train"]) == 30 and used["val"] <= used["train"]
    unseen = load_task("scienceqa", "test", root, templates="unseen")
    seen = load_task("scienceqa", "test", root, templates="seen")
    assert len(unseen) == 15 and len(seen) == 30
    assert {e.uid for e in unseen} | {e.uid for e in seen} == set(splits["test"])
    assert all(e.meta["template"] not in used["train"] and not e.meta["template_seen"] for e in unseen)
    assert all(e.meta["template"] in used["train"] and e.meta["template_seen"] for e in seen)
    assert {e.meta["template"].split("/")[0] for e in unseen} == {t.kind for t in scienceqa.TEMPLATES}
    overlap = scienceqa.template_overlap(root)
    assert (overlap["seen_template"], overlap["unseen_template"], overlap["seen_kind"]) == (30, 15, 45)
    assert overlap["unseen_template_pct"] == pytest.approx(100 / 3)
    counts = scienceqa.template_counts(root).set_index("template")
    assert counts.loc["capital_city/2", "train"] == 0 and not counts.loc["capital_city/2", "seen"]
    # a held-out question asks the same kind in another wording; everything else is drawn as before
    assert len(load_task("scienceqa", "test", root, templates="unseen", limit=4)) == 4
    for split in ("train", "val", "test"):
        for e in load_task("scienceqa", split, root):
            assert e.prompt.startswith("Context: ") and e.target.startswith(f"The answer is ({e.answer}).")


def test_heldout_build_is_deterministic(heldout_built, tmp_path):
    again = build_task("scienceqa", tmp_path / "sqa", seed=0, **HELDOUT, heldout_templates=1)
    assert tree_bytes(again) == tree_bytes(heldout_built)


@pytest.mark.parametrize("make, match", [
    (lambda root: build_task("scienceqa", root, train=15, val=15, test=15, heldout_templates=3), "heldout_templates=3"),
    (lambda root: build_task("vqa", root, heldout_templates=1), "unknown sizes"),
    (lambda root: load_task("scienceqa", "test", FIXTURES / "scienceqa", templates="unseen"), "needs problems with"),
    (lambda root: load_task("scienceqa", "test", FIXTURES / "scienceqa", templates="new"), "templates='new'"),
])
def test_template_options_fail_clearly(make, match, tmp_path):
    with pytest.raises(DatasetError, match=match):
        make(tmp_path / "x")
