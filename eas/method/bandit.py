"""The k-armed bandit redundancy search of EAS (paper section 4.3, Eq. 14-16).

Each candidate module i (an MHA, an FFN, or a whole layer) has a preference s_i, all 0 at the start.
A comparison draws m sub-networks. For sub-network j every candidate gets a policy value
    pi_ji ~ U(0, softmax(s)_i)                                            (Eq. 14)
and the k candidates with the LOWEST pi are skipped (Eq. 15): a high preference means "keep".
Sub-network j is scored on a held-out batch (never the training batch), with its skip set applied and
the shared adapters in place: r_j = exp(-loss_j).

Sign convention of the update. Eq. 16 as printed adds (mean(r) - r_j) * pi_ji (1 - pi_ji) to the
preference of every module KEPT by sub-network j. That lowers the preference of modules kept by the
better-than-average sub-networks, i.e. the modules whose presence goes with a low loss would drift
towards being skipped, which contradicts the paper's own text (better sub-networks show that their
active modules matter) and its final rule (skip the k lowest s). We therefore use the coherent sign
    s_i += lr * (r_j - mean(r)) * pi_ji * (1 - pi_ji)      for every i kept by sub-network j, every j
so modules kept by winning sub-networks gain preference, and the final choice is the k candidates with
the lowest s. `sign=-1` reproduces the printed rule (the tests use it as a negative control: it fails
to find a planted redundant set). `lr` scales the step: reward gaps are small (|r_j - mean| ~ 0.01-0.2)
and pi (1 - pi) is below 1/n, so useful values are in the tens (20 finds the planted sets of the tests).

Candidates by kind:
    "mha", "ffn", "layer"   n candidates, one per decoder layer
    "mha_or_ffn"            2n candidates: 0..n-1 are the MHAs of layers 0..n-1, n..2n-1 their FFNs.
                            Both modules of one layer may be skipped together (the layer then passes its
                            input through unchanged), which is a legitimate, cheaper sub-network.
At least one attention always stays: the k skipped are the k lowest-ranked candidates among those whose
removal leaves an attention (only matters for "mha_or_ffn" with k >= n; "mha"/"layer" need k < n).

Schedule when plugged into `eas.models.train.train` (`search.skip_sampler`, `search.on_step`, `stateful`):
    steps [0, warmup_steps)   train the shared adapters with uniformly random skip sets (warm-up)
    steps >= warmup_steps     train with skip sets sampled from the current policy (Eq. 14-15), and
                              after every T such steps run one comparison (m held-out evaluations under
                              torch.no_grad, then the update); the model's skip set is restored after.

Every comparison appends one JSON record (comparison index, step, preferences before/after, each
sub-network's pi, skipped candidates, skip set, loss, reward, and the RNG state after) to `bandit.jsonl`
in the run directory (flushed and fsync'ed line by line), after a header line with the settings.
Resuming: a model-free search (`run`, `run_search`) continues from the log, taking the preferences and
RNG state of the last complete record (a torn last line is dropped). Under `eas.models.train` the search is
passed as `stateful`, so each training checkpoint holds its state; on resume the log is cut back to
the comparisons that checkpoint had seen, and the resumed training redoes the rest identically.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from eas.core import io
from eas.method.skip import SkipError, SkipSet, apply_skips, current_skips
from eas.models.mini_llava import answer_loss
from eas.models.train import batch_to

CANDIDATE_KINDS = ("mha", "ffn", "mha_or_ffn", "layer")
LOG_NAME = "bandit.jsonl"


@dataclass
class BanditConfig:
    k: int  # candidates to skip
    m: int = 3  # sub-networks per comparison
    T: int = 10  # training steps between comparisons
    lr: float = 20.0  # preference learning rate (see the module docstring for its scale)
    warmup_steps: int = 0  # training steps with random skip sets before the search starts
    kind: str = "mha"
    seed: int = 0
    sign: int = 1  # +1: the coherent rule used by EAS here; -1: Eq. 16 as printed (negative control)

    def __post_init__(self):
        if self.kind not in CANDIDATE_KINDS:
            raise SkipError(f"unknown candidate kind {self.kind!r}; expected one of {', '.join(CANDIDATE_KINDS)}.")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}.")
        if self.m < 2:
            raise ValueError(f"m must be >= 2: a comparison needs at least two sub-networks, got {self.m}.")
        if self.T < 1:
            raise ValueError(f"T (steps between comparisons) must be >= 1, got {self.T}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        if self.sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {self.sign}.")


# ----------------------------------------------------------------------------- candidates

def num_candidates(kind: str, n_layers: int) -> int:
    if kind not in CANDIDATE_KINDS:
        raise SkipError(f"unknown candidate kind {kind!r}; expected one of {', '.join(CANDIDATE_KINDS)}.")
    return 2 * n_layers if kind == "mha_or_ffn" else n_layers


def max_skippable(kind: str, n_layers: int) -> int:
    """The most candidates that can be skipped while one attention stays."""
    return num_candidates(kind, n_layers) - (0 if kind == "ffn" else 1)


def check_k(k: int, kind: str, n_layers: int) -> None:
    if k > max_skippable(kind, n_layers):
        raise SkipError(f"cannot skip k={k} {kind} candidates of a {n_layers}-layer model: "
                        f"at most {max_skippable(kind, n_layers)} leave at least one attention.")


def _removes_attention(c: int, kind: str, n_layers: int) -> bool:
    return kind in ("mha", "layer") or kind == "mha_or_ffn" and c < n_layers


def candidate_skip_set(indices, kind: str, n_layers: int) -> SkipSet:
    """The SkipSet that skips candidates `indices` (distinct, in range, leaving one attention)."""
    n = num_candidates(kind, n_layers)
    indices = [int(i) for i in indices]
    if any(not 0 <= i < n for i in indices):
        raise SkipError(f"candidate indices {indices} out of range 0..{n - 1} for kind {kind!r}.")
    if len(set(indices)) != len(indices):
        raise SkipError(f"duplicate candidate indices in {indices}.")
    if sum(_removes_attention(i, kind, n_layers) for i in indices) >= n_layers:
        raise SkipError(f"skipping candidates {sorted(indices)} ({kind}) would remove every attention.")
    if kind == "mha_or_ffn":
        return SkipSet(mha=[i for i in indices if i < n_layers], ffn=[i - n_layers for i in indices if i >= n_layers])
    return SkipSet.of(kind, indices)


def lowest_k(values, k: int, kind: str, n_layers: int) -> list[int]:
    """The k candidates with the lowest values, passing over any whose removal would drop the last attention."""
    chosen, attn_left = [], n_layers
    for c in np.argsort(np.asarray(values, dtype=float), kind="stable").tolist():
        if len(chosen) == k:
            break
        if _removes_attention(c, kind, n_layers):
            if attn_left == 1:
                continue
            attn_left -= 1
        chosen.append(c)
    return sorted(chosen)


def random_skip_sampler(n_candidates: int, k: int, kind: str, seed: int = 0) -> Callable:
    """A `skip_sampler` for the warm-up: k uniformly random candidates, a pure function of (seed, step)."""
    n_layers = n_candidates // 2 if kind == "mha_or_ffn" else n_candidates
    if num_candidates(kind, n_layers) != n_candidates:
        raise SkipError(f"{n_candidates} candidates cannot be of kind {kind!r} (it needs an even number).")
    check_k(k, kind, n_layers)

    def sample(step: int, rng=None) -> SkipSet:
        noise = np.random.default_rng([seed, 7, step]).random(n_candidates)
        return candidate_skip_set(lowest_k(noise, k, kind, n_layers), kind, n_layers)

    return sample


# ----------------------------------------------------------------------------- the search

def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max())
    return e / e.sum()


def _load_log(path: Path) -> list[dict]:
    """Complete records of a log; a torn last line (a crash mid-write) is dropped."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class BanditSearch:
    """Preferences, policy sampling, comparisons and the log of one redundancy search."""

    def __init__(self, config: BanditConfig, n_layers: int, *, run_dir: str | Path | None = None,
                 heldout_batch=None, loss_fn: Callable | None = None):
        self.config = config
        self.n_layers = n_layers
        self.n = num_candidates(config.kind, n_layers)
        check_k(config.k, config.kind, n_layers)
        self.heldout_batch = heldout_batch
        self.loss_fn = loss_fn
        self.s = np.zeros(self.n)
        self.rng = np.random.default_rng(config.seed)
        self.records: list[dict] = []
        self.log_path = Path(run_dir) / LOG_NAME if run_dir is not None else None
        self._log_synced = False  # until the file is rewritten from memory, never append to it

    # --- persistence
    def _header(self) -> dict:
        return {"config": asdict(self.config), "n_layers": self.n_layers}

    def _read_log(self) -> list[dict]:
        records = _load_log(self.log_path) if self.log_path is not None else []
        if records and records[0].get("header") != self._header():
            raise ValueError(f"{self.log_path} belongs to a search with other settings: {records[0].get('header')}")
        return records[1:]

    def resume_from_log(self) -> "BanditSearch":
        """Continue after the last complete record of the log: its preferences and RNG state."""
        self.records = self._read_log()
        if self.records:
            last = self.records[-1]
            self.s = np.array(last["s_after"], dtype=float)
            self.rng.bit_generator.state = last["rng_after"]
        self._rewrite_log()  # drops a torn line, or starts a new log with its header
        return self

    def _rewrite_log(self) -> None:
        if self.log_path is not None and _is_main_process():
            lines = [json.dumps({"header": self._header()})] + [json.dumps(r) for r in self.records]
            io.write_text(self.log_path, "\n".join(lines) + "\n")
        self._log_synced = True

    def _persist(self, record: dict) -> None:
        if not self._log_synced:
            return self._rewrite_log()  # a fresh search replaces whatever an earlier one left there
        if self.log_path is not None and _is_main_process():
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def state_dict(self) -> dict:
        """JSON-able state, saved in `eas.models.train` checkpoints so search and training resume together."""
        return {"s": self.s.tolist(), "rng": self.rng.bit_generator.state, "n_records": len(self.records)}

    def load_state_dict(self, state: dict) -> None:
        self.s = np.array(state["s"], dtype=float)
        self.rng.bit_generator.state = state["rng"]
        # Comparisons logged after the checkpoint are dropped: the resumed training redoes them.
        logged = self._read_log() if self.log_path is not None else self.records
        if len(logged) < state["n_records"]:
            raise ValueError(f"the bandit log {self.log_path} holds {len(logged)} comparisons, "
                             f"the checkpoint expects {state['n_records']}.")
        self.records = logged[: state["n_records"]]
        self._rewrite_log()

    # --- policy
    def sample_policy(self, rng: np.random.Generator) -> np.ndarray:
        """Eq. 14: pi_i ~ U(0, softmax(s)_i)."""
        return rng.random(self.n) * softmax(self.s)

    def skipped_of(self, pi) -> list[int]:
        """Eq. 15: the k candidates with the lowest pi (one attention always stays)."""
        return lowest_k(pi, self.config.k, self.config.kind, self.n_layers)

    def skip_set(self, candidates) -> SkipSet:
        return candidate_skip_set(candidates, self.config.kind, self.n_layers)

    def chosen(self) -> list[int]:
        """The final choice: the k candidates with the lowest preference."""
        return lowest_k(self.s, self.config.k, self.config.kind, self.n_layers)

    def chosen_skip_set(self) -> SkipSet:
        return self.skip_set(self.chosen())

    # --- one comparison
    def compare(self, loss_of: Callable[[SkipSet], float], step: int | None = None) -> dict:
        """Draw m sub-networks, score each with `loss_of(skip_set)`, update s (Eq. 16, coherent sign)."""
        cfg = self.config
        s_before = self.s.copy()
        subnets = []
        for _ in range(cfg.m):
            pi = self.sample_policy(self.rng)
            skipped = self.skipped_of(pi)
            skips = self.skip_set(skipped)
            loss = float(loss_of(skips))
            subnets.append({"pi": pi.tolist(), "skipped": skipped, "skip_set": skips.to_dict(),
                            "loss": loss, "reward": math.exp(-loss) if math.isfinite(loss) else 0.0})
        mean_reward = sum(sn["reward"] for sn in subnets) / cfg.m
        for sn in subnets:
            pi = np.array(sn["pi"])
            kept = np.ones(self.n, dtype=bool)
            kept[sn["skipped"]] = False
            self.s[kept] += cfg.sign * cfg.lr * (sn["reward"] - mean_reward) * pi[kept] * (1 - pi[kept])
        record = {"comparison": len(self.records), "step": len(self.records) if step is None else step,
                  "s_before": s_before.tolist(), "s_after": self.s.tolist(), "mean_reward": mean_reward,
                  "subnets": subnets, "rng_after": self.rng.bit_generator.state}
        self.records.append(record)
        self._persist(record)
        return record

    def run(self, loss_of: Callable[[SkipSet], float], comparisons: int) -> "BanditSearch":
        """Model-free search: compare until `comparisons` records exist (continuing the log, if any)."""
        if self.log_path is not None:
            self.resume_from_log()
        while len(self.records) < comparisons:
            self.compare(loss_of)
        return self

    # --- hooks for eas.models.train.train
    def heldout_loss(self, model, skips: SkipSet) -> float:
        """Loss of `model` with `skips` applied on the held-out batch; the model's skips are restored."""

        if self.heldout_batch is None:
            raise ValueError("BanditSearch needs a held-out batch (heldout_batch=...) to run comparisons.")
        loss_fn = self.loss_fn or answer_loss
        device = next(model.parameters()).device
        before, was_training = current_skips(model), model.training
        model.eval()
        try:
            apply_skips(model, skips)
            with torch.no_grad():
                return float(loss_fn(model, batch_to(self.heldout_batch, device)))
        finally:
            apply_skips(model, before)
            model.train(was_training)

    def skip_sampler(self, step: int, rng: np.random.Generator) -> SkipSet:
        """Random k during the warm-up, then the current policy (Eq. 14-15)."""
        if step < self.config.warmup_steps:
            noise = rng.random(self.n)
            return self.skip_set(lowest_k(noise, self.config.k, self.config.kind, self.n_layers))
        return self.skip_set(self.skipped_of(self.sample_policy(rng)))

    def on_step(self, step: int, model, loss: float) -> None:
        """After every T search-phase steps, run one comparison on the held-out batch."""
        searched = step + 1 - self.config.warmup_steps
        if searched > 0 and searched % self.config.T == 0:
            self.compare(lambda skips: self.heldout_loss(model, skips), step=step)

    def search_steps(self, comparisons: int) -> int:
        """Training steps that give `comparisons` comparisons after the warm-up."""
        return self.config.warmup_steps + comparisons * self.config.T


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def run_search(config: BanditConfig, n_layers: int, loss_of: Callable[[SkipSet], float], comparisons: int,
               *, run_dir: str | Path | None = None) -> BanditSearch:
    """A search driven by an arbitrary `loss_of(skip_set)`; resumes from `run_dir`'s log if there is one."""
    return BanditSearch(config, n_layers, run_dir=run_dir).run(loss_of, comparisons)
