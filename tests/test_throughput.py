"""The throughput suite on a tiny shape: every variant timed, speed-ups against the base of the same run,
ceilings from the shapes, and the KV saving measured from the cache equal to k/N."""

import pytest

from eas.study import bench, throughput
from eas.study.profiles import ParameterError, notebook_params, profile_values


def test_throughput_suite_smoke(tmp_path):
    p = notebook_params("throughput", profile_values("smoke", "throughput"))
    frame = throughput.run(p, progress=False)
    assert list(frame.columns) == throughput.COLUMNS
    assert len(frame) == len(p.shapes) * len(p.batches) * len(p.contexts) * (3 + len(p.eas_ks))
    base = frame[frame.variant == "base"]
    assert (base.speedup == 1).all() and (base.kv_saving == 0).all()
    eas = frame[frame.variant == "EAS_3 merged"]
    assert (eas.kv_saving - 3 / 6).abs().max() < 1e-9  # measured from the cache's tensors: exactly k/N
    assert (frame.ceiling >= 1).all() and (frame.tokens_per_s > 0).all()
    text = throughput.verdict(frame, "tiny-llama", 3)
    assert "EAS_3 merged decodes" in text and "within 2 points" in text
    budgets = throughput.budget_table(p)
    assert (budgets["EAS_3"] >= budgets["base"]).all() and (budgets["EAS_3"] > budgets["base"]).any()
    bench.main(["--profile", "smoke", "--suite", "throughput", "--out", str(tmp_path)])
    assert (tmp_path / "serving.csv").exists() and (tmp_path / "budgets.csv").exists()


def test_bad_throughput_parameters_are_named():
    values = profile_values("smoke", "throughput")
    with pytest.raises(ParameterError, match="contexts"):
        notebook_params("throughput", {**values, "contexts": [8]})
    with pytest.raises(ParameterError, match="bytes_per"):
        notebook_params("throughput", {**values, "bytes_per": 3})
