"""ScienceQA-format multiple-choice questions with rationales: loader and offline analog generator.

Layout (the official release): `problems.json` maps pid -> problem, `pid_splits.json` maps split -> pids,
and problems with an image have it at `images/{split}/{pid}/image.png` (some copies use `images/{pid}/`).

The analog is produced by templates whose answers are computed, not looked up from a model: questions
on easy-vqa pictures (IMG), questions with a text context in `hint` (TXT) and questions with neither
(NO), across natural, social and language science. Each split cycles through every question kind and
alternates the grade band, so every metric column has items in every split once a split holds at
least two items per kind (30 with the 15 kinds here).

Templates. A problem's template is its question kind (the function that draws it) and the wording of
its question (one of N_PHRASINGS phrasings per kind): `template` in problems.json, e.g.
"capital_city/0", an extra key that official loaders ignore. A default build asks every kind in its
first wording, so every test question shares its template with training questions. A build with
`heldout_templates=h` (a build_task size) keeps the last h wordings of every kind out of train and val
and cycles test through all of them: `load(..., templates="unseen")` is then the test questions whose
template never occurs in training, and each example's meta says `template_seen`.
`template_overlap` and `template_counts` report how much test and training share.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from eas.core.io import write_bytes, write_json
from eas.data._common import (
    DatasetError,
    DatasetNotFound,
    Example,
    check_split,
    read_json,
    require_dir,
    seeded_rng,
    take,
)

LAYOUT = (
    "root/problems.json (pid -> {question, choices, answer, hint, image, subject, grade, ...}), "
    "root/pid_splits.json ({'train': [pids], 'val': [...], 'test': [...]}), "
    "root/images/{split}/{pid}/image.png (or root/images/{pid}/image.png) for problems with an image"
)
REQUIRED_FIELDS = ("question", "choices", "answer", "hint", "image", "subject", "grade")
SUBJECT_CODES = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
LETTERS = "ABCDE"
DEFAULT_SIZES = {"train": 2000, "val": 300, "test": 500}
BUILD_OPTIONS = ("heldout_templates",)  # optional build_task settings besides the sizes
# 1: problems carry their template; the questions of default builds are unchanged.
# 2: the options of picture_shape and picture_corners are only answers an easy-vqa picture can have (its three
#    shapes; 0, 3 or 4 corners), at most 3 of them; version 1 also offered pentagon and star and 0-6 corners, which
#    a reader without the image could rule out. Every other problem, and the picture and grade of these, is unchanged.
ANALOG_VERSION = 2
TEMPLATE_FILTERS = (None, "seen", "unseen")
# What the model is taught to reply (the reference code's prompt formats): QCM-ALE, the answer then its lecture
# and explanation, is the paper's; QCM-A, the answer alone, is what `cpu` trains (the letter is then ~1/6 of
# the loss instead of ~1/67: see the book's chapter 03). Both begin with ANSWER_PREFIX, so the parser and
# eas.models.scoring read either.
# QCM-A-text, ours, names the option's text instead of its letter ("The answer is eagle."): the reply then needs
# no binding of an option to its letter, a step a small model may not learn within a short budget.
ANSWER_FORMATS = ("QCM-ALE", "QCM-A", "QCM-A-text")
LETTER_FORMATS = ("QCM-ALE", "QCM-A")  # the formats whose target names the option letter
ANSWER_PREFIX = "The answer is ("
TEXT_ANSWER_PREFIX = "The answer is "  # QCM-A-text's, before the option's words
INSTRUCTIONS = {
    "QCM-ALE": 'Reply with "The answer is (letter)." and then explain your reasoning in a sentence or two.',
    "QCM-A": 'Reply with "The answer is (letter)."',
    "QCM-A-text": 'Reply with "The answer is" and the option.',
}
INSTRUCTION = INSTRUCTIONS["QCM-ALE"]


# ----------------------------------------------------------------------------------------------
# loading (works on the official release and on the analog)


def option_letters(n: int) -> str:
    return LETTERS[:n] if n <= len(LETTERS) else "".join(chr(ord("A") + i) for i in range(n))


def check_answer_format(answer_format: str) -> str:
    if answer_format not in ANSWER_FORMATS:
        raise DatasetError(f"unknown ScienceQA answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}")
    return answer_format


def format_prompt(hint: str, question: str, choices: list[str], answer_format: str = "QCM-ALE") -> str:
    options = " ".join(f"({letter}) {choice}" for letter, choice in zip(option_letters(len(choices)), choices))
    instruction = INSTRUCTIONS[check_answer_format(answer_format)]
    return f"Context: {hint.strip() or 'N/A'}\nQuestion: {question}\nOptions: {options}\n{instruction}"


def format_target(letter: str, solution: str, answer_format: str = "QCM-ALE", choice: str = "") -> str:
    if check_answer_format(answer_format) == "QCM-A-text":
        return f"{TEXT_ANSWER_PREFIX}{choice.strip()}."
    if answer_format == "QCM-A":
        return f"{ANSWER_PREFIX}{letter})."
    return f"{ANSWER_PREFIX}{letter}). BECAUSE: {solution.strip()}"


def grade_band(grade: str) -> str:
    match = re.fullmatch(r"grade(\d+)", str(grade))
    if not match:
        raise DatasetError(f"grade {grade!r} is not of the form 'gradeN'")
    return "G1-6" if int(match.group(1)) <= 6 else "G7-12"


def find_image(root: Path, split: str, pid: str, name: str) -> Path:
    candidates = [root / "images" / split / pid / name, root / "images" / pid / name, root / split / pid / name]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DatasetNotFound(f"image for problem {pid} not found (tried {tried}); expected layout: {LAYOUT}")


def to_example(root: Path, pid: str, problem: dict, split: str, train_templates: set | None = None,
               answer_format: str = "QCM-ALE") -> Example:
    problems_file = root / "problems.json"
    if not isinstance(problem, dict):
        raise DatasetError(f"problem {pid} in {problems_file} is not an object; expected layout: {LAYOUT}")
    missing = [f for f in REQUIRED_FIELDS if f not in problem]
    if missing:
        raise DatasetError(f"problem {pid} in {problems_file} lacks fields {missing}; expected layout: {LAYOUT}")
    choices = problem["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        # a string would otherwise be read character by character: "catdog" as six one-letter options
        raise DatasetError(f"problem {pid} in {problems_file}: choices {choices!r} is not a list of at least two "
                           f"strings (the options); expected layout: {LAYOUT}")
    answer = problem["answer"]
    if not (2 <= len(choices) and isinstance(answer, int) and 0 <= answer < len(choices)):
        raise DatasetError(f"problem {pid} in {problems_file}: answer {answer!r} is not an index into {choices}")
    if problem["subject"] not in SUBJECT_CODES:
        raise DatasetError(f"problem {pid} in {problems_file}: unknown subject {problem['subject']!r}")
    letter = option_letters(len(choices))[answer]
    image = None
    if problem["image"]:
        image = str(find_image(root, problem.get("split", split), pid, problem["image"]).resolve())
    hint = problem["hint"] or ""
    meta = {
        "subject": SUBJECT_CODES[problem["subject"]],
        "has_text": bool(hint.strip()),
        "has_image": image is not None,
        "grade": grade_band(problem["grade"]),
        "n_choices": len(choices),
        "choices": choices,
    }
    if "template" in problem:  # the analog's; scalar, so it reaches the per-example results tables
        meta["template"] = str(problem["template"])
        meta["template_seen"] = train_templates is not None and meta["template"] in train_templates
    return Example(
        uid=str(pid),
        prompt=format_prompt(hint, problem["question"], choices, answer_format),
        target=format_target(letter, problem.get("solution") or "", answer_format, choices[answer]),
        answer=letter,
        image=image,
        meta=meta,
    )


def read_release(root: Path) -> tuple[dict, dict]:
    """problems.json and pid_splits.json, checked to be JSON objects."""
    root = require_dir(Path(root), LAYOUT)
    problems = read_json(root / "problems.json", LAYOUT)
    splits = read_json(root / "pid_splits.json", LAYOUT)
    if not isinstance(problems, dict) or not isinstance(splits, dict):
        raise DatasetError(f"{root}/problems.json and pid_splits.json must hold JSON objects; "
                           f"expected layout: {LAYOUT}")
    return problems, splits


def split_pids(root: Path, problems: dict, splits: dict, split: str) -> list[str]:
    if split not in splits:
        raise DatasetError(f"{Path(root) / 'pid_splits.json'} has no split {split!r} (has {sorted(splits)})")
    pids = [str(p) for p in splits[split]]
    unknown = [p for p in pids if p not in problems]
    if unknown:
        raise DatasetError(
            f"{Path(root) / 'pid_splits.json'} lists pids with no problem in problems.json: {unknown[:5]}"
        )
    return pids


def load(root: Path, split: str, *, limit: int | None = None, templates: str | None = None,
         answer_format: str = "QCM-ALE") -> list[Example]:
    """`templates`: None for the whole split; "seen" / "unseen" for only the problems whose template
    does / never does occur in train (needs problems that carry a `template`: the analog's). `limit`
    applies after that filter. `answer_format`: one of ANSWER_FORMATS (the prompt's instruction and the target)."""
    check_split(split)
    check_answer_format(answer_format)
    if templates not in TEMPLATE_FILTERS:
        raise DatasetError(f"templates={templates!r}; expected one of {TEMPLATE_FILTERS}")
    problems, splits = read_release(root)
    root = Path(root)
    pids = split_pids(root, problems, splits, split)
    has_templates = "train" in splits and all("template" in problems.get(str(p), {}) for p in splits["train"])
    train_templates = {problems[str(p)]["template"] for p in splits["train"]} if has_templates else None
    if templates is not None:
        if train_templates is None or any("template" not in problems[p] for p in pids):
            raise DatasetError(f"templates={templates!r} needs problems with a 'template' key (an eas analog built "
                               f"with analog version >= 1); {root / 'problems.json'} has none")
        pids = [p for p in pids if (problems[p]["template"] in train_templates) == (templates == "seen")]
    return [to_example(root, pid, problems[pid], split, train_templates, answer_format)
            for pid in take(pids, limit)]


# ----------------------------------------------------------------------------------------------
# template overlap between splits


def _template_of(problem: dict, field: str, pid: str) -> str:
    if field not in problem:
        raise DatasetError(f"problem {pid} has no {field!r} field to group templates by (the analog's problems "
                           "carry 'template'; for the official release pass field='category' or 'skill')")
    return str(problem[field])


def _kind_of(template: str, field: str) -> str:
    return template.split("/", 1)[0] if field == "template" else template


def template_counts(root: Path, *, field: str = "template") -> pd.DataFrame:
    """One row per template: its question kind, how many problems of each split use it, and whether
    train uses it (`seen`). Sorted by kind, then template."""
    problems, splits = read_release(root)
    rows: dict[str, dict] = {}
    for split in splits:
        for pid in split_pids(root, problems, splits, split):
            t = _template_of(problems[pid], field, pid)
            row = rows.setdefault(t, {"template": t, "kind": _kind_of(t, field)})
            row[split] = row.get(split, 0) + 1
    frame = pd.DataFrame(list(rows.values()), columns=["template", "kind", *splits])
    frame[list(splits)] = frame[list(splits)].fillna(0).astype(int)
    frame["seen"] = frame["train"] > 0 if "train" in splits else False
    return frame.sort_values(["kind", "template"]).reset_index(drop=True)


def template_overlap(root: Path, *, test: str = "test", train: str = "train", field: str = "template") -> dict:
    """How much split `test` shares with split `train`, in questions (counts and percentages):

        test                  questions in `test`
        seen_template         ... whose template (kind and wording) occurs in `train`; unseen_template the rest
        seen_kind             ... whose question kind occurs in `train` (whatever the wording)
        duplicate             ... identical to a `train` question: same context, question and set of options,
                              and no image (the analog's splits never share an image)
        *_pct                 the same as percentages of `test`
        templates, train_templates, test_templates, shared_templates: distinct templates overall / per split
    """
    problems, splits = read_release(root)
    train_pids = split_pids(root, problems, splits, train)
    test_pids = split_pids(root, problems, splits, test)

    def content(p):
        return problems[p].get("hint") or "", problems[p]["question"], frozenset(map(str, problems[p]["choices"]))

    train_t = {_template_of(problems[p], field, p) for p in train_pids}
    test_t = [_template_of(problems[p], field, p) for p in test_pids]
    train_kinds = {_kind_of(t, field) for t in train_t}
    train_content = {content(p) for p in train_pids if not problems[p].get("image")}
    n = len(test_pids)
    out = {
        "test": n,
        "seen_template": sum(t in train_t for t in test_t),
        "seen_kind": sum(_kind_of(t, field) in train_kinds for t in test_t),
        "duplicate": sum(not problems[p].get("image") and content(p) in train_content for p in test_pids),
    }
    out["unseen_template"] = n - out["seen_template"]
    for key in ("seen_template", "unseen_template", "seen_kind", "duplicate"):
        out[f"{key}_pct"] = 100.0 * out[key] / n if n else float("nan")
    out.update(templates=len(train_t | set(test_t)), train_templates=len(train_t), test_templates=len(set(test_t)),
               shared_templates=len(train_t & set(test_t)))
    return out


# ----------------------------------------------------------------------------------------------
# the analog's facts: small tables the templates draw from


ANIMAL_GROUPS = {
    "mammal": ["dog", "horse", "whale", "bat", "rabbit", "elephant", "tiger", "goat"],
    "bird": ["eagle", "penguin", "robin", "owl", "parrot", "duck"],
    "reptile": ["lizard", "snake", "turtle", "crocodile", "gecko"],
    "fish": ["salmon", "shark", "trout", "goldfish", "tuna"],
    "amphibian": ["frog", "toad", "salamander", "newt"],
}
ANIMAL_TRAITS = {
    "mammal": "have fur or hair and feed their young with milk",
    "bird": "have feathers, two wings and a beak, and lay eggs with hard shells",
    "reptile": "have dry, scaly skin and lay eggs with leathery shells on land",
    "fish": "live in water, breathe with gills and swim with fins",
    "amphibian": "have moist skin and usually start life in water before moving onto land",
}
MATTER = {
    "solid": ["rock", "ice cube", "wooden spoon", "coin", "pencil", "brick"],
    "liquid": ["milk", "orange juice", "rain water", "vinegar", "olive oil", "lemonade"],
    "gas": ["steam", "the air inside a balloon", "helium", "water vapor", "oxygen"],
}
MATTER_TRAITS = {
    "solid": "keeps its own shape and takes up a fixed amount of space",
    "liquid": "has a fixed volume but takes the shape of whatever container holds it",
    "gas": "has no fixed shape or volume and spreads out to fill any container",
}
COUNTRIES = {  # country: (capital, continent)
    "France": ("Paris", "Europe"), "Germany": ("Berlin", "Europe"), "Italy": ("Rome", "Europe"),
    "Spain": ("Madrid", "Europe"), "Norway": ("Oslo", "Europe"), "Japan": ("Tokyo", "Asia"),
    "India": ("New Delhi", "Asia"), "China": ("Beijing", "Asia"), "Thailand": ("Bangkok", "Asia"),
    "Kenya": ("Nairobi", "Africa"), "Egypt": ("Cairo", "Africa"), "Nigeria": ("Abuja", "Africa"),
    "Ghana": ("Accra", "Africa"), "Canada": ("Ottawa", "North America"),
    "Mexico": ("Mexico City", "North America"), "Cuba": ("Havana", "North America"),
    "Brazil": ("Brasilia", "South America"), "Peru": ("Lima", "South America"),
    "Chile": ("Santiago", "South America"), "Argentina": ("Buenos Aires", "South America"),
    "Australia": ("Canberra", "Oceania"), "New Zealand": ("Wellington", "Oceania"), "Fiji": ("Suva", "Oceania"),
}
CONTINENTS = ["Africa", "Asia", "Europe", "North America", "South America", "Oceania"]
WORDS = [
    "apple", "anchor", "basket", "bridge", "candle", "castle", "desert", "dragon", "engine", "feather",
    "forest", "garden", "guitar", "harbor", "helmet", "island", "jacket", "kettle", "ladder", "lemon",
    "magnet", "meadow", "needle", "orange", "otter", "pencil", "pepper", "planet", "quilt", "rabbit",
    "river", "saddle", "silver", "spider", "tunnel", "turtle", "umbrella", "valley", "violin", "window",
    "winter", "yellow", "zebra", "button", "bottle", "carrot", "cabin", "marble", "market", "pillow",
]
RHYMES = {
    "at": ["cat", "hat", "bat", "mat", "rat"], "un": ["sun", "fun", "run", "bun"],
    "ake": ["cake", "lake", "bake", "rake"], "ig": ["pig", "dig", "wig", "fig"],
    "op": ["mop", "top", "hop", "pop"], "ell": ["bell", "well", "shell", "tell"],
    "ing": ["king", "ring", "sing", "wing"], "ock": ["sock", "rock", "lock", "clock"],
}
WORD_CLASSES = {
    "noun": ["teacher", "mountain", "bicycle", "kitten", "library", "spoon", "ocean"],
    "verb": ["jump", "whisper", "build", "swim", "carry", "laugh", "paint"],
    "adjective": ["bright", "gentle", "noisy", "tiny", "shiny", "brave", "soft"],
}
WORD_CLASS_MEANING = {
    "noun": "a word that names a person, place, animal or thing",
    "verb": "a word that names an action, something that someone or something does",
    "adjective": "a word that describes a noun by telling what it is like",
}
SENTENCE_ANIMALS = ["puppy", "kitten", "pony", "duckling", "hamster", "lamb"]
SENTENCE_ADJECTIVES = ["sleepy", "fluffy", "hungry", "playful", "muddy", "curious"]
SENTENCE_VERBS = ["sleeps", "waits", "plays", "sits", "rests", "hides"]
SENTENCE_PLACES = ["barn", "fence", "pond", "gate", "window", "garden"]
NAMES = ["Maya", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sofia", "Kenji"]
PLACES = ["fridge", "garden shade", "kitchen counter", "parked car", "sunny windowsill", "basement"]
GOODS = ["a bag of apples", "a loaf of bread", "a jar of honey", "a box of pencils", "a bunch of flowers"]
SHAPE_FACTS = {
    "circle": "a circle is one smooth curved line with no straight sides and no corners",
    "rectangle": "a rectangle has four straight sides and four square corners",
    "triangle": "a triangle has three straight sides that meet at three corners",
}
SHAPE_CORNERS = {"circle": 0, "rectangle": 4, "triangle": 3}  # easy-vqa draws these three shapes only
COLOR_FACTS = {  # easy-vqa's eight colours, each of which its pictures use
    "red": "red is the colour of ripe strawberries and stop signs",
    "green": "green is the colour of grass and fresh leaves",
    "blue": "blue is the colour of a clear daytime sky",
    "yellow": "yellow is the bright colour of lemons and sunflowers",
    "black": "black is the darkest colour, the colour of coal",
    "gray": "gray lies between black and white, like storm clouds or ash",
    "brown": "brown is the colour of wood, soil and chocolate",
    "teal": "teal is a deep blue-green that sits between blue and green",
}
SHAPES = list(SHAPE_CORNERS)
COLORS = list(COLOR_FACTS)


def plural(word: str) -> str:
    if word == "fish":
        return word
    return word + ("es" if word.endswith(("sh", "ch", "s", "x")) else "s")


def join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


# ----------------------------------------------------------------------------------------------
# templates: each draws one problem with n options (it may use fewer when its facts run out)


@dataclass
class Draft:
    slots: dict  # the values the template's phrasings are filled with
    correct: str
    wrong: list[str]
    solution: str
    hint: str = ""
    image: Path | None = None


@dataclass(frozen=True)
class Picture:
    path: Path
    shape: str
    color: str


@dataclass(frozen=True)
class Template:
    make: Callable[[random.Random, int, Callable[[], Picture]], Draft]
    subject: str
    topic: str
    category: str
    skill: str
    lecture: str
    min_choices: int = 2

    @property
    def kind(self) -> str:
        return self.make.__name__

    @property
    def phrasings(self) -> tuple[str, ...]:
        return PHRASINGS[self.kind]

    def question(self, variant: int, slots: dict) -> str:
        return self.phrasings[variant].format(**slots)


def template_id(kind: str, variant: int) -> str:
    return f"{kind}/{variant}"


def select_animal(rng, n, picture):
    group, *others = rng.sample(list(ANIMAL_GROUPS), min(n, len(ANIMAL_GROUPS)))
    correct = rng.choice(ANIMAL_GROUPS[group])
    wrong = [(rng.choice(ANIMAL_GROUPS[g]), g) for g in others]
    why_not = " ".join(f"A {w} is a {g}: {plural(g)} {ANIMAL_TRAITS[g]}." for w, g in wrong[:2])
    solution = f"{plural(group).capitalize()} {ANIMAL_TRAITS[group]}. A {correct} is a {group}. {why_not}"
    return Draft({"group": group}, correct, [w for w, _ in wrong], solution)


def state_of_matter(rng, n, picture):
    state, *others = rng.sample(list(MATTER), min(n, len(MATTER)))
    correct = rng.choice(MATTER[state])
    wrong = [(rng.choice(MATTER[s]), s) for s in others]
    why_not = " ".join(f"{w.capitalize()} is a {s}, because it {MATTER_TRAITS[s]}." for w, s in wrong[:2])
    solution = (f"A {state} {MATTER_TRAITS[state]}. {correct.capitalize()} behaves this way, so it is a {state}. "
                f"{why_not}")
    return Draft({"state": state}, correct, [w for w, _ in wrong], solution)


def thermal_energy(rng, n, picture):
    name = rng.choice(NAMES)
    places = rng.sample(PLACES, n)
    temps = rng.sample(range(4, 46), n)
    most = rng.random() < 0.5
    pick = temps.index(max(temps) if most else min(temps))
    readings = "; ".join(f"the one in the {p} reached {t}°C" for p, t in zip(places, temps))
    hint = (f"{name} filled {n} identical bottles with the same amount of water and left them in different places: "
            f"{readings}.")
    word = "most" if most else "least"
    others = [f"{t}°C in the {p}" for i, (p, t) in enumerate(zip(places, temps)) if i != pick]
    solution = (
        f"The bottles hold the same amount of the same water, so the {'warmer' if most else 'colder'} a bottle is, "
        f"the {'more' if most else 'less'} thermal energy it has. "
        f"The bottle in the {places[pick]} was at {temps[pick]}°C, "
        f"{'warmer' if most else 'colder'} than {join_words(others)}, so it has the {word} thermal energy."
    )
    options = [f"the bottle in the {p}" for p in places]
    return Draft({"word": word}, options[pick], options[:pick] + options[pick + 1 :], solution, hint=hint)


def plant_growth(rng, n, picture):
    name = rng.choice(NAMES)
    weeks = [rng.randint(2, 9) for _ in range(2 if n <= 3 else 3)]
    total = sum(weeks)
    ordinal = ["first", "second", "third"]
    parts = join_words([f"{w} centimeters in the {ordinal[i]} week" for i, w in enumerate(weeks)])
    hint = f"{name} measured a bean plant every week. It grew {parts}."
    wrong = [total + d for d in (-2, -1, 1, 2, 3) if total + d > 0]
    rng.shuffle(wrong)
    wrong = [f"{w} centimeters" for w in wrong[: n - 1]]
    sum_text = " + ".join(str(w) for w in weeks)
    solution = (
        f"To find how much the plant grew in all, add the growth of each week: {sum_text} = {total}. "
        f"The plant therefore grew {total} centimeters over the {len(weeks)} weeks that {name} measured; "
        "the other totals come from adding wrongly."
    )
    return Draft({"weeks": len(weeks)}, f"{total} centimeters", wrong, solution, hint=hint)


def capital_city(rng, n, picture):
    country, *others = rng.sample(list(COUNTRIES), n)
    capital, continent = COUNTRIES[country]
    why_not = " ".join(f"{COUNTRIES[o][0]} is the capital of {o}." for o in others[:2])
    solution = (
        f"A capital is the city where a country's national government meets. {country} is in {continent}, "
        f"and its government meets in {capital}, so {capital} is the capital of {country}. {why_not}"
    )
    return Draft({"country": country}, capital, [COUNTRIES[o][0] for o in others], solution)


def continent_of(rng, n, picture):
    country = rng.choice(list(COUNTRIES))
    capital, continent = COUNTRIES[country]
    others = rng.sample([c for c in CONTINENTS if c != continent], n - 1)
    neighbours = [c for c, (_, k) in COUNTRIES.items() if k == continent and c != country][:2]
    solution = (
        f"{country} lies on the continent of {continent}, together with countries such as {join_words(neighbours)}. "
        f"Its capital, {capital}, is in {continent} as well. {join_words(others)} "
        f"{'is a different continent' if len(others) == 1 else 'are different continents'}, "
        f"and {country} is not part of them."
    )
    return Draft({"country": country}, continent, others, solution)


def cheapest_stand(rng, n, picture):
    buyer, *sellers = rng.sample(NAMES, n + 1)
    item = rng.choice(GOODS)
    prices = rng.sample(range(2, 15), n)
    pick = prices.index(min(prices))
    listing = ", ".join(f"{s}'s stand charges ${p}" for s, p in zip(sellers, prices))
    hint = f"At the farmers' market, {buyer} wants to buy {item}. The same item is sold at several stands: {listing}."
    others = [f"${p} at {s}'s stand" for i, (s, p) in enumerate(zip(sellers, prices)) if i != pick]
    solution = (
        f"When every stand sells the same item, a buyer spends the least money by choosing the lowest price. "
        f"{sellers[pick]}'s stand charges ${prices[pick]}, which is less than {join_words(others)}, so {buyer} "
        f"should buy {item} there and keep more money for other things."
    )
    options = [f"at {s}'s stand" for s in sellers]
    return Draft({"buyer": buyer, "item": item}, options[pick], options[:pick] + options[pick + 1 :], solution,
                 hint=hint)


def alphabetical_first(rng, n, picture):
    words = rng.sample(WORDS, n)
    first = min(words)
    runner = min(w for w in words if w != first)
    k = next((i for i, (a, b) in enumerate(zip(first, runner)) if a != b), min(len(first), len(runner)))
    if k == 0:
        detail = (
            f"'{first}' starts with '{first[0]}', which comes before the first letters of "
            f"{join_words([repr(w) for w in words if w != first])}."
        )
    else:
        detail = (
            f"'{first}' and '{runner}' both start with '{first[:k]}', so look at the next letter: "
            f"'{first[k]}' comes before '{runner[k]}' in the alphabet."
        )
    solution = (
        "To put words in alphabetical order, compare them letter by letter, starting with the first letter. "
        f"{detail} So '{first}' comes first."
    )
    return Draft({}, first, [w for w in words if w != first], solution)


def odd_rhyme(rng, n, picture):
    family, other = rng.sample(list(RHYMES), 2)
    rhyming = rng.sample(RHYMES[family], min(n - 1, len(RHYMES[family])))
    odd = rng.choice(RHYMES[other])
    solution = (
        f"Words rhyme when they end with the same sound. {join_words(rhyming).capitalize()} "
        f"{'both' if len(rhyming) == 2 else 'all'} end with the '-{family}' sound, "
        f"so they rhyme. '{odd}' ends with the '-{other}' sound instead, so it does not rhyme with the others."
    )
    return Draft({}, odd, rhyming, solution)


def word_class(rng, n, picture):
    cls = rng.choice(list(WORD_CLASSES))
    correct = rng.choice(WORD_CLASSES[cls])
    pool = [(w, c) for c, ws in WORD_CLASSES.items() if c != cls for w in ws]
    wrong = rng.sample(pool, n - 1)
    why_not = " ".join(f"'{w}' is a {c}, {WORD_CLASS_MEANING[c]}." for w, c in wrong[:2])
    solution = f"A {cls} is {WORD_CLASS_MEANING[cls]}. '{correct}' is used this way, so it is a {cls}. {why_not}"
    return Draft({"cls": cls}, correct, [w for w, _ in wrong], solution)


def sentence_adjective(rng, n, picture):
    adj, animal = rng.choice(SENTENCE_ADJECTIVES), rng.choice(SENTENCE_ANIMALS)
    verb, place = rng.choice(SENTENCE_VERBS), rng.choice(SENTENCE_PLACES)
    hint = f"Read the sentence: The {adj} {animal} {verb} by the {place}."
    solution = (
        f"An adjective describes a noun. In this sentence '{adj}' tells what the {animal} is like, "
        "so it is the adjective. "
        f"'{animal}' and '{place}' are nouns that name things, "
        f"and '{verb}' is a verb that tells what the {animal} does."
    )
    wrong = rng.sample([animal, verb, place], min(n - 1, 3))
    return Draft({}, adj, wrong, solution, hint=hint)


# The picture kinds draw their options only from answers a picture can have (every shape, colour, corner count
# and pairing of shape and colour below occurs among the easy-vqa pictures used): an option that is never right
# would let a reader who cannot see the image rule it out.


def picture_shape(rng, n, picture):
    pic = picture()
    wrong = rng.sample([s for s in SHAPES if s != pic.shape], n - 1)
    why_not = " ".join(f"It is not a {w}: {SHAPE_FACTS[w]}." for w in wrong[:1])
    solution = (
        f"Look at the outline of the {pic.color} figure in the image; {SHAPE_FACTS[pic.shape]}. "
        f"The figure matches this, so it is a {pic.shape}. {why_not}"
    )
    return Draft({}, pic.shape, wrong, solution, image=pic.path)


def picture_color(rng, n, picture):
    pic = picture()
    wrong = rng.sample([c for c in COLORS if c != pic.color], n - 1)
    solution = (
        f"The {pic.shape} in the image is filled with one colour, and {COLOR_FACTS[pic.color]}. "
        f"The fill of the {pic.shape} is {pic.color}. "
        f"The plain background around it does not count, and the other option{'s' if len(wrong) > 1 else ''}, "
        f"{join_words(wrong)}, {'do' if len(wrong) > 1 else 'does'} not match the fill."
    )
    return Draft({}, pic.color, wrong, solution, image=pic.path)


def picture_corners(rng, n, picture):
    pic = picture()
    corners = SHAPE_CORNERS[pic.shape]
    wrong = rng.sample([str(k) for k in sorted(set(SHAPE_CORNERS.values())) if k != corners], n - 1)
    solution = (
        f"The image shows a {pic.color} {pic.shape}, and {SHAPE_FACTS[pic.shape]}. "
        "A corner is a point where two straight sides meet; "
        f"counting those points on the {pic.shape} gives {corners}."
    )
    return Draft({}, str(corners), wrong, solution, image=pic.path)


def picture_description(rng, n, picture):
    pic = picture()
    name = rng.choice(NAMES)
    hint = f"{name} drew one shape on a card, coloured it in, and took a photo of the card."
    pairs = [(c, s) for c in COLORS for s in SHAPES if (c, s) != (pic.color, pic.shape)]
    wrong = [f"a {c} {s}" for c, s in rng.sample(pairs, n - 1)]
    solution = (
        f"The photo shows {name}'s card: {SHAPE_FACTS[pic.shape]}, which matches the figure, so it is a {pic.shape}, "
        f"and its fill is {pic.color}. Only 'a {pic.color} {pic.shape}' gets both the shape and the colour right."
    )
    return Draft({"name": name}, f"a {pic.color} {pic.shape}", wrong, solution, hint=hint, image=pic.path)


# The question wordings of each kind. Phrasing 0 is the one every default build uses (its questions
# are those of earlier versions, so runs on default builds stay valid); the others are paraphrases
# that a build with held-out templates keeps out of train and val.
PHRASINGS = {
    "select_animal": ("Select the {group}.", "Which animal is a {group}?", "Which of these animals is a {group}?"),
    "picture_shape": ("Which shape is shown in the image?", "What shape is in the picture?",
                      "Which shape does the image show?"),
    "thermal_energy": ("Which bottle of water has the {word} thermal energy?",
                       "In which bottle does the water have the {word} thermal energy?",
                       "Which water bottle holds the {word} thermal energy?"),
    "capital_city": ("What is the capital of {country}?", "Which city is the capital of {country}?",
                     "Which city is {country}'s capital?"),
    "alphabetical_first": ("Which word would come first in alphabetical order?",
                           "Which of these words comes first in a dictionary?",
                           "If you sorted these words from A to Z, which would be first?"),
    "picture_color": ("What color is the shape in the image?", "Which colour is the figure in the picture?",
                      "What is the colour of the shape shown?"),
    "state_of_matter": ("Which of these is a {state}?", "Select the {state}.",
                        "Which one of these things is a {state}?"),
    "cheapest_stand": ("Where can {buyer} buy {item} for the least money?",
                       "Which stand sells {item} to {buyer} at the lowest price?",
                       "Where should {buyer} go to pay the least for {item}?"),
    "odd_rhyme": ("Which word does not rhyme?", "Which word does not rhyme with the others?",
                  "Select the word that does not rhyme."),
    "picture_corners": ("How many corners does the shape in the image have?",
                        "How many corners does the pictured shape have?",
                        "Count the corners of the shape in the picture: how many are there?"),
    "plant_growth": ("How many centimeters did the plant grow in those {weeks} weeks?",
                     "What was the plant's total growth over the {weeks} weeks?",
                     "Over the {weeks} weeks, how much did the bean plant grow in all?"),
    "continent_of": ("Which continent is {country} on?", "On which continent is {country}?",
                     "{country} is part of which continent?"),
    "word_class": ("Which word is a {cls}?", "Select the {cls}.", "Which of these words is a {cls}?"),
    "picture_description": ("Which phrase describes {name}'s drawing?",
                            "Which phrase matches the shape on {name}'s card?", "What did {name} draw?"),
    "sentence_adjective": ("Which word from the sentence is an adjective?", "Select the adjective in the sentence.",
                           "Which word in this sentence is the adjective?"),
}
N_PHRASINGS = 3

NAT, SOC, LAN = "natural science", "social science", "language science"
TEMPLATES = [
    Template(select_animal, NAT, "biology", "Classify animals", "Identify animal groups",
             "Scientists sort animals into groups by the traits they share."),
    Template(picture_shape, NAT, "geometry", "Identify shapes", "Name a shape from a picture",
             "Flat shapes are told apart by their sides and corners."),
    Template(thermal_energy, NAT, "physics", "Thermal energy", "Compare thermal energy by temperature",
             "Matter that is hotter has more thermal energy than the same matter when colder."),
    Template(capital_city, SOC, "geography", "Capitals", "Identify capital cities",
             "Every country has a capital city where its government meets."),
    Template(alphabetical_first, LAN, "reference-skills", "Alphabetical order", "Order words alphabetically",
             "Dictionaries and indexes list words in alphabetical order."),
    Template(picture_color, NAT, "visual-properties", "Identify colours", "Name a colour from a picture",
             "Objects can be described by the colour of their surface."),
    Template(state_of_matter, NAT, "physics", "States of matter", "Identify solids, liquids and gases",
             "Matter is usually found as a solid, a liquid or a gas."),
    Template(cheapest_stand, SOC, "economics", "Prices", "Compare prices",
             "A price is the amount of money a buyer gives a seller for a good."),
    Template(odd_rhyme, LAN, "phonological-awareness", "Rhyming", "Find the word that does not rhyme",
             "Rhyming words share the same ending sound.", min_choices=3),
    Template(picture_corners, NAT, "geometry", "Count corners", "Count the corners of a shape",
             "The corners of a flat shape are where its sides meet."),
    Template(plant_growth, NAT, "biology", "Plant growth", "Add measurements",
             "Growth over several periods adds up to the total growth."),
    Template(continent_of, SOC, "geography", "Continents", "Locate countries on continents",
             "The Earth's land is divided into large areas called continents."),
    Template(word_class, LAN, "grammar", "Word classes", "Identify nouns, verbs and adjectives",
             "Words can be grouped by the job they do in a sentence."),
    Template(picture_description, NAT, "visual-properties", "Describe a picture", "Name a shape and its colour",
             "A good description names both the shape and the colour of an object."),
    Template(sentence_adjective, LAN, "grammar", "Adjectives in context", "Find the adjective in a sentence",
             "Adjectives describe nouns."),
]
MAX_CHOICES = {  # the most options each template's facts allow (5 for the others)
    select_animal: len(ANIMAL_GROUPS), state_of_matter: len(MATTER), sentence_adjective: 4,
    picture_shape: len(SHAPES), picture_corners: len(set(SHAPE_CORNERS.values())), odd_rhyme: 5, continent_of: 5,
}
# Version 1 drew the options of these kinds from larger pools (pentagon and star; 0-6 corners), up to 5 of them, on
# the split's one random stream. Version 2 draws their options and option order from a stream of their own and
# spends on the split's stream exactly what version 1 did, so every other problem stays as it was.
VERSION_1_POOLS = {picture_shape: 4, picture_corners: 6}  # distractors version 1 sampled from
VERSION_1_MAX_CHOICES = 5


# ----------------------------------------------------------------------------------------------
# generation


def easy_vqa_pictures(train: bool) -> list[Picture]:
    """easy-vqa images whose shape and colour are both implied by their questions and answers."""
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_train_questions() if train else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if train else easy_vqa.get_test_image_paths()
    shapes, colors = defaultdict(set), defaultdict(set)
    for question, answer, image_id in zip(questions, answers, image_ids):
        words = re.findall(r"[a-z]+", question)
        if answer in SHAPE_CORNERS:
            shapes[image_id].add(answer)
            colors[image_id].update(w for w in words if w in COLOR_FACTS)
        elif answer in COLOR_FACTS:
            colors[image_id].add(answer)
            shapes[image_id].update(w for w in words if w in SHAPE_CORNERS)
        elif (answer == "yes") != ("not" in words or "no" in words):  # a true statement of presence
            shapes[image_id].update(w for w in words if w in SHAPE_CORNERS)
            colors[image_id].update(w for w in words if w in COLOR_FACTS)
    return [
        Picture(Path(paths[i]), next(iter(shapes[i])), next(iter(colors[i])))
        for i in sorted(paths)
        if len(shapes[i]) == 1 and len(colors[i]) == 1
    ]


def picture_supply(pictures: list[Picture], rng: random.Random) -> Callable[[], Picture]:
    order = list(pictures)
    rng.shuffle(order)
    position = 0

    def next_picture() -> Picture:
        nonlocal position
        picture = order[position % len(order)]  # wraps around only when a split needs more than exist
        position += 1
        return picture

    return next_picture


def options_wanted(template: Template, band: int, rng: random.Random) -> int:
    """How many options the grade band asks for, before the template's facts cap it."""
    low, high = (2, 3) if band == 0 else (3, 5)  # older grades get more options
    return rng.randint(max(low, template.min_choices), max(high, template.min_choices))


def max_choices(template: Template) -> int:
    return MAX_CHOICES.get(template.make, 5)


def replay_version_1(template: Template, wanted: int, rng: random.Random) -> None:
    """Draw from `rng` what version 1 drew for a problem of a kind in VERSION_1_POOLS (its distractors, then the
    order of its options), discarding the result: only the number of options and the pool size decide how much a
    sample or a shuffle consumes."""
    n = min(wanted, VERSION_1_MAX_CHOICES)
    rng.sample(range(VERSION_1_POOLS[template.make]), n - 1)
    rng.shuffle(list(range(n)))


def phrasing_for(index: int, split: str, heldout: int) -> int:
    """Which phrasing problem `index` of `split` uses: 0 without held-out templates; otherwise train and
    val cycle through the first N_PHRASINGS - heldout phrasings (a new one each cycle of the kinds) and
    test through all of them, so about heldout / N_PHRASINGS of test asks in a wording never trained on."""
    if not heldout:
        return 0
    used = N_PHRASINGS if split == "test" else N_PHRASINGS - heldout
    return (index // len(TEMPLATES)) % used


def draw_problem(index: int, split: str, rng: random.Random, options_rng: random.Random,
                 picture: Callable[[], Picture], heldout: int = 0) -> tuple[dict, Path | None]:
    """Problem `index` of `split`. `rng` is the split's stream; `options_rng` the split's stream for the options
    of the kinds in VERSION_1_POOLS."""
    template = TEMPLATES[index % len(TEMPLATES)]
    band = (index + index // len(TEMPLATES)) % 2  # alternates within and across cycles
    variant = phrasing_for(index, split, heldout)  # from the index, not the rng: the draws stay as they were
    wanted = options_wanted(template, band, rng)
    draws = rng
    if template.make in VERSION_1_POOLS:
        replay_version_1(template, wanted, rng)
        draws = options_rng
    draft = template.make(draws, min(wanted, max_choices(template)), picture)
    choices = [draft.correct, *draft.wrong]
    draws.shuffle(choices)
    grade = rng.randint(1, 6) if band == 0 else rng.randint(7, 12)
    problem = {
        "question": template.question(variant, draft.slots),
        "choices": choices,
        "answer": choices.index(draft.correct),
        "hint": draft.hint,
        "image": "image.png" if draft.image else None,
        "task": "closed choice",
        "grade": f"grade{grade}",
        "subject": template.subject,
        "topic": template.topic,
        "category": template.category,
        "skill": template.skill,
        "lecture": template.lecture,
        "solution": draft.solution,
        "split": split,
        "template": template_id(template.kind, variant),  # the analog's own key: official loaders ignore it
    }
    return problem, draft.image


def check_options(sizes: dict) -> int:
    """The number of held-out phrasings per kind a build asks for (0: none)."""
    heldout = sizes.get("heldout_templates", 0)
    if isinstance(heldout, bool) or not isinstance(heldout, int) or not 0 <= heldout < N_PHRASINGS:
        raise DatasetError(f"heldout_templates={heldout!r}: expected an integer 0..{N_PHRASINGS - 1} (phrasings per "
                           f"question kind kept out of train and val; each kind has {N_PHRASINGS})")
    return heldout


def write_analog(root: Path, seed: int, sizes: dict[str, int]) -> None:
    heldout = check_options(sizes)
    train_pictures = easy_vqa_pictures(train=True)
    held_out = easy_vqa_pictures(train=False)
    seeded_rng(seed, "scienceqa", "pictures").shuffle(held_out)
    # val and test draw from disjoint halves of easy-vqa's test images, train from its train images
    pictures = {"train": train_pictures, "val": held_out[: len(held_out) // 2], "test": held_out[len(held_out) // 2 :]}
    problems, pid_splits, next_pid = {}, {}, 1
    for split in ("train", "val", "test"):
        rng = seeded_rng(seed, "scienceqa", split)
        options_rng = seeded_rng(seed, "scienceqa", split, "options")
        supply = picture_supply(pictures[split], seeded_rng(seed, "scienceqa", split, "order"))
        pid_splits[split] = []
        for index in range(sizes[split]):
            pid = str(next_pid)
            next_pid += 1
            problem, source = draw_problem(index, split, rng, options_rng, supply, heldout)
            if source is not None:
                write_bytes(root / "images" / split / pid / "image.png", source.read_bytes())
            problems[pid] = problem
            pid_splits[split].append(pid)
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", pid_splits)
