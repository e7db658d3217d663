"""What the chapters show about learning (issue 21): the letter figure draws every run's curves against chance,
and the chance flag names exactly the runs that are not above chance."""

import matplotlib
import pandas as pd
import pytest

from eas.study import report

matplotlib.use("Agg")


def curve(acc: list[float], chance: float = 1 / 3) -> pd.DataFrame:
    steps = [20 * (i + 1) for i in range(len(acc))]
    return pd.DataFrame({"step": steps, "val_letter_loss": [1.1 - 0.1 * i for i in range(len(acc))],
                         "train_letter_loss": [1.0 - 0.1 * i for i in range(len(acc))],
                         "val_rest_loss": [0.01] * len(acc), "val_letter_acc": acc,
                         "val_letter_chance": [chance] * len(acc)})


def test_letter_figure_draws_each_run_and_the_chance_line():
    fig = report.letter_figure({"LoRA": curve([0.3, 0.5, 0.7]), "EAS_12": curve([0.3, 0.35, 0.4], chance=0.25)})
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 * 3  # per run: val letter, train letter, other tokens
    labels = [line.get_label() for line in acc_ax.lines]
    assert labels[:2] == ["LoRA", "EAS_12"] and labels[2].startswith("chance (29%")  # the mean of 1/3 and 1/4
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([30, 50, 70])
    with pytest.raises(ValueError, match="at least one"):
        report.letter_figure({})


def test_chance_flags_name_the_runs_at_chance():
    checks = {"LoRA": {"accuracy": 62.0, "chance": 34.0, "z": 8.3, "above_chance": True},
              "EAS_12": {"accuracy": 35.5, "chance": 35.1, "z": 0.1, "above_chance": False},
              "DAS_4": {"accuracy": 30.0, "chance": 34.0, "z": -1.2, "above_chance": False}}
    text = report.chance_flags(checks)
    assert text.startswith("**At chance**") and "2 of 3 runs" in text
    assert "EAS_12 35.5% against 35.1% chance (z = +0.1)" in text and "DAS_4 30.0%" in text and "LoRA" not in text
    assert report.chance_flags({"LoRA": checks["LoRA"]}) == ""
