"""Every notebook runs end to end under the smoke profile (papermill, the project's kernel)."""

import json

import numpy as np
import pytest

from eas.core import io
from eas.study import ledger, report, stats
from eas.study.notebooks import notebook_names, run_notebook

pytestmark = pytest.mark.notebooks


def record_sample_ledger() -> None:
    """Two verdicts and their runs under the smoke profile, as a chapter records them (eas.study.report)."""
    right = np.r_[np.ones(60, int), np.zeros(40, int)]
    other = np.r_[np.ones(45, int), np.zeros(55, int)]
    cmp = stats.paired_comparison(right, other)
    report.record_verdicts([{"claim": "bandit_beats_best_rule", "method_a": "bandit", "method_b": "last",
                             "row": cmp, "headline": True},
                            {"claim": "bandit_beats_rule", "method_a": "bandit", "method_b": "random",
                             "row": stats.paired_comparison(right, right)}],
                           chapter="02_redundancy", family="02_redundancy", task="vqa", metric="Avg", profile="smoke")
    ledger.record_accuracy([ledger.accuracy_row(chapter="02_redundancy", method=m, task="vqa", k=12, seed=0,
                                                items=100, accuracy=a, chance=25.0, profile="smoke")
                            for m, a in (("bandit", 60.0), ("last", 45.0))])


@pytest.mark.parametrize("name", notebook_names())
def test_notebook_runs_under_smoke(name, tmp_path, monkeypatch):
    # Fresh results and datasets, but the shared cache (converted LM, vision features).
    monkeypatch.setenv("EAS_CACHE", str(io.cache_dir()))
    monkeypatch.setenv("EAS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if name == "08_claims":  # it reads what chapters 2-7 record: give it a ledger of its own
        record_sample_ledger()
    out = run_notebook(name, "smoke", output_dir=tmp_path / "executed")
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["parameters"]["profile"] == "smoke"
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb["cells"] for o in c.get("outputs", [])), "the notebook drew no figure"
    assert list((tmp_path / "data" / "results").rglob("*.csv")), "the notebook stored no results"
