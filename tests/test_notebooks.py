"""Every notebook runs end to end under the smoke profile (papermill, the project's kernel)."""

import json

import pytest

from eas.core import io
from eas.study.notebooks import notebook_names, run_notebook

pytestmark = pytest.mark.notebooks


@pytest.mark.parametrize("name", notebook_names())
def test_notebook_runs_under_smoke(name, tmp_path, monkeypatch):
    # Fresh results and datasets, but the shared cache (converted LM, vision features).
    monkeypatch.setenv("EAS_CACHE", str(io.cache_dir()))
    monkeypatch.setenv("EAS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = run_notebook(name, "smoke", output_dir=tmp_path / "executed")
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["parameters"]["profile"] == "smoke"
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb["cells"] for o in c.get("outputs", [])), "the notebook drew no figure"
    assert list((tmp_path / "data" / "results").rglob("*.csv")), "the notebook stored no results"
