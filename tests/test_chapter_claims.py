"""Chapter 8 (the claims at a glance): built from a ledger the test writes, so every number is known."""

import math

import numpy as np
import pytest

from eas.study import ledger, stats
from eas.study.chapters import claims


def _comparison(a_only, b_only, n=200):
    a = np.zeros(n, dtype=int)
    b = np.zeros(n, dtype=int)
    a[:a_only] = 1
    b[a_only:a_only + b_only] = 1
    both = slice(a_only + b_only, a_only + b_only + 100)
    a[both] = b[both] = 1
    return stats.paired_comparison(a, b)


@pytest.fixture()
def ledger_file(tmp_path):
    path = tmp_path / "claims.csv"
    rows = [ledger.claim_row(_comparison(30, 2), chapter="02_redundancy", claim="bandit_beats_rule", task="vqa",
                             method_a="bandit", method_b="last", metric="Avg", profile="cpu", headline=True),
            ledger.claim_row(_comparison(5, 4), chapter="02_redundancy", claim="bandit_beats_each_rule", task="vqa",
                             method_a="bandit", method_b="random", metric="Avg", profile="cpu"),
            ledger.claim_row(_comparison(2, 30), chapter="03_skip_ablation", claim="mha_beats_ffn", task="vqa",
                             method_a="skip MHA k=12", method_b="skip FFN k=12", metric="Avg", profile="cpu")]
    ledger.record_claims(rows, path)
    return path


def test_outcomes_counts_and_summary(ledger_file):
    frame = claims.claims_frame("cpu", ledger_file)
    assert list(frame.claim)[0] == "bandit_beats_rule"  # headline first
    assert dict(zip(frame.claim, frame.outcome)) == {"bandit_beats_rule": "holds", "bandit_beats_each_rule":
                                                     "cannot tell", "mha_beats_ffn": "does not hold"}
    counts = claims.outcome_counts(frame)
    assert counts.loc["all chapters"].tolist() == [1, 1, 1] and counts.loc["02_redundancy", "holds"] == 1
    text = claims.summary(frame, "cpu")
    assert "**3 verdicts** in 2 families: 1 hold, 1 do not hold, and 1 cannot" in text
    assert "02_redundancy bandit_beats_rule (bandit vs last): holds" in text
    assert "No verdicts" in claims.summary(claims.claims_frame("gpu", ledger_file), "gpu")
    shown = claims.claims_display(frame)
    assert shown.difference.tolist() == [14.0, 0.5, -14.0]
    fig = claims.claims_figure(frame)
    assert len(fig.axes[0].get_yticklabels()) == 3 and fig.axes[0].get_yticklabels()[0].get_text().endswith("*")


def test_outcome_rejects_what_is_not_a_verdict():
    assert claims.outcome("cannot tell, the interval is [-1.0, 2.0]") == "cannot tell"
    assert claims.outcome("does not hold (Holm)") == "does not hold"
    with pytest.raises(ValueError, match="not a verdict"):
        claims.outcome("maybe")


def test_every_artifact_of_the_paper_has_a_known_status():
    table = claims.artifacts()
    assert {f"Table {i}" for i in range(1, 9)} <= set(table.index)
    assert "Figure 1" in table.index
    text = claims.artifact_counts(table)
    assert text.endswith(f"(of {len(table)}).") and not math.isnan(len(table))
