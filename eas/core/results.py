"""The results store: tidy tables under data/results/, keyed by the parameters that made them.

A finished computation is never repeated: `cached_frame` returns the stored table when one with
the same parameters exists. Tables are written atomically with a JSON file of their parameters
beside them, so a table always says how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from eas.core import io


def table_path(study: str, name: str, params: dict) -> Path:
    return io.results_dir(study) / f"{name}-{io.key_of(params)}.csv"


def cached_frame(study: str, name: str, params: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    path = table_path(study, name, params)
    if path.exists():
        return pd.read_csv(path)
    frame = compute()
    io.write_json(path.with_suffix(".json"), {"study": study, "name": name, "params": params})
    io.save_frame(path, frame)
    return frame


def stored_params(path: str | Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())["params"]
