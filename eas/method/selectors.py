"""Which k modules to skip: the simple selectors EAS's bandit search is compared with.

    random_k          k candidates drawn uniformly (seeded)
    last_k            the last k layers (never all of them)
    attention_drop    cos(x, x + Attn(norm_a x)) per layer: a sub-block that barely turns the residual
                      stream is redundant (high similarity = skip first); kind "mha" or "ffn"
    block_influence   1 - cos(block input, block output) per layer: low influence = skip first;
                      kind "layer" (whole block) or a sub-block ("mha", "ffn"). For an MHA it is exactly
                      1 - attention drop's score, so it ranks MHAs identically: use it for layers (DAS)
    greedy            SLEB-style greedy removal, training-free: k rounds, each removes the candidate whose
                      removal (given those already removed) raises the held-out answer loss least
    bandit            the finished EAS / DAS search (eas.method.bandit.BanditSearch): lowest preference first

The similarity selectors need no training: one no-grad forward per batch with hooks on the EASBlocks,
cosines per token averaged over each prompt's real tokens (padding never counts, so a padded batch
scores like its examples one by one). Every selector returns a `Selection`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eas.method import probe
from eas.method import skip as skip_mod
from eas.method.bandit import candidate_skip_set, check_k, lowest_k, num_candidates
from eas.method.skip import SkipError, SkipSet, check_kind, eas_blocks
from eas.models import arch
from eas.models.causal_lm import model_of
from eas.models.mini_llava import Batch
from eas.models.prompt import prompt_context


@dataclass(frozen=True)
class Selection:
    """A selector's verdict. `scores` are the selector's own numbers, one per candidate; `ranking`
    orders the candidates most redundant first; `chosen` are the k skipped candidates (sorted)."""

    name: str
    kind: str
    n_layers: int
    scores: tuple[float, ...]
    ranking: tuple[int, ...]
    chosen: tuple[int, ...]
    trace: tuple = ()  # selectors that work in rounds (greedy): one dict per round


    def skip_set(self) -> SkipSet:
        return candidate_skip_set(self.chosen, self.kind, self.n_layers)

    def to_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "n_layers": self.n_layers, "scores": list(self.scores),
               "ranking": list(self.ranking), "chosen": list(self.chosen)}
        if self.trace:
            out["trace"] = [dict(t) for t in self.trace]
        return out


def _check_k(k, kind: str, n_layers: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SkipError(f"k must be a positive integer (modules to skip), got {k!r}.")
    check_k(int(k), kind, n_layers)
    return int(k)


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SkipError(f"n (the number of layers) must be a positive integer, got {n!r}.")
    return int(n)


def _select(name: str, kind: str, n_layers: int, scores, redundancy, k: int | None) -> Selection:
    """`redundancy`: lower = skip first. Without k, `chosen` is empty (a ranking only)."""
    ranking = tuple(int(i) for i in np.argsort(np.asarray(redundancy, dtype=float), kind="stable"))
    chosen = tuple(lowest_k(redundancy, _check_k(k, kind, n_layers), kind, n_layers)) if k is not None else ()
    return Selection(name, kind, n_layers, tuple(float(s) for s in scores), ranking, chosen)


# ----------------------------------------------------------------------------- model-free

def random_k(n: int, k: int, seed: int = 0, kind: str = "mha") -> Selection:
    """k of the n layers' `kind` modules, uniformly at random (a pure function of the seed)."""
    n = _check_n(n)
    check_kind(kind)
    scores = np.random.default_rng(seed).random(num_candidates(kind, n))
    return _select("random_k", kind, n, scores, scores, k)


def last_k(n: int, k: int, kind: str = "mha") -> Selection:
    """The last k layers' `kind` modules; scores are the layer indices (later = skipped first)."""
    n = _check_n(n)
    check_kind(kind)
    scores = np.arange(n, dtype=float)
    return _select("last_k", kind, n, scores, -scores, k)


def bandit(search, k: int | None = None) -> Selection:
    """A finished `eas.method.bandit.BanditSearch`: its preferences s, lowest first (its own `chosen()`)."""
    cfg = search.config
    k = cfg.k if k is None else k
    if k != cfg.k:
        _check_k(k, cfg.kind, search.n_layers)
    return _select("bandit", cfg.kind, search.n_layers, search.s, search.s, k)


# ----------------------------------------------------------------------------- similarity

def _batches(target, examples, batch_size: int):

    if isinstance(examples, Batch):
        return [examples]
    examples = list(examples)
    if not examples:
        raise ValueError("no examples given to score the layers on.")
    if all(isinstance(e, Batch) for e in examples):
        return examples
    return [target.collate(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]


def _inner(target) -> nn.Module:

    return model_of(target)


@torch.no_grad()
def layer_similarities(target, examples, kind: str = "mha", batch_size: int = 8) -> np.ndarray:
    """Per layer, the mean over real prompt tokens of cos(in, out) of the `kind` sub-block:
    mha: cos(x, x + Attn(norm_a x)); ffn: cos(h, h + MLP(norm_f h)); layer: cos(block in, block out).
    A skipped sub-block scores nan (it is not there to measure)."""

    check_kind(kind)
    model = _inner(target)
    blocks = eas_blocks(model)
    n = len(blocks)
    total = torch.zeros(n, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    seen: dict[int, dict] = {}

    def block_pre(i):
        def hook(blk, args, kwargs):
            seen[i] = {"x": args[0] if args else kwargs["hidden_states"]}
        return hook

    def attn_out(i):
        def hook(attn, args, output):
            seen[i]["attn"] = output[0]
        return hook

    def mlp_out(i):
        def hook(mlp, args, output):
            seen[i]["mlp"] = output
        return hook

    def block_out(i):
        def hook(blk, args, kwargs, output):
            seen[i]["y"] = output
        return hook

    handles = []
    for i, blk in enumerate(blocks):
        parts = arch.layer_parts(blk)
        handles += [blk.register_forward_pre_hook(block_pre(i), with_kwargs=True),
                    blk.register_forward_hook(block_out(i), with_kwargs=True),
                    parts.attn.register_forward_hook(attn_out(i)),
                    parts.mlp.register_forward_hook(mlp_out(i))]
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(target, examples, batch_size):
            device = next(model.parameters()).device
            mask = (batch.prompt_mask if batch.prompt_mask is not None else batch.attention_mask).bool().to(device)
            with prompt_context(batch.prompt_mask, batch.attention_mask):
                target(batch.input_ids.to(device), batch.attention_mask.to(device),
                       None if batch.image_features is None else batch.image_features.to(device))
            for i in range(n):
                got = seen.get(i, {})
                if kind == "mha" and "attn" in got:
                    a, b = got["x"], got["x"] + got["attn"]
                elif kind == "ffn" and "mlp" in got:
                    b = got["y"]
                    a = b - got["mlp"]  # the residual stream entering the FFN
                elif kind == "layer" and "y" in got:
                    a, b = got["x"], got["y"]
                else:
                    continue
                cos = F.cosine_similarity(a.double(), b.double(), dim=-1)  # (B, T)
                total[i] += cos[mask].sum().cpu()
                count[i] += mask.sum().cpu()
            seen.clear()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = torch.full((n,), float("nan"), dtype=torch.float64)
    has = count > 0
    out[has] = total[has] / count[has]
    return out.numpy()


def attention_drop(target, examples, kind: str = "mha", k: int | None = None, batch_size: int = 8) -> Selection:
    """Scores cos(x, x + Attn(norm_a x)) (or the FFN's); the most similar (least change) is skipped first."""
    if kind not in ("mha", "ffn"):
        raise SkipError(f"attention_drop scores a sub-block: kind must be 'mha' or 'ffn', got {kind!r}.")
    sim = layer_similarities(target, examples, kind, batch_size)
    return _select("attention_drop", kind, len(sim), sim, -np.nan_to_num(sim, nan=-np.inf), k)


def block_influence(target, examples, kind: str = "layer", k: int | None = None, batch_size: int = 8) -> Selection:
    """Scores 1 - cos(block input, block output); the least influential is skipped first."""
    sim = layer_similarities(target, examples, kind, batch_size)
    influence = 1.0 - sim
    return _select("block_influence", kind, len(sim), influence, np.nan_to_num(influence, nan=np.inf), k)


# ----------------------------------------------------------------------------- greedy removal

def _candidate_layer(c: int, kind: str, n_layers: int) -> int:
    return c % n_layers if kind == "mha_or_ffn" else c


def greedy(model, examples, kind: str = "mha", k: int | None = None, batch_size: int = 8,
           progress: bool = True) -> Selection:
    """Greedy removal without training (as SLEB does for whole blocks): in each of k rounds, remove the
    candidate whose removal, on top of those already removed, gives the lowest teacher-forced answer
    loss on `examples` (a held-out set). Ties go to the lower index, so the result is deterministic.

    Cost: k rounds x (candidates left) loss evaluations on the held-out batches, each re-running only
    the layers from the candidate's own on (eas.method.probe.trial_scores), logits only at answer tokens;
    plus one unmodified forward per batch and round. Keep `examples` small (the spec's `heldout`).

    `scores[c]`: the held-out loss after removing c in the round it was removed; for a candidate never
    removed, the loss its removal would have given in the last round (nan if it was never allowed).
    `ranking`: the removal order, then the others by that last-round loss. `trace`: per round, the
    loss of every candidate tried. The model's own skip set is restored afterwards.
    """
    from tqdm import tqdm  # text bars: they also reach papermill's log and the book


    num_candidates(kind, 1)  # an unknown kind fails here, before any work
    n = len(eas_blocks(model))  # a MiniLlava-like model: the probe collates and caches image features
    if k is None:
        raise SkipError("greedy removal needs k (the number of rounds, i.e. modules to skip).")
    k = _check_k(k, kind, n)
    n_cand = num_candidates(kind, n)
    batches = probe.probe_batches(model, list(examples), batch_size, progress)
    before = skip_mod.current_skips(model)
    removed: list[int] = []
    trace = []
    last_losses = np.full(n_cand, np.nan)
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=None, desc=f"greedy removal of {k} {kind}", disable=not progress) as bar:
            base_loss = None
            for step in range(k):
                base = candidate_skip_set(removed, kind, n)
                cands = []
                for c in range(n_cand):
                    if c in removed:
                        continue
                    try:
                        cands.append((c, candidate_skip_set([*removed, c], kind, n)))
                    except SkipError:  # would remove the last attention
                        continue
                trials = [(skips, _candidate_layer(c, kind, n)) for c, skips in cands]
                if step == 0:  # the unmodified model's loss, for the trace's first row
                    trials.append((base, 0))
                bar.total = (bar.total or 0) + len(trials) * len(batches)
                bar.refresh()
                totals = probe.trial_scores(model, batches, base, trials, bar)
                losses = [t[0] / t[2] for t in totals]
                if step == 0:
                    base_loss = losses.pop()
                best = min(range(len(cands)), key=lambda j: (losses[j], cands[j][0]))
                last_losses[:] = np.nan
                for (c, _), loss in zip(cands, losses):
                    last_losses[c] = loss
                picked = cands[best][0]
                removed.append(picked)
                trace.append({"step": step, "removed": picked, "loss": losses[best],
                              "loss_before": base_loss if step == 0 else trace[-1]["loss"],
                              "candidates": [c for c, _ in cands], "losses": losses})
                bar.set_postfix(removed=picked, loss=f"{losses[best]:.3f}")
    finally:
        skip_mod.apply_skips(model, before)
        model.train(was_training)
    scores = last_losses.copy()
    for t in trace:
        scores[t["removed"]] = t["loss"]
    rest = [c for c in np.argsort(np.nan_to_num(last_losses, nan=np.inf), kind="stable").tolist() if c not in removed]
    return Selection("greedy", kind, n, tuple(float(x) for x in scores), tuple(removed) + tuple(rest),
                     tuple(sorted(removed)), tuple(trace))
