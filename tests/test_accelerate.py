"""eas.models.train under `accelerate launch` with two CPU processes (gloo) computes the same training as one process
with the same global batch: same adapter weights, same loss history, up to float summation order.

The 2-process run sums two half-batch gradients where the 1-process run computes one full-batch gradient
(and pads each half to its own length), so the weights agree to ~1e-6 relative, not bit for bit; the
single-process run with grad_accum=2 sums the same two halves and is compared at the same tolerance.
Before eas.models.train weighted each process's loss by its share of the answer tokens, the two runs differed
by tens of percent after four steps (a mean of per-process means is not the mean over the batch).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import accelerate_train_script as script
import pytest
import torch
from safetensors.torch import load_file

from eas.models.train import TrainConfig, train

SCRIPT = Path(__file__).with_name("accelerate_train_script.py")
RTOL = 1e-5


def free_port() -> int:
    # Other test runs on this machine may hold torchrun's default port 29500.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(tmp_path: Path) -> dict:
    """No inherited launcher variables, no user accelerate config (HF_HOME holds it), gloo on the CPU."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")])))
    return env


def run(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def accelerate_launch() -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")
    return [str(exe), "launch"] if exe.exists() else [sys.executable, "-m", "accelerate.commands.launch"]


def assert_same_training(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "final.safetensors")), load_file(str(b / "final.safetensors"))
    assert wa.keys() == wb.keys() and len(wa) > 0
    for name in wa:
        scale = float(wa[name].abs().max())
        torch.testing.assert_close(wb[name], wa[name], rtol=RTOL, atol=RTOL * scale, msg=lambda m: f"{name}: {m}")
    la = [h["loss"] for h in json.loads((a / "done.json").read_text())["result"]["history"]]
    lb = [h["loss"] for h in json.loads((b / "done.json").read_text())["result"]["history"]]
    assert lb == pytest.approx(la, rel=RTOL)


def test_two_processes_train_like_one(tmp_path):
    env = clean_env(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    run([sys.executable, str(SCRIPT), str(one), "--batch-size", "8"], env)
    # `--cpu --num_processes 2` would start a single process (accelerate 1.x needs mpirun for that);
    # `--multi_gpu` starts torchrun's processes, and ACCELERATE_USE_CPU=1 makes them one gloo job.
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    run(accelerate_launch() + launch + [str(SCRIPT), str(two), "--batch-size", "8"], env)

    ranks = [json.loads((two / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world"], r["rank"], r["type"]) for r in ranks] == [(2, 0, "DistributedType.MULTI_CPU"),
                                                                     (2, 1, "DistributedType.MULTI_CPU")]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the step loss is reduced over both processes
    assert json.loads((one / "rank-0.json").read_text())["world"] == 1
    assert_same_training(one, two)


def train_in_process(run_dir: Path, batch_size: int, grad_accum: int) -> None:
    config = TrainConfig(lr=1e-2, steps=4, batch_size=batch_size, grad_accum=grad_accum, warmup_steps=1,
                         checkpoint_every=0, log_every=1)
    train(script.model_with_pias(), script.examples(), config, run_dir=run_dir, skip_sampler=script.skip_sampler,
          progress=False)


def test_gradient_accumulation_matches_the_whole_batch(tmp_path):
    # Two micro-batches of 4 with different answer lengths: weighted by answer tokens, their mean is the
    # full batch's mean (a plain mean of the two micro-batch means would not be).
    train_in_process(tmp_path / "whole", 8, 1)
    train_in_process(tmp_path / "accum", 4, 2)
    assert_same_training(tmp_path / "whole", tmp_path / "accum")


def test_batch_size_must_split_over_processes(tmp_path, monkeypatch):
    import accelerate

    class TwoProcesses(accelerate.Accelerator):
        num_processes = 2
        process_index = 0

    monkeypatch.setattr(accelerate, "Accelerator", TwoProcesses)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="batch_size 5 is the global micro-batch"):
        train_in_process(tmp_path / "odd", 5, 1)


def test_a_launch_that_accelerate_does_not_see_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; Accelerate here still runs one process
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=1"):
        train_in_process(tmp_path / "alone", 8, 1)
