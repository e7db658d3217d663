"""The book's ledger: every verdict one row of data/results/claims.csv, every evaluated run one row of
data/results/accuracy.csv, and the paper's value beside each claim.

    rows = [claim_row(cmp, chapter="03_skip_ablation", claim="mha_beats_ffn_k12", task="vqa",
                      method_a="skip MHA k=12", method_b="skip FFN k=12", metric="Avg", profile="cpu",
                      headline=True), ...]
    record_claims(rows)              # Holm over each family in `rows`, then written; returns what was written
    record_accuracy([accuracy_row(...), ...])
    claims_table("cpu")              # the ledger beside the paper's value of each claim (eas.study.paper)

Choices:

* **Keys.** A claims row is identified by (chapter, claim, task, method_a, method_b, profile), an
  accuracy row by (chapter, method, task, k, seed, profile). Recording a row whose key exists replaces
  the old row, so re-running a chapter never duplicates its rows. `replace="family"` also drops the
  stored rows of the same (family, profile) first: use it when a chapter's claims can change from run
  to run (a different best baseline is a different key, and the old row would otherwise linger).
* **Multiplicity.** `record_claims` applies Holm (`eas.study.stats.correct_family`) within each family of
  the rows it is given whose `correction` is unset, so a family must be recorded in one call. The
  `verdict` column holds the corrected verdict; `p` is the p-value of the claim's own test
  (`Comparison.claim_p`), `p_adjusted` Holm's.
* **Atomic, and safe against two writers.** Each write reads the current file, merges and replaces it
  through `eas.core.io.atomic_path` (a reader sees the old file or the new one, never a part), under an
  exclusive lock on a sibling `.lock` file, so two chapters recording at once cannot lose each other's
  rows. A failed write leaves the previous file as it was.
* Unknown columns, missing key values and a key repeated within one call raise `LedgerError`.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from eas.core import io
from eas.study import paper, stats

CLAIM_COLUMNS = ["chapter", "claim", "task", "method_a", "method_b", "metric", "a", "b", "difference", "ci_low",
                 "ci_high", "p", "p_adjusted", "seeds", "items", "correction", "family", "headline", "verdict",
                 "profile"]
ACCURACY_COLUMNS = ["chapter", "method", "task", "k", "seed", "items", "accuracy", "chance", "profile"]
CLAIM_KEY = ("chapter", "claim", "task", "method_a", "method_b", "profile")
ACCURACY_KEY = ("chapter", "method", "task", "k", "seed", "profile")
CLAIMS_FILE, ACCURACY_FILE = "claims.csv", "accuracy.csv"
NUMERIC = {"a", "b", "difference", "ci_low", "ci_high", "p", "p_adjusted", "items", "accuracy", "chance"}
PAPER_COLUMNS = ["paper_a", "paper_b", "paper_value", "paper_source", "paper_note"]


class LedgerError(ValueError):
    pass


def claims_path() -> Path:
    return io.results_dir() / CLAIMS_FILE


def accuracy_path() -> Path:
    return io.results_dir() / ACCURACY_FILE


# ----------------------------------------------------------------------------- building rows

def claim_row(comparison, *, chapter: str, claim: str, task: str, method_a: str, method_b: str, metric: str,
              profile: str, kind: str = "better", margin: float = 0.0, headline: bool = False,
              family: str | None = None) -> dict:
    """One claims row from a comparison: a `stats.Comparison`, or an `eas.study.experiments.compare_runs` /
    `compare_seeds` row (its "comparison" entry is used). `kind` and `margin` are the claim's
    ("better", or "no_worse" with a margin in points); `family` defaults to the chapter. Unadjusted:
    `record_claims` fills in `p_adjusted` and the corrected verdict."""
    cmp = comparison.get("comparison") if isinstance(comparison, Mapping) else comparison
    if not isinstance(cmp, stats.Comparison):
        raise LedgerError(f"claim {claim!r}: expected a stats.Comparison or a compare_runs row, "
                          f"got {type(comparison).__name__}.")
    seeds = f"{cmp.seeds_a}" if cmp.seeds_a == cmp.seeds_b else f"{cmp.seeds_a}/{cmp.seeds_b}"
    return {"chapter": chapter, "claim": claim, "task": task, "method_a": method_a, "method_b": method_b,
            "metric": metric, "a": cmp.acc_a, "b": cmp.acc_b, "difference": cmp.diff, "ci_low": cmp.ci_low,
            "ci_high": cmp.ci_high, "p": cmp.claim_p(kind, margin), "p_adjusted": math.nan, "seeds": seeds,
            "items": cmp.n_items, "correction": "", "family": family or chapter, "headline": bool(headline),
            "verdict": cmp.verdict(kind, margin), "profile": profile}


def accuracy_row(*, chapter: str, method: str, task: str, k, seed: int, items: int, accuracy: float,
                 chance: float, profile: str) -> dict:
    """One accuracy row (points); `k` None or 0 for a method that skips nothing."""
    return {"chapter": chapter, "method": method, "task": task, "k": k, "seed": seed, "items": items,
            "accuracy": accuracy, "chance": chance, "profile": profile}


def accuracy_rows(results, *, chapter: str, profile: str, metric: Mapping | str | None = None,
                  labels: Mapping | None = None) -> list[dict]:
    """Accuracy rows from results rows (`eas.study.experiments` row dicts, or `results_table()`'s frame): accuracy
    from `metric` (a column, or task -> column, e.g. eas.study.experiments.HEADLINE), method from `labels` (run key
    -> label) else the row's method, items from n_eval."""
    if metric is None:
        raise LedgerError("accuracy_rows needs metric: a column name or task -> column "
                          "(eas.study.experiments.HEADLINE).")
    rows = results.to_dict("records") if isinstance(results, pd.DataFrame) else list(results)
    out = []
    for r in rows:
        col = metric[r["task"]] if isinstance(metric, Mapping) else metric
        label = (labels or {}).get(r.get("key"), r["method"])
        out.append(accuracy_row(chapter=chapter, method=label, task=r["task"], k=r.get("k"), seed=r.get("seed", 0),
                                items=r.get("n_eval"), accuracy=r[col], chance=r.get("chance", math.nan),
                                profile=profile))
    return out


# ----------------------------------------------------------------------------- writing

@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the write is still atomic
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _key_value(v) -> str:
    """A key cell as text, so 12, 12.0 and "12" (and None, NaN, "") compare equal after a CSV round trip."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, str):
        text = v.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        if text.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            return "" if text.lower() == "nan" else text
        v = number
    if isinstance(v, (int, float, np.integer, np.floating)):
        if math.isnan(v):
            return ""
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v)


def _keys(frame: pd.DataFrame, key: tuple) -> list[tuple]:
    return [tuple(_key_value(v) for v in row) for row in frame[list(key)].itertuples(index=False, name=None)]


def _frame(rows, columns: list[str], key: tuple, what: str, optional_key: tuple = ()) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
    elif isinstance(rows, Mapping):
        frame = pd.DataFrame([rows])
    else:
        rows = list(rows)
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise LedgerError(f"{what} rows must be mappings (dicts).")
        frame = pd.DataFrame(rows)
    if frame.empty:
        raise LedgerError(f"no {what} rows to record.")
    unknown = [c for c in frame.columns if c not in columns]
    if unknown:
        raise LedgerError(f"unknown {what} columns {unknown}; the ledger's columns are {columns}.")
    missing = [c for c in key if c not in frame.columns]
    if missing:
        raise LedgerError(f"{what} rows lack the key columns {missing}.")
    for c in columns:
        if c not in frame:
            frame[c] = math.nan
        if c not in NUMERIC:
            frame[c] = frame[c].astype(object)
    for c in key:
        if c in optional_key:
            continue
        blank = [i for i, v in enumerate(frame[c]) if _key_value(v) == ""]
        if blank:
            raise LedgerError(f"{what} rows {blank[:5]} have no {c}.")
    keys = _keys(frame, key)
    seen, dup = set(), []
    for k in keys:
        if k in seen:
            dup.append(k)
        seen.add(k)
    if dup:
        raise LedgerError(f"{what} rows repeat the key {dict(zip(key, dup[0]))} ({len(dup)} repeat"
                          f"{'s' if len(dup) > 1 else ''}) within one call.")
    return frame[columns]


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
    frame = pd.read_csv(path, dtype={c: object for c in columns if c not in NUMERIC})
    for c in columns:
        if c not in frame:
            frame[c] = math.nan
    if "headline" in frame:
        frame["headline"] = frame["headline"].map(_truthy)
    for c in ("k", "seed"):  # accuracy keys: whole numbers, read back as such
        if c in frame:
            frame[c] = frame[c].map(lambda v: _whole(v, c))
    return frame[columns]


def _merge_write(path: Path, new: pd.DataFrame, columns: list[str], key: tuple, sort: list[str],
                 drop=None) -> pd.DataFrame:
    with _locked(path):
        old = _read(path, columns)
        if len(old):
            new_keys = set(_keys(new, key))
            keep = [k not in new_keys for k in _keys(old, key)]
            if drop is not None:
                keep = [k and not d for k, d in zip(keep, drop(old))]
            old = old[keep]
        parts = [f for f in (old, new) if len(f)]
        merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
        merged = merged.sort_values(sort, key=lambda c: c.map(_key_value), kind="stable").reset_index(drop=True)
        with io.atomic_path(path) as tmp:
            merged.to_csv(tmp, index=False)
    return merged


def record_claims(rows, path: str | os.PathLike | None = None, *, correct: bool = True, alpha: float = 0.05,
                  replace: str = "key") -> pd.DataFrame:
    """Record claims rows (dicts, e.g. from `claim_row`, or a DataFrame) in the claims ledger; return the rows
    as written. With `correct`, rows whose `correction` is unset get Holm's correction within their family
    (over the rows of this call). `replace`: "key" (rows with the same key are replaced) or "family" (also
    every stored row of the same family and profile)."""
    if replace not in ("key", "family"):
        raise LedgerError(f"replace must be 'key' or 'family', got {replace!r}.")
    frame = _frame(rows, CLAIM_COLUMNS, CLAIM_KEY, "claims", optional_key=("task",))
    frame["family"] = [f if _key_value(f) else c for f, c in zip(frame["family"], frame["chapter"])]
    frame["headline"] = frame["headline"].map(_truthy)
    if correct:
        unset = frame["correction"].map(lambda v: _key_value(v) == "")
        for family in frame.loc[unset, "family"].unique():
            mask = unset & (frame["family"] == family)
            fam = stats.correct_family(frame[mask], family=str(family), alpha=alpha)
            frame.loc[mask, "p_adjusted"] = fam["p_adjusted"].to_numpy()
            frame.loc[mask, "verdict"] = fam["verdict"].to_numpy()
            frame.loc[mask, "correction"] = fam["correction"].to_numpy()
    path = Path(path) if path is not None else claims_path()
    drop = None
    if replace == "family":
        fams = set(zip(frame["family"].map(_key_value), frame["profile"].map(_key_value)))
        def drop(old):
            return [(f, p) in fams for f, p in zip(old["family"].map(_key_value),
                                                                     old["profile"].map(_key_value))]
    _merge_write(path, frame, CLAIM_COLUMNS, CLAIM_KEY,
                 ["profile", "chapter", "family", "claim", "method_a", "method_b"], drop=drop)
    return frame.reset_index(drop=True)


def record_accuracy(rows, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Record accuracy rows (dicts, e.g. from `accuracy_row` / `accuracy_rows`, or a DataFrame); rows with an
    existing key replace the stored ones. Returns the rows as written."""
    frame = _frame(rows, ACCURACY_COLUMNS, ACCURACY_KEY, "accuracy", optional_key=("k",))
    for col in ("k", "seed", "items"):
        frame[col] = [_whole(v, col, empty=0 if col == "k" else None) for v in frame[col]]
    for col in ("accuracy", "chance"):
        values = pd.to_numeric(frame[col], errors="coerce")
        if col == "accuracy" and values.isna().any():
            raise LedgerError(f"accuracy rows {list(frame.index[values.isna()])[:5]} have no accuracy.")
        frame[col] = values
    path = Path(path) if path is not None else accuracy_path()
    _merge_write(path, frame, ACCURACY_COLUMNS, ACCURACY_KEY, ["profile", "chapter", "task", "method", "k", "seed"])
    return frame.reset_index(drop=True)


# ----------------------------------------------------------------------------- reading

def read_claims(profile: str | None = None, path: str | os.PathLike | None = None) -> pd.DataFrame:
    frame = _read(Path(path) if path is not None else claims_path(), CLAIM_COLUMNS)
    return frame[frame["profile"] == profile].reset_index(drop=True) if profile is not None else frame


def read_accuracy(profile: str | None = None, path: str | os.PathLike | None = None) -> pd.DataFrame:
    frame = _read(Path(path) if path is not None else accuracy_path(), ACCURACY_COLUMNS)
    return frame[frame["profile"] == profile].reset_index(drop=True) if profile is not None else frame


def claims_table(profile: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The ledger's claims under `profile`, each beside the paper's value (`eas.study.paper.paper_claim`): paper_a,
    paper_b, paper_value (difference or ratio as the claim states it), paper_source, paper_note."""
    frame = read_claims(profile, path)
    extra = []
    for r in frame.itertuples(index=False):
        pc = paper.paper_claim(r.claim, _none(r.task), _none(r.method_a), _none(r.method_b))
        extra.append({"paper_a": pc.a if pc else math.nan, "paper_b": pc.b if pc else math.nan,
                      "paper_value": pc.value if pc and pc.value is not None else math.nan,
                      "paper_source": pc.source if pc else "no entry in eas.study.paper",
                      "paper_note": pc.note if pc else ""})
    return pd.concat([frame, pd.DataFrame(extra, columns=PAPER_COLUMNS)], axis=1)


def artifacts_table() -> pd.DataFrame:
    """Every table and figure of the paper with its status here (eas.study.paper.PAPER_ARTIFACTS)."""
    return pd.DataFrame([a.to_dict() for a in paper.PAPER_ARTIFACTS]).set_index("name")


def _whole(v, col: str, empty=None):
    """An integer cell (k, seed, items): None / NaN / "" become `empty`; anything non-integral raises."""
    text = _key_value(v)
    if text == "":
        return empty
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise LedgerError(f"{col} must be a whole number, got {v!r}.")
    return int(number)


def _truthy(v) -> bool:
    """A headline cell: True, 1, "True" / "true" / "1" are true; False, 0, their spellings and blanks are not."""
    return _key_value(v).lower() in ("true", "1")


def _none(v):
    return None if _key_value(v) == "" else str(v)
