"""`python -m eas`: help at every level, bad values (exit 2, the flag named, no traceback), and on the tiny
random model a finetune whose second invocation reads the stored row, evaluate, search and export."""

import contextlib
import io as textio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eas.core import io
from eas.data.evaluate import METRIC_COLUMNS
from eas.study import experiments
from eas.study.cli import main

COMMANDS = ("search", "finetune", "evaluate", "export")
# The settings of tests/test_experiments.py's TINY spec, as flags.
TINY = ["--task", "scienceqa", "--model", "tiny", "--sizes", '{"train": 24, "val": 8, "test": 8}', "--n-eval", "8",
        "--heldout", "8", "--steps", "4", "--batch-size", "4", "--lr", "0.01", "--max-new-tokens", "6",
        "--eval-batch-size", "8", "--checkpoint-every", "2", "--pia", '{"skip_hidden": 8, "adapt_hidden": 4}',
        "--no-progress"]
FINETUNE = ["finetune", *TINY, "--method", "eas", "--k", "2", "--selector", "last"]
BANDIT = ["--bandit-warmup-steps", "2", "--bandit-comparisons", "2", "--bandit-T", "2", "--bandit-m", "2"]


def cli(*argv: str) -> tuple[int, str, str]:
    """main(argv) in this process: (exit status, stdout, stderr)."""
    out, err = textio.StringIO(), textio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One data root for the module (as in test_experiments): datasets and features are built once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EAS_DATA", str(tmp_path_factory.mktemp("eas-cli-data")))
        if "EAS_CACHE" not in os.environ:
            mp.setenv("EAS_CACHE", str(io.REPO_ROOT / "data" / "cache"))
        yield io.data_root()


@pytest.fixture(scope="module")
def finished(data_root):
    code, out, err = cli(*FINETUNE, "--format", "json")
    assert code == 0, err
    return json.loads(out)


# ----------------------------------------------------------------------------- help and bad input

def test_help_at_every_level():
    code, out, _ = cli("--help")
    assert code == 0 and all(c in out for c in COMMANDS)
    for command in COMMANDS:
        code, out, _ = cli(command, "--help")
        assert code == 0 and out.startswith(f"usage: python -m eas {command}"), command
        assert "--task" in out and "default: scienceqa" in " ".join(out.split())  # argparse wraps lines
    code, out, _ = cli("finetune", "--help")
    assert "one of eas, das, skip-only, lora" in " ".join(out.split()) and "--no-warm-start" in out


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--task", "imagenet"],
     "argument --task: expected one of scienceqa, vqa, classification, got 'imagenet'"),
    (["finetune", "--method", "prompt", "--k", "2"], "argument --method: expected one of eas, das"),
    (["finetune", "--k", "two"], "argument --k: expected an integer, got 'two'"),
    (["finetune", "--k", "0"], "argument --k: k (modules skipped by 'eas') must be an integer >= 1, got 0"),
    (["finetune", "--k", "2", "--lr", "-1"], "argument --lr: lr and bandit_lr must be positive"),
    (["finetune", "--k", "2", "--steps", "1.5"], "argument --steps: expected an integer, got '1.5'"),
    (["finetune", "--k", "2", "--sizes", "train=3"], "argument --sizes: expected a JSON object"),
    (["finetune", "--k", "2", "--pia", '{"hiden": 8}'], "argument --pia: unknown PIA option(s) ['hiden']"),
    (["finetune", "--method", "lora", "--k", "2"], "argument --method: method 'lora' skips nothing"),
    (["finetune", "--k", "2", "--model", "gpt5"], "argument --model: unknown model 'gpt5'"),
    (["search", "--method", "lora", "--k", "2"], "argument --method: the bandit searches with adapters"),
    (["evaluate", "--run", "no-such-run"], "argument --run: 'no-such-run' is neither a run directory"),
    (["export", "--k", "2"], "the following arguments are required: --out"),
    (["train"], "invalid choice: 'train'"),
])
def test_bad_values_exit_2_naming_the_flag(argv, message, data_root):
    code, out, err = cli(*argv)
    assert code == 2 and message in err and out == "", err
    assert f"usage: python -m eas {argv[0] if argv[0] in COMMANDS else ''}".strip() in err


def test_bad_value_from_a_shell_has_no_traceback(data_root):
    proc = subprocess.run([sys.executable, "-m", "eas", "finetune", "--k", "0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --k: k (modules skipped by 'eas') must be an integer >= 1, got 0." in proc.stderr


def test_k_beyond_the_model_is_exit_2(data_root):
    code, _, err = cli(*FINETUNE[:-2], "--selector", "last", "--k", "9")  # the tiny model has 4 layers
    assert code == 2 and "argument --k: k=9 is out of range for kind 'mha' on a 4-layer model: allowed 1..3" in err


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("argv, message", [
    ([*FINETUNE[:-4], "--k", "99", "--selector", "last"],
     "argument --k: k=99 is out of range for kind 'mha' on a 4-layer model: allowed 1..3"),
    (["search", *TINY, "--k", "99", *BANDIT], "argument --k: k=99 is out of range for kind 'mha' on a 4-layer"),
    ([*FINETUNE[:-4], "--k", "40", "--selector", "last", "--model", "mini-llava"],
     "argument --k: k=40 is out of range for kind 'mha' on a 30-layer model: allowed 1..29"),
    ([*FINETUNE, "--sizes", '{"trian": 24, "val": 8, "test": 8}'],
     "argument --sizes: unknown sizes ['trian'] for task 'scienceqa'"),
    ([*FINETUNE, "--sizes", '{"train": 0}'], "argument --sizes: sizes must be positive integers"),
    ([*FINETUNE, "--sizes", '{"heldout_templates": 9}'], "argument --sizes: heldout_templates=9"),
])
def test_bad_values_found_before_any_work_or_write(argv, message, data_root, monkeypatch):
    """Issue 20.4b: `finetune --k 99` built the dataset and wrote spec.json before exiting 2."""
    def forbidden(*a, **k):
        raise AssertionError("work was done before the flags were checked")

    for name in ("load_data", "build_model", "run_experiment", "select_skips"):
        monkeypatch.setattr(experiments, name, forbidden)
    monkeypatch.setattr(experiments.runs, "prepare_task", forbidden)
    before = tree(data_root)
    code, out, err = cli(*argv)
    assert code == 2 and message in err and out == "", err
    assert tree(data_root) == before  # no run directory, no spec.json, no dataset folder


# ----------------------------------------------------------------------------- runs on the tiny model

def test_finetune_prints_its_row_then_reads_it_back(finished, monkeypatch):
    row = finished
    assert json.loads(row["skipped"])["mha"] == [2, 3] and row["train_steps"] == 4 and row["n_eval"] == 8
    assert set(METRIC_COLUMNS["scienceqa"]) <= set(row)
    assert Path(row["run_dir"]) == io.data_root() / "results" / "runs" / row["key"]

    def forbidden(*a, **k):
        raise AssertionError("a finished run was recomputed")

    for name in ("load_data", "build_model"):
        monkeypatch.setattr(experiments, name, forbidden)
    monkeypatch.setattr(experiments.trainlib, "train", forbidden)
    code, out, err = cli(*FINETUNE, "--format", "json")
    assert code == 0 and json.loads(out) == row and "nothing recomputed" in err
    code, out, _ = cli(*FINETUNE)  # the table form: the run, the metric columns
    assert code == 0 and out.splitlines()[0] == f"run                 {row['run_dir']}" and "\nAvg " in out


def test_evaluate_gives_the_paper_columns(finished):
    by_flags = cli("evaluate", *FINETUNE[1:], "--format", "json")
    by_run = cli("evaluate", "--run", finished["run_dir"], "--format", "json")
    by_key = cli("evaluate", "--run", finished["key"], "--format", "json")
    assert by_flags[0] == by_run[0] == by_key[0] == 0
    result = json.loads(by_run[1])
    assert json.loads(by_flags[1]) == result == json.loads(by_key[1])
    assert {c: result[c] for c in METRIC_COLUMNS["scienceqa"]} == {c: finished[c] for c in METRIC_COLUMNS["scienceqa"]}
    code, _, err = cli("evaluate", "--run", finished["run_dir"], "--k", "3")
    assert code == 2 and "leave out --k" in err


def test_evaluate_an_unfinished_run_is_exit_1(data_root):
    code, _, err = cli("evaluate", *FINETUNE[1:-2], "--selector", "random")
    assert code == 1 and "is not finished: run `python -m eas finetune` with the same flags first" in err


def test_search_then_read_back(data_root, monkeypatch):
    argv = ["search", *TINY, "--k", "2", *BANDIT, "--format", "json"]
    code, out, err = cli(*argv)
    assert code == 0, err
    found = json.loads(out)
    assert len(found["chosen"]) == 2 and found["comparisons"] == 2 and len(found["scores"]) == 4
    assert (io.data_root() / "results" / "runs" / found["key"] / "search" / "bandit.jsonl").exists()
    monkeypatch.setattr(experiments, "select_skips", lambda *a, **k: pytest.fail("the search ran again"))
    code, out, _ = cli(*argv)
    assert code == 0 and json.loads(out) == found


def test_export_writes_a_transformers_directory(finished, tmp_path):
    pytest.importorskip("eas.export")
    out = tmp_path / "model"
    code, stdout, err = cli("export", "--run", finished["run_dir"], "--out", str(out), "--format", "json")
    assert code == 0, err
    assert json.loads(stdout)["exported"] == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["eas"]["skips"]["mha"] == json.loads(finished["skipped"])["mha"]
    code, _, err = cli("export", "--run", finished["run_dir"], "--out", str(out))
    assert code == 2 and "argument --out" in err and "--overwrite" in err
