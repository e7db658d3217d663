"""Parameter-efficient training of whatever adapters are attached; the base model stays frozen.

`train(model, examples, config, run_dir=...)` updates exactly the parameters with `requires_grad=True`
(adapters, a projector, ...) with AdamW under a linear warm-up + cosine schedule, on the answer tokens
only (`answer_loss`). It is built on HF Accelerate, so the same loop runs on the CPU here and unchanged
under `accelerate launch` on several processes or GPUs.

Several processes compute the same optimizer steps as one (tests/test_accelerate.py checks it with two
gloo processes on the CPU: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...`;
accelerate 1.x's `--cpu --num_processes 2` starts one process unless mpirun is set up). `batch_size`
is the global micro-batch, and each process takes its own slice of it; the loss of a step is the mean
over every answer token of the global batch (all micro-batches, all processes), so neither the number
of processes nor `grad_accum` re-weights examples with longer or shorter answers. Only float summation
order differs.

Reproducibility and restarts:
    - the data order is a pure function of (seed, step): epoch e is a fresh permutation drawn from
      (seed, e), and micro-batches are consecutive slices of that endless stream;
    - `skip_sampler(step, rng)` gets a generator seeded from (seed, step), so it is also resume-safe;
    - every `checkpoint_every` steps the run directory gets the trainable parameters (safetensors),
      the optimizer and scheduler state, the torch RNG state, the history and the state of any
      `stateful` helper (e.g. the bandit search), each file written atomically, and the pointer
      `checkpoint.json` last. Calling `train` again on that directory resumes from it and ends with
      exactly the parameters and history an uninterrupted run would have;
    - a finished run leaves `final.safetensors` and `done.json`; calling `train` again loads the final
      parameters into the model and returns the stored result without training.

A non-finite loss (or gradient norm) stops the run with `TrainingDiverged` before the optimizer step,
so neither the parameters nor the last good checkpoint are touched.

Run directory layout:
    ckpt-000120/  trainable.safetensors  optim.pt  state.json     (only the latest is kept)
    checkpoint.json                                               {"step": 120, "dir": "ckpt-000120"}
    final.safetensors  done.json                                  (a finished run)
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from eas.core import io
from eas.models.mini_llava import Batch, answer_loss


class TrainingDiverged(FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite."""

    def __init__(self, step: int, loss: float, what: str = "loss"):
        super().__init__(f"training diverged at step {step}: {what} is {loss}; "
                         "the last good checkpoint (if any) is left as it was.")
        self.step, self.loss = step, loss


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0  # applied to matrices only, never to biases or norm scales
    steps: int | None = None  # optimizer steps; or give `epochs` instead
    epochs: float | None = None
    warmup_steps: int = 0
    warmup_ratio: float | None = None  # if set, overrides warmup_steps as a fraction of all steps
    batch_size: int = 8  # examples per micro-batch over all processes (each takes batch_size / world)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 100  # 0: only the final result is written
    log_every: int = 10
    eval_every: int = 0  # call `eval_fn(model)` every that many steps (0: never)
    # batches of examples of similar length (eas.models.train.batch_indices): ScienceQA's rationales vary from ~20 to
    # ~100 tokens, and padding to the longest made a random batch of 8 ~1.36x its real tokens
    group_by_length: bool = False

    def __post_init__(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("TrainConfig needs exactly one of `steps` or `epochs`.")
        if self.steps is not None and self.steps < 1 or self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"steps/epochs must be positive, got steps={self.steps}, epochs={self.epochs}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"batch_size and grad_accum must be >= 1, got {self.batch_size}, {self.grad_accum}")
        if self.warmup_steps < 0 or self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"bad warm-up: warmup_steps={self.warmup_steps}, warmup_ratio={self.warmup_ratio}")

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        per_step = self.batch_size * self.grad_accum
        return max(1, math.ceil(self.epochs * n_examples / per_step))

    def warmup(self, total: int) -> int:
        return self.warmup_steps if self.warmup_ratio is None else round(self.warmup_ratio * total)


@dataclass
class TrainResult:
    history: list[dict]  # one row per optimizer step: step, loss, lr, grad_norm (, skips)
    wall_time: float  # seconds spent training, summed over resumed pieces
    trainable_params: int
    steps: int
    evals: list[dict] = field(default_factory=list)
    resumed_from: int = 0  # the step this call started at (0: a fresh run)
    from_cache: bool = False  # True when a finished run was found and nothing was trained

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]

    @property
    def lrs(self) -> list[float]:
        return [h["lr"] for h in self.history]

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- parameters

def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model).values())


def updated_params_percent(model: nn.Module, base_count: int) -> float:
    """The paper's "Updated Parameters": trainable parameters as a percent of the base model's."""
    return 100.0 * trainable_parameter_count(model) / base_count


# ----------------------------------------------------------------------------- data order

@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int, lengths: tuple[int, ...] | None = None,
                 global_batch: int = 1) -> tuple[int, ...]:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if lengths is None or global_batch <= 1:
        return tuple(order.tolist())
    # Length grouping: sort each chunk of GROUP_BATCHES global batches by length, so a batch pads its
    # sequences to a similar length, then shuffle the batches of the chunk, so the steps do not run from long
    # to short. Every example is still seen once an epoch.
    rng = np.random.default_rng([seed, epoch, 1])
    chunk = GROUP_BATCHES * global_batch
    out = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort([-lengths[i] for i in part], kind="stable")]
        blocks = [part[b:b + global_batch] for b in range(0, len(part), global_batch)]
        for b in rng.permutation(len(blocks)):
            out.extend(blocks[b].tolist())
    return tuple(out)


GROUP_BATCHES = 16  # global batches per length-sorted chunk


def batch_indices(n: int, batch_size: int, micro: int, seed: int, rank: int = 0, world: int = 1,
                  lengths: tuple[int, ...] | None = None) -> list[int]:
    """Example indices of micro-batch `micro` on process `rank`: a pure function, so resuming is exact.
    With `lengths` (one per example), each global batch holds examples of similar length (less padding)."""
    if lengths is not None and len(lengths) != n:
        raise ValueError(f"lengths has {len(lengths)} entries for {n} examples.")
    start = (micro * world + rank) * batch_size
    return [_epoch_order(n, seed, pos // n, lengths, batch_size * world)[pos % n]
            for pos in range(start, start + batch_size)]


def example_length(example) -> int:
    """A cheap proxy of an example's sequence length for length grouping: its prompt and target characters."""
    return len(example.prompt) + len(example.target)


def target_tokens(batch: Batch) -> int:
    """The tokens a loss on `batch` averages over: answer tokens (shifted labels), or rows without labels."""
    if batch.labels is None:
        return int(batch.input_ids.shape[0])
    return int((batch.labels[:, 1:] != -100).sum())


def batch_to(batch: Batch, device) -> Batch:
    return Batch(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in
                   (batch.input_ids, batch.attention_mask, batch.prompt_mask, batch.image_features, batch.labels)))


class _LossModule(nn.Module):
    """Model + loss in one forward, so that a DDP wrapper sees the whole computation."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


# ----------------------------------------------------------------------------- checkpoints

def _fingerprint(config: TrainConfig, n_examples: int, params: dict[str, nn.Parameter]) -> dict:
    """What must match for a run directory to be resumed (logging cadence may change)."""
    cfg = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_every", "log_every", "eval_every")}
    return {"config": cfg, "n_examples": n_examples, "params": {k: list(p.shape) for k, p in params.items()}}


def _check_fingerprint(run_dir: Path, stored: dict, expected: dict) -> None:
    if stored != expected:
        raise ValueError(
            f"{run_dir} holds a run with different settings; use another run_dir or delete it.\n"
            f"  stored:   {json.dumps(stored, sort_keys=True)}\n  expected: {json.dumps(expected, sort_keys=True)}")


def _save_checkpoint(run_dir: Path, step: int, params: dict, optimizer, scheduler, state: dict) -> None:
    ckpt = run_dir / f"ckpt-{step:06d}"
    ckpt.mkdir(parents=True, exist_ok=True)
    io.save_tensors(ckpt / "trainable.safetensors", {k: p.data for k, p in params.items()})
    with io.atomic_path(ckpt / "optim.pt") as tmp:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp)
    io.write_json(ckpt / "state.json", state)
    io.write_json(run_dir / "checkpoint.json", {"step": step, "dir": ckpt.name})  # last: commits the checkpoint
    for old in run_dir.glob("ckpt-*"):
        if old != ckpt and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def load_tensors_into(params: dict[str, nn.Parameter], path: Path) -> None:
    from safetensors.torch import load_file

    io.copy_tensors_into(params, load_file(str(path)), path)


def _torch_rng_state() -> dict:
    state = {"cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_torch_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ----------------------------------------------------------------------------- the loop

def _check_launch(world: int) -> None:
    """A launcher started several processes but Accelerate sees one: each would train alone on the
    whole data and they would overwrite each other's run directory. Accelerate 1.x does that under
    `accelerate launch --multi_gpu` on a machine without GPUs unless ACCELERATE_USE_CPU=1 is set (and
    `--cpu --num_processes N` starts a single process unless mpirun is configured)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and world == 1:
        raise RuntimeError(f"{launched} processes were launched (WORLD_SIZE={launched}) but Accelerate runs "
                           "each one alone; on a CPU-only machine set ACCELERATE_USE_CPU=1, e.g. "
                           "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...`.")


def train(model: nn.Module, examples, config: TrainConfig, *, run_dir: str | Path | None,
          loss_fn: Callable = answer_loss,
          skip_sampler: Callable[[int, np.random.Generator], Any] | None = None,
          on_step: Callable[[int, nn.Module, float], None] | None = None,
          eval_fn: Callable[[nn.Module], dict] | None = None,
          stateful: dict[str, Any] | None = None,
          progress: bool = True) -> TrainResult:
    """Train the parameters of `model` that require grad on `examples`; see the module docstring.

    skip_sampler(step, rng) -> SkipSet | None   called before each step; a SkipSet is applied for that
                                                step (None leaves the model's current skips as they are)
    on_step(step, model, loss)                  called after each optimizer step (step counts from 0)
    eval_fn(model) -> dict                      called every `config.eval_every` steps, stored in `evals`
    stateful {name: obj}                        objects with JSON-able state_dict()/load_state_dict(),
                                                saved in every checkpoint and restored on resume
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from tqdm import tqdm  # text bars: they also reach papermill's log and the book
    from transformers import get_cosine_schedule_with_warmup

    examples = list(examples)
    stateful = dict(stateful or {})
    params = trainable_parameters(model)
    if not params:
        raise ValueError("nothing to train: no parameter of the model has requires_grad=True "
                         "(attach adapters or unfreeze a module first).")
    if not examples:
        raise ValueError("no training examples given.")
    n_trainable = sum(p.numel() for p in params.values())
    run_dir = Path(run_dir) if run_dir is not None else None
    fingerprint = _fingerprint(config, len(examples), params)

    # A finished run is not repeated.
    if run_dir is not None and (run_dir / "done.json").exists():
        done = json.loads((run_dir / "done.json").read_text())
        _check_fingerprint(run_dir, done["fingerprint"], fingerprint)
        load_tensors_into(params, run_dir / "final.safetensors")
        for name, obj in stateful.items():
            obj.load_state_dict(done["stateful"][name])
        return TrainResult(**{**done["result"], "from_cache": True})

    # Skipped modules leave their adapters unused in a step, which DDP must be told about.
    accelerator = Accelerator(step_scheduler_with_optimizer=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    world, rank = accelerator.num_processes, accelerator.process_index
    _check_launch(world)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} is the global micro-batch: it must be a multiple of "
                         f"the number of processes ({world}).")
    per_rank = config.batch_size // world
    lengths = tuple(example_length(e) for e in examples) if config.group_by_length else None
    total = config.total_steps(len(examples))

    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup(total), total)
    wrapped, optimizer, scheduler = accelerator.prepare(_LossModule(model, loss_fn), optimizer, scheduler)

    # Fresh start or resume.
    torch.manual_seed(config.seed)
    start, history, evals, wall_before = 0, [], [], 0.0
    if run_dir is not None and (run_dir / "checkpoint.json").exists():
        pointer = json.loads((run_dir / "checkpoint.json").read_text())
        ckpt = run_dir / pointer["dir"]
        state = json.loads((ckpt / "state.json").read_text())
        _check_fingerprint(run_dir, state["fingerprint"], fingerprint)
        load_tensors_into(params, ckpt / "trainable.safetensors")
        blob = torch.load(ckpt / "optim.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        _set_torch_rng_state(state["torch_rng"])
        for name, obj in stateful.items():
            obj.load_state_dict(state["stateful"][name])
        start, history, evals, wall_before = state["step"], state["history"], state["evals"], state["wall_time"]

    was_training = model.training
    wrapped.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc="train", disable=not progress or not accelerator.is_main_process)

    def snapshot(step_done: int) -> dict:
        return {"step": step_done, "history": history, "evals": evals, "fingerprint": fingerprint,
                "wall_time": wall_before + time.perf_counter() - t0, "torch_rng": _torch_rng_state(),
                "stateful": {name: obj.state_dict() for name, obj in stateful.items()}}

    for step in range(start, total):
        row: dict[str, Any] = {"step": step}
        if skip_sampler is not None:
            skips = skip_sampler(step, np.random.default_rng([config.seed, step]))
            if skips is not None:
                skips.apply(model)  # an eas.method.skip.SkipSet (this layer knows nothing of skipping)
                row["skips"] = skips.to_dict()

        optimizer.zero_grad(set_to_none=True)
        batches = []
        for a in range(config.grad_accum):
            idx = batch_indices(len(examples), per_rank, step * config.grad_accum + a, config.seed, rank, world,
                                lengths)
            batches.append(batch_to(model.collate([examples[i] for i in idx], with_target=True), accelerator.device))
        # Each micro-batch's mean loss is weighted by its share of the global batch's answer tokens, so the
        # step's loss is one mean over all of them; the count needs one all-reduce before the backward passes.
        counts = [target_tokens(b) for b in batches]
        global_count = accelerator.reduce(torch.tensor(float(sum(counts)), device=accelerator.device),
                                          reduction="sum")
        step_loss = torch.zeros((), device=accelerator.device)
        for a, (batch, count) in enumerate(zip(batches, counts)):
            share = count / global_count
            # Gradients are only synchronised across processes on the last micro-batch.
            sync = nullcontext() if a == config.grad_accum - 1 else accelerator.no_sync(wrapped)
            with sync, accelerator.autocast():
                loss = wrapped(batch)
                # DDP averages gradients over processes; `* world` turns that average back into the sum
                # of the token-weighted shares.
                accelerator.backward(loss * share * world)
            step_loss += loss.detach() * share
        step_loss = accelerator.reduce(step_loss, reduction="sum").item()  # every process sees the same value
        if not math.isfinite(step_loss):
            raise TrainingDiverged(step, step_loss)

        grad_norm = None
        if config.max_grad_norm is not None:
            grad_norm = float(accelerator.clip_grad_norm_(list(params.values()), config.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise TrainingDiverged(step, grad_norm, what="gradient norm")
        row.update(loss=step_loss, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm)
        optimizer.step()
        scheduler.step()
        history.append(row)

        if on_step is not None:
            on_step(step, model, step_loss)
        if eval_fn is not None and config.eval_every and (step + 1) % config.eval_every == 0:
            evals.append({"step": step, **eval_fn(model)})
            wrapped.train()
        bar.update(1)
        if config.log_every and (step + 1) % config.log_every == 0:
            recent = history[-config.log_every:]
            bar.set_postfix(loss=f"{sum(h['loss'] for h in recent) / len(recent):.4f}", lr=f"{row['lr']:.2e}")
        if run_dir is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 \
                and step + 1 < total:
            if accelerator.is_main_process:
                _save_checkpoint(run_dir, step + 1, params, optimizer, scheduler, snapshot(step + 1))
            accelerator.wait_for_everyone()
    bar.close()
    model.train(was_training)

    final = snapshot(total)
    result = TrainResult(history=history, wall_time=final["wall_time"], trainable_params=n_trainable,
                         steps=total, evals=evals, resumed_from=start)
    if run_dir is not None and accelerator.is_main_process:
        io.save_tensors(run_dir / "final.safetensors", {k: p.data for k, p in params.items()})
        io.write_json(run_dir / "done.json", {"result": result.to_dict(), "fingerprint": fingerprint,
                                               "stateful": final["stateful"]})
    accelerator.wait_for_everyone()
    return result
