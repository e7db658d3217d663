"""Atomic writes: a failed write leaves the previous file intact and no temporary behind."""

import os

import pytest

from eas.core import io, results


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "table.csv"
    io.write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["table.csv"]
    assert (path.stat().st_mode & 0o777) == 0o666 & ~io._UMASK


def test_cached_frame_is_not_recomputed(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("EAS_DATA", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [1, 2]})

    first = results.cached_frame("study", "t", {"x": 1}, compute)
    again = results.cached_frame("study", "t", {"x": 1}, compute)
    other = results.cached_frame("study", "t", {"x": 2}, compute)
    assert len(calls) == 2 and first.equals(again) and other.equals(first)
    assert results.stored_params(results.table_path("study", "t", {"x": 1})) == {"x": 1}
