"""Re-parameterisation (Eq. 8-13): after prefill, PIAs disappear into the base model's weights.

Per example, once the prompt mean is frozen, a skip-replacing PIA is affine, pia(n) = n @ Wp + bp with
Wp = Wd1 @ (alpha1 Wu1 + alpha2 Wu2). Its FFN then computes, for G = [Wg; Wu].T (d, 2 d_ff),

    [gate'(n), up'(n)] = (n + n Wp + bp) @ G = n @ (G + alpha1 A1 + alpha2 A2) + bp @ G,   A_k = Wd1 @ (Wu_k @ G)

The bias uses the ORIGINAL G (the reference code multiplied bp by the already-merged weight: a bug).
A_k is precomputed once per task (`prepare_reparam`, ~2 r d 2d_ff flops, never a dense d x d matrix),
so the per-example merge is one axpy. Adaptation PIAs (per task, example-independent) fold into q/k/v
the same way: `fold_adaptation` folds them into q/k/v once per task (what deployment and every timed
merged row do, `prepare_deployment`); left unfolded, `prepare_reparam` builds merged q/k/v copies that
each merge swaps in.

Batch > 1: alpha differs per example. Exact strategies (PIAConfig.merge_strategy):
    per_example  the paper's merge and the reference: W_b = M2 + alpha1_b (A1 - A2), one (d, 2 d_ff) weight
                 per example, applied with bmm. Batch 1 decodes a plain matmul of the original size, but
                 every prompt rewrites d x 2 d_ff numbers per skipped layer (memory-bound: ~190 ms a layer
                 at 1B on a CPU), and batch B decodes with B weight copies in memory and in traffic.
    two_matrix   n @ M2 + alpha1_b (n @ (A1 - A2)): no per-example weights (the merge is only the bias)
                 but twice the gate/up flops while decoding.
    low_rank     the merge kept factored: [gate'(n), up'(n)] = n @ G + (n @ Wd1) @ B(alpha) + bias with
                 B_k = Wu_k @ G (r x 2 d_ff, per task) and B(alpha) = alpha1 B1 + alpha2 B2 per example.
                 G stays the original gate/up weights (no copy at any batch size), the per-prompt merge
                 and the bias are O(r d_ff), and decoding pays r (d + 2 d_ff) extra multiply-adds a
                 token, a few percent of the FFN's 3 d d_ff at r << d. At batch > 1 the per-example mix
                 goes into the input instead, [h, alpha1 h] @ [B2; B1 - B2] with h = n @ Wd1, so no
                 per-example (r, 2 d_ff) maps are held either (2 r x 2 d_ff multiply-adds a token).
(alpha1 + alpha2 = 1, so M2 + alpha1 (A1 - A2) = alpha1 M1 + alpha2 M2 with M_k = G + A_k.)

The merged MLP replaces the block's `mlp` during decoding only; `unmerge` puts the original module,
whose weights were never touched, and the adapters back.
"""

from __future__ import annotations

import functools
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from eas.method.pia import (
    PIAConfig,
    PIAError,
    adapt_adapters,
    current_context,
    pia_config,
    prompt_context,
    skip_adapters,
)
from eas.method.pia.config import MERGE_STRATEGIES
from eas.method.pia.layer import AdaptPIA, SkipPIA
from eas.models import arch
from eas.models.generate import greedy_generate, prefill

DENSE, FACTORED = "dense", "low_rank"  # the two kinds of per-task plan; only low_rank is factored


# ----------------------------------------------------------------------------- per-task precomputation

@dataclass
class FFNPlan:
    base: torch.Tensor  # (d, 2 d_ff): G + A2 (G + A1 without a router); with a static router G + A(alpha)
    diff: torch.Tensor | None  # (d, 2 d_ff): A1 - A2, None without a router or with a static one
    # Static router only: the bias is h0 @ bias_map + bias_const with h0 = bd1 + down2(prompt mean),
    # an O(r d_ff) product per prompt instead of touching the d x 2 d_ff weight.
    bias_map: torch.Tensor | None = None    # (r, 2 d_ff) = Wu(alpha) @ G
    bias_const: torch.Tensor | None = None  # (2 d_ff,) = bu(alpha) @ G (+ the MLP's own biases)


@dataclass
class LowRankPlan:
    """The `low_rank` strategy's per-task part: the PIA's up paths carried through G, never G itself.
    With a router, B(alpha) = maps + alpha1 maps_diff (alpha1 + alpha2 = 1); without one, maps is shared."""

    maps: torch.Tensor               # (r, 2 d_ff): B2 = Wu2 @ G (B1 without a router); a view of `stacked`
    maps_diff: torch.Tensor | None   # (r, 2 d_ff): B1 - B2, the other half of `stacked`
    consts: torch.Tensor             # (2 d_ff,): bu2 @ G (bu1 @ G without a router) + the MLP's own biases
    consts_diff: torch.Tensor | None  # (2 d_ff,): (bu1 - bu2) @ G
    # (2r, 2 d_ff) = [B2; B1 - B2], one storage with maps and maps_diff: at batch > 1,
    # [h, alpha1 h] @ stacked = h @ B(alpha) per example without a (B, r, 2 d_ff) tensor of maps
    stacked: torch.Tensor | None = None
    # The layer's LowRankMLP, built on the first merge and reloaded with each prompt's (maps, bias, alpha1):
    # constructing an nn.Module per layer per prompt was a third of a batch-1 merge on the 135M model.
    module: "LowRankMLP | None" = None


@dataclass
class ReparamPlan:
    key: tuple
    ffn: dict[int, FFNPlan] = field(default_factory=dict)
    low_rank: dict[int, LowRankPlan] = field(default_factory=dict)
    kinds: set = field(default_factory=set)  # which of DENSE / FACTORED are built (each only on demand)
    attn: dict[int, tuple[nn.Linear, nn.Linear, nn.Linear]] = field(default_factory=dict)
    # Per-layer buffers for the per-example weights, reused merge after merge: writing into warm
    # memory is ~10x faster on CPU than page-faulting a fresh allocation of the same size.
    workspace: dict[int, torch.Tensor] = field(default_factory=dict)

    def buffer(self, i: int, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        buf = self.workspace.get(i)
        if buf is None or tuple(buf.shape) != tuple(shape):
            buf = self.workspace[i] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf


def gate_up_weight(mlp: nn.Module) -> torch.Tensor:
    """G = [Wg; Wu].T, (d, 2 d_ff): gate and up as one right-multiplied matrix."""
    return torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0).T


def gate_up_bias(mlp: nn.Module, bp: torch.Tensor) -> torch.Tensor:
    """bp @ G (+ the MLP's own biases), with the original weights. (B, 2 d_ff)."""
    return torch.cat([F.linear(bp, mlp.gate_proj.weight, mlp.gate_proj.bias),
                      F.linear(bp, mlp.up_proj.weight, mlp.up_proj.bias)], dim=-1)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 for the merge arithmetic (bf16/fp16 weights are upcast; fp64 stays fp64)."""
    return t if t.dtype == torch.float64 else t.float()


def low_rank_product(down: nn.Linear, up: nn.Linear, right: torch.Tensor) -> torch.Tensor:
    """Wd1 @ (Wu @ right) in at least fp32, without ever forming the d x d matrix Wd1 @ Wu."""
    return _wide(down.weight.T) @ (_wide(up.weight.T) @ _wide(right))


def _adapter_weights(adapter: nn.Module) -> list[torch.Tensor]:
    # A PIA is one level of nn.Linear (eas.method.pia.layer): its parameters without nn.Module's recursive
    # generators, as this runs on every merge (parameters() made the key half of a batch-1 merge).
    return [t for lin in adapter._modules.values() if lin is not None for t in lin._parameters.values()
            if t is not None]


def _plan_key(model: nn.Module) -> tuple:
    # In-place updates (optimiser steps, load_state_dict) bump a tensor's _version: a stale plan is detected.
    tensors = []
    for blk in arch.decoder_layers(model):
        pia, adapter = getattr(blk, "ffn_adapter", None), getattr(blk, "attn_adapter", None)
        if isinstance(pia, SkipPIA):
            mlp = arch.layer_parts(blk).mlp
            tensors += [*_adapter_weights(pia), mlp.gate_proj.weight, mlp.up_proj.weight]
        if isinstance(adapter, AdaptPIA):
            tensors += [*_adapter_weights(adapter), *(lin.weight for lin in arch.layer_parts(blk).qkv)]
    return tuple((id(t), t._version) for t in tensors)


def static_ffn_plan(pia, mlp: nn.Module) -> FFNPlan:
    """One merged weight for every prompt: the router's weights are fixed per task."""
    G = gate_up_weight(mlp)
    a1, a2 = (_wide(a) for a in pia.static_alpha)
    wu = a1 * _wide(pia.up1.weight.T) + a2 * _wide(pia.up2.weight.T)   # (r, d)
    bu = a1 * _wide(pia.up1.bias) + a2 * _wide(pia.up2.bias)           # (d,)
    bias_map = wu @ _wide(G)                                            # (r, 2 d_ff)
    base = _wide(G) + _wide(pia.down1.weight.T) @ bias_map
    bias_const = bu @ _wide(G) + _wide(_own_bias(mlp, G))
    return FFNPlan(base=base.to(G.dtype), diff=None, bias_map=bias_map.to(G.dtype), bias_const=bias_const.to(G.dtype))


def ffn_plan(pia, mlp: nn.Module) -> FFNPlan:
    if getattr(pia, "static_alpha", None) is not None:
        return static_ffn_plan(pia, mlp)
    G = gate_up_weight(mlp)
    a1 = low_rank_product(pia.down1, pia.up1, G)
    if pia.up2 is None:
        return FFNPlan(base=(_wide(G) + a1).to(G.dtype), diff=None)
    a2 = low_rank_product(pia.down1, pia.up2, G)
    return FFNPlan(base=(_wide(G) + a2).to(G.dtype), diff=(a1 - a2).to(G.dtype))


def _own_bias(mlp: nn.Module, like: torch.Tensor) -> torch.Tensor:
    return torch.cat([lin.bias if lin.bias is not None else like.new_zeros(lin.out_features)
                      for lin in (mlp.gate_proj, mlp.up_proj)])


def low_rank_plan(pia, mlp: nn.Module) -> LowRankPlan:
    G = _wide(gate_up_weight(mlp))
    own = _wide(_own_bias(mlp, G))
    b1, c1 = _wide(pia.up1.weight.T) @ G, _wide(pia.up1.bias) @ G
    dtype = mlp.gate_proj.weight.dtype
    if pia.up2 is None:
        return LowRankPlan(maps=b1.to(dtype), maps_diff=None, consts=(c1 + own).to(dtype), consts_diff=None)
    b2, c2 = _wide(pia.up2.weight.T) @ G, _wide(pia.up2.bias) @ G
    stacked = torch.cat([b2, b1 - b2]).to(dtype)
    r = b2.shape[0]
    return LowRankPlan(maps=stacked[:r], maps_diff=stacked[r:], consts=(c2 + own).to(dtype),
                       consts_diff=(c1 - c2).to(dtype), stacked=stacked)


def plan_kind(strategy: str) -> str:
    return FACTORED if strategy == "low_rank" else DENSE


def default_strategy(model: nn.Module) -> str:
    config = pia_config(model)
    return config.merge_strategy if config is not None else PIAConfig.merge_strategy


def merged_linear(lin: nn.Linear, adapter) -> nn.Linear:
    """A new Linear computing lin(n + adapter(n)) for a single-path adaptation PIA; `lin` is untouched."""
    wd, wu, bp = adapter.linear_form()
    weight = _wide(lin.weight) + (_wide(wd) @ (_wide(wu) @ _wide(lin.weight.T))).T
    bias = F.linear(_wide(bp), _wide(lin.weight), None if lin.bias is None else _wide(lin.bias))
    out = nn.Linear(lin.in_features, lin.out_features, bias=True, device=lin.weight.device, dtype=lin.weight.dtype)
    out.weight.data.copy_(weight)
    out.bias.data.copy_(bias)
    return out.requires_grad_(False)


@torch.no_grad()
def prepare_reparam(model: nn.Module, force: bool = False, strategy: str | None = None) -> ReparamPlan:
    """Precompute per-task merge matrices once after training (cached; rebuilt if any weight changed).

    Only the plan `strategy` (default: the model's PIAConfig.merge_strategy) needs is built: the dense
    strategies keep a (d, 2 d_ff) matrix per skipped layer, which low_rank exists to avoid holding."""
    strategy = strategy or default_strategy(model)
    key = _plan_key(model)
    plan = getattr(model, "_eas_reparam_plan", None)
    layers = arch.decoder_layers(model)
    if plan is None or plan.key != key or force:
        plan = ReparamPlan(key=key)
        for i, adapter in adapt_adapters(model).items():
            plan.attn[i] = tuple(merged_linear(lin, adapter) for lin in arch.layer_parts(layers[i]).qkv)
        model._eas_reparam_plan = plan
    kind = plan_kind(strategy)
    if kind not in plan.kinds:
        build, into = (low_rank_plan, plan.low_rank) if kind == FACTORED else (ffn_plan, plan.ffn)
        for i, pia in skip_adapters(model).items():
            into[i] = build(pia, arch.layer_parts(layers[i]).mlp)
        plan.kinds.add(kind)
    return plan


# ----------------------------------------------------------------------------- the merged MLP

class MergedMLP(nn.Module):
    """down(act(g) * u) with [g, u] = n @ W (+ alpha1 n @ D) + bias: the FFN with its PIA folded in.

    weight (d, 2f) shared, or (B, d, 2f) one per example; bias (B or 1, 2f)."""

    def __init__(self, mlp: nn.Module, weight, bias, alpha1=None, diff=None):
        super().__init__()
        self.down_proj = mlp.down_proj  # the original module, shared
        self.act_fn = mlp.act_fn
        self.weight, self.bias, self.alpha1, self.diff = weight, bias, alpha1, diff

    @classmethod
    def build(cls, mlp, plan: FFNPlan, alpha1, bp, strategy: str, out: torch.Tensor | None = None) -> "MergedMLP":
        """`out`: optional buffer for the per-example weights, (d, 2f) at batch 1, else (B, d, 2f)."""
        bias = gate_up_bias(mlp, bp.to(mlp.gate_proj.weight.dtype))
        if plan.diff is None:
            return cls(mlp, plan.base, bias)
        a = alpha1.to(plan.base.dtype)
        if strategy == "two_matrix":
            return cls(mlp, plan.base, bias, alpha1=a, diff=plan.diff)
        if a.shape[0] == 1:  # batch 1: one plain weight, exactly the original's size
            return cls(mlp, torch.add(plan.base, plan.diff, alpha=a.item(), out=out), bias)
        weight = torch.addcmul(plan.base, a.view(-1, 1, 1), plan.diff, out=out)  # per-example axpy, (B, d, 2f)
        return cls(mlp, weight, bias)

    @staticmethod
    def weight_shape(plan: FFNPlan, rows: int) -> tuple:
        return tuple(plan.base.shape) if rows == 1 else (rows, *plan.base.shape)

    def merge_tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.weight, self.bias, self.alpha1, self.diff) if t is not None]

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        _check_decoding(self.bias.shape[0], n)
        if self.weight.dim() == 3:
            gu = torch.baddbmm(self.bias[:, None], n, self.weight)
        else:
            gu = n @ self.weight
            if self.diff is not None:
                gu = gu + self.alpha1.view(-1, 1, 1) * (n @ self.diff)
            gu = gu + self.bias[:, None]
        g, u = gu.chunk(2, dim=-1)
        return self.down_proj(self.act_fn(g) * u)


def _check_decoding(rows: int, n: torch.Tensor) -> None:
    if current_context() is not None:
        raise PIAError(
            "this model is merged for the previous batch (eas.method.reparam.merge_after_prefill); "
            "call eas.method.reparam.unmerge(model) before running a new prompt."
        )
    if rows not in (1, n.shape[0]):
        raise PIAError(f"merged for a batch of {rows} rows, called with {n.shape[0]}.")


class LowRankMLP(nn.Module):
    """down(act(g) * u) with [g, u] = n @ G + (n @ Wd1) @ B(alpha) + bias: the FFN with its PIA folded in, factored.

    gate/up/down are the original modules. One example (or no router): B = B(alpha) (r, 2f). Several
    examples with a router: B = [B2; B1 - B2] (2r, 2f), shared, and the low-rank input is [h, alpha1 h],
    so no (B, r, 2f) per-example maps exist. bias (B or 1, 2f)."""

    def __init__(self, mlp: nn.Module, down: torch.Tensor):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act_fn = mlp.act_fn
        self.down = down  # (r, d), the PIA's down1 weight
        self.maps = self.bias = self.alpha1 = None  # set per prompt by `load`; alpha1 (B,) only with stacked maps

    def load(self, maps: torch.Tensor, bias: torch.Tensor, alpha1: torch.Tensor | None = None) -> "LowRankMLP":
        self.__dict__.update(maps=maps, bias=bias, alpha1=alpha1)  # plain tensors: skip nn.Module.__setattr__
        return self

    @classmethod
    def build(cls, mlp, plan: LowRankPlan, pia, alpha1, h0) -> "LowRankMLP":
        """The layer's merged MLP for one prompt batch; alpha1 (B,) or None, h0 (B or 1, r):
        SkipPIA.merge_inputs(). Reuses the module `plan` keeps for this layer."""
        # A plan is rebuilt whenever the MLP's or the PIA's weights change (_plan_key), so its module fits.
        if plan.module is None:
            plan.module = cls(mlp, pia.down1.weight.to(mlp.gate_proj.weight.dtype))  # fp32 PIA on a bf16 base
        module = plan.module
        dtype = plan.maps.dtype
        h0 = h0.to(dtype)
        if plan.maps_diff is None:
            return module.load(plan.maps, h0 @ plan.maps + plan.consts)
        a = alpha1.to(dtype)
        consts = plan.consts + a[:, None] * plan.consts_diff
        if a.shape[0] == 1:  # one example: a plain (r, 2f) matrix, as without a router, O(r d_ff)
            maps = torch.add(plan.maps, plan.maps_diff, alpha=a.item())
            return module.load(maps, h0 @ maps + consts)
        # bp @ G = h0 @ (Wu(alpha) @ G) + bu(alpha) @ G: the bias without touching G (still its original values)
        bias = torch.cat([h0, a[:, None] * h0], dim=-1) @ plan.stacked + consts
        return module.load(plan.stacked, bias, alpha1=a.contiguous())  # not a view of the router's output

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        _check_decoding(self.bias.shape[0], n)
        h = F.linear(n, self.down)  # (B, T, r); down1's bias is in h0, hence in self.bias
        if self.alpha1 is not None:
            h = torch.cat([h, h * self.alpha1.view(-1, 1, 1)], dim=-1)  # (B, T, 2r)
        # The maps are shared by every row, so one GEMM over all rows (no batched product over a stride-0
        # expansion). Their bytes (merge_bytes) are all low_rank reads beyond skip-only per decode step.
        low_g, low_u = torch.matmul(h, self.maps).add_(self.bias[:, None]).chunk(2, dim=-1)
        g = F.linear(n, self.gate_proj.weight).add_(low_g)  # the MLP's own biases are in self.bias
        u = F.linear(n, self.up_proj.weight).add_(low_u)
        return self.down_proj(self.act_fn(g) * u)

    def merge_tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.maps, self.bias, self.alpha1) if t is not None]


# ----------------------------------------------------------------------------- merge / unmerge

@torch.no_grad()
def merge_after_prefill(model: nn.Module, batch=None, strategy: str | None = None):
    """Fold every PIA into the base weights for the batch just prefilled; returns `unmerge` bound to model.

    Usable as greedy_generate(..., after_prefill=merge_after_prefill), which calls the returned unmerge
    after decoding."""
    unmerge(model)
    strategy = strategy or default_strategy(model)
    if strategy not in MERGE_STRATEGIES:
        raise PIAError(f"unknown merge strategy {strategy!r}; expected one of {', '.join(MERGE_STRATEGIES)}.")
    plan = prepare_reparam(model, strategy=strategy)
    layers = arch.decoder_layers(model)
    records = []
    for i, pia in skip_adapters(model).items():
        blk = layers[i]
        # per example, low_rank needs only alpha1 and h0 (B, r); the dense strategies the full bias bp (B, d)
        alpha1, bias_part = pia.merge_inputs() if strategy == "low_rank" else pia.linear_form()
        if batch is not None and bias_part.shape[0] not in (1, len(batch)):
            raise PIAError(f"layer {i}: PIA state has {bias_part.shape[0]} rows, the batch {len(batch)}.")
        mlp = blk.block.mlp
        if strategy == "low_rank":
            blk.block.mlp = LowRankMLP.build(mlp, plan.low_rank[i], pia, alpha1, bias_part)
            blk.ffn_adapter = None
            records.append(("ffn", i, mlp, pia))
            continue
        ffn = plan.ffn[i]
        if strategy == "static_router" and ffn.bias_map is None:
            raise PIAError("merge_strategy 'static_router' needs a calibrated router: "
                           "call eas.method.reparam.calibrate_static_router(model, batches) after training.")
        if ffn.bias_map is not None:  # static router: shared weight, a cheap per-example bias
            bias = pia.hidden_bias().to(ffn.bias_map.dtype) @ ffn.bias_map + ffn.bias_const
            blk.block.mlp = MergedMLP(mlp, ffn.base, bias)
            blk.ffn_adapter = None
            records.append(("ffn", i, mlp, pia))
            continue
        out = None
        if strategy == "per_example" and ffn.diff is not None:
            out = plan.buffer(i, MergedMLP.weight_shape(ffn, bias_part.shape[0]), ffn.base)
        blk.block.mlp = MergedMLP.build(mlp, ffn, alpha1, bias_part, strategy, out=out)
        blk.ffn_adapter = None
        records.append(("ffn", i, mlp, pia))
    for i, adapter in adapt_adapters(model).items():
        blk = layers[i]
        attn = blk.block.self_attn
        original = (attn.q_proj, attn.k_proj, attn.v_proj)
        attn.q_proj, attn.k_proj, attn.v_proj = plan.attn[i]
        blk.attn_adapter = None
        records.append(("attn", i, original, adapter))
    model._eas_merged = records
    model._eas_merge_strategy = strategy
    return functools.partial(unmerge, model)


@torch.no_grad()
def calibrate_static_router(model: nn.Module, batches, target=None) -> dict[int, torch.Tensor]:
    """Fix every skip PIA's router weights to their mean over the prompts of `batches` (a task's
    training or validation prompts): the task-level static router, a beyond-the-paper option that
    makes one merged weight serve every prompt. It changes the model's function (each prompt no
    longer picks its own mix), so its accuracy cost must be measured. Returns the weights per layer.
    `target`: what runs the prompts when `model` is not itself a generation target
    (eas.models.causal_lm.CausalLMTarget)."""

    pias = skip_adapters(model)
    if not pias or any(p.router is None for p in pias.values()):
        raise PIAError("a static router needs skip PIAs with a router (PIAConfig(router=True)).")
    for p in pias.values():
        p.static_alpha = None
    sums = {i: 0.0 for i in pias}
    rows = 0
    for batch in batches:
        prefill(target if target is not None else model, batch)
        for i, p in pias.items():
            sums[i] = sums[i] + p.route(p.state.mean()).sum(0)
        rows += len(batch)
    for i, p in pias.items():
        p.static_alpha = (sums[i] / rows).to(p.down1.weight.dtype)
    model._eas_reparam_plan = None  # the merge plan depends on the router weights
    return {i: p.static_alpha for i, p in pias.items()}


@torch.no_grad()
def fold_adaptation(model: nn.Module, keep_originals: bool = False) -> int:
    """Fold every adaptation PIA into its layer's q/k/v projections once, for deployment.

    Adaptation PIAs do not depend on the prompt, so this per-task fold is exact (the same merged_linear the
    per-prompt merge swaps in) and leaves the merge nothing to do for them: no merged q/k/v copy is held
    beside the originals (at the 1B shape with 12 of 22 MHAs skipped those copies are ~5% of the weights),
    and nothing is swapped per prompt. The adapters are removed; the skip PIAs stay and still merge per
    prompt. The originals are dropped unless `keep_originals` (then `unfold_adaptation` restores them:
    the benchmark reuses one model for every variant). Returns how many layers were folded."""
    unmerge(model)
    layers = arch.decoder_layers(model)
    adapters = adapt_adapters(model)
    kept = getattr(model, "_eas_folded_adaptation", {})
    for i, adapter in adapters.items():
        attn = layers[i].block.self_attn
        original = (attn.q_proj, attn.k_proj, attn.v_proj)
        attn.q_proj, attn.k_proj, attn.v_proj = (merged_linear(lin, adapter) for lin in original)
        layers[i].attn_adapter = None
        if keep_originals:
            kept[i] = (original, adapter)
    model._eas_folded_adaptation = kept
    if adapters:  # the plan held their merged copies; nothing to fold leaves a built plan as it is
        model._eas_reparam_plan = None
    return len(adapters)


def prepare_deployment(model: nn.Module, strategy: str | None = None, keep_originals: bool = False) -> ReparamPlan:
    """Once per task after training, what a deployed EAS model does before serving prompts: fold the
    adaptation PIAs into q/k/v (fold_adaptation) and build the skip PIAs' merge plan (prepare_reparam).
    Every timed merged row uses it; merge_after_prefill then only merges the skip PIAs per prompt."""
    fold_adaptation(model, keep_originals=keep_originals)
    return prepare_reparam(model, strategy=strategy)


def unfold_adaptation(model: nn.Module) -> None:
    """Undo fold_adaptation(keep_originals=True): the original q/k/v and the adapters are put back."""
    unmerge(model)
    layers = arch.decoder_layers(model)
    folded = getattr(model, "_eas_folded_adaptation", {})
    for i, (original, adapter) in folded.items():
        attn = layers[i].block.self_attn
        attn.q_proj, attn.k_proj, attn.v_proj = original
        layers[i].attn_adapter = adapter
    model._eas_folded_adaptation = {}
    if folded:
        model._eas_reparam_plan = None


def unmerge(model: nn.Module) -> None:
    """Put the original MLPs / q,k,v projections and the adapters back (a no-op if not merged)."""
    layers = arch.decoder_layers(model)
    for kind, i, original, adapter in reversed(getattr(model, "_eas_merged", [])):
        blk = layers[i]
        if kind == "ffn":
            blk.block.mlp = original
            blk.ffn_adapter = adapter
        else:
            attn = blk.block.self_attn
            attn.q_proj, attn.k_proj, attn.v_proj = original
            blk.attn_adapter = adapter
    model._eas_merged = []


def release_workspace(model: nn.Module) -> None:
    """Free the per-example weight buffers kept between merges (B x d x 2 d_ff per skipped layer)."""
    unmerge(model)
    plan = getattr(model, "_eas_reparam_plan", None)
    if plan is not None:
        plan.workspace.clear()


def _plan_tensors(plan: ReparamPlan, kind: str) -> list[torch.Tensor]:
    parts = plan.low_rank.values() if kind == FACTORED else plan.ffn.values()
    out = [t for p in parts for t in vars(p).values() if isinstance(t, torch.Tensor)]
    out += [t for lins in plan.attn.values() for lin in lins for t in (lin.weight, lin.bias)]
    return out + (list(plan.workspace.values()) if kind == DENSE else [])


def merge_bytes(model: nn.Module) -> int:
    """Bytes the current merge holds beyond the model's own parameters, from tensor sizes: the per-task
    plan of the strategy in use (its merged q/k/v copies included), the per-example weight buffers, and
    what the merged modules built for this batch. Shared storage is counted once. 0 when not merged.

    On a CPU this stands in for a peak-memory measurement (see eas.measure.cost.time_generation): during merged
    decoding it is what a strategy adds to the weights, adapters and KV cache that every variant holds."""
    if not is_merged(model):
        return 0
    plan = model._eas_reparam_plan  # not prepare_reparam: while merged, the adapters are detached
    tensors = _plan_tensors(plan, plan_kind(model._eas_merge_strategy))
    layers = arch.decoder_layers(model)
    for kind, i, _, _ in model._eas_merged:
        if kind == "ffn":
            tensors += layers[i].block.mlp.merge_tensors()
    # While merged, the merged q/k/v are registered in the model and the originals are not: count the
    # merged copies as the extra ones, as when unmerged.
    merged_qkv = {t.untyped_storage().data_ptr() for lins in plan.attn.values() for lin in lins
                  for t in (lin.weight, lin.bias)}
    own = {p.untyped_storage().data_ptr() for p in model.parameters()} - merged_qkv
    seen = {}
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = t.untyped_storage().nbytes()
    return sum(seen.values())


def is_merged(model: nn.Module) -> bool:
    return bool(getattr(model, "_eas_merged", []))


@contextmanager
def merged(model: nn.Module, batch=None, strategy: str | None = None):
    """with merged(model, batch): ... decode ...  (after a prefill)."""
    undo = merge_after_prefill(model, batch, strategy)
    try:
        yield model
    finally:
        undo()


def reparam_hook(model: nn.Module):
    """The after_prefill hook the model's PIAConfig asks for: merge_after_prefill, or None (Table 6 rows)."""
    config = pia_config(model)
    return merge_after_prefill if config is not None and config.reparam else None


# ----------------------------------------------------------------------------- cost

def _clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def time_merge(model: nn.Module, batch, repeats: int = 3, strategy: str | None = None) -> dict[str, float]:
    """Median per-batch prefill and merge times (ms), and the one-off per-task preparation time."""

    device = next(model.parameters()).device
    unmerge(model)
    t0 = _clock(device)
    prepare_reparam(model, force=True, strategy=strategy)
    prepare_ms = (_clock(device) - t0) * 1e3
    prefill_ms, merge_ms = [], []
    for r in range(repeats + 1):  # the first round warms up
        t0 = _clock(device)
        prefill(model, batch)
        t1 = _clock(device)
        undo = merge_after_prefill(model, batch, strategy)
        t2 = _clock(device)
        undo()
        if r:
            prefill_ms.append((t1 - t0) * 1e3)
            merge_ms.append((t2 - t1) * 1e3)
    p, m = statistics.median(prefill_ms), statistics.median(merge_ms)
    return {"prefill_ms": p, "merge_ms": m, "ratio": m / p, "prepare_ms": prepare_ms, "batch": len(batch)}


@torch.no_grad()
def forced_decode_logits(model: nn.Module, batch, answers: torch.Tensor, after_prefill=None) -> torch.Tensor:
    """Prefill, optionally merge, then cached decode steps fed `answers` (B, A): logits of every step.

    Feeding the same tokens to both paths compares the functions themselves, not just argmaxes."""
    with prompt_context(batch.prompt_mask, batch.attention_mask):
        hidden, cache = model(batch.input_ids, batch.attention_mask, batch.image_features, use_cache=True)
    undo = after_prefill(model, batch) if after_prefill else None
    out, mask = [model.lm_head(hidden[:, -1])], batch.attention_mask
    try:
        for j in range(answers.shape[1] - 1):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            hidden, cache = model(answers[:, j : j + 1], mask, None, cache=cache, use_cache=True)
            out.append(model.lm_head(hidden[:, -1]))
    finally:
        if callable(undo):
            undo()
    return torch.stack(out, dim=1)


def merge_equivalence(model: nn.Module, batch, new_tokens: int = 16, strategy: str | None = None) -> dict:
    """Merged vs unmerged on one batch: max |logit difference| over the decode steps (same tokens
    fed to both) and whether greedy generation gives identical tokens."""

    merge = functools.partial(merge_after_prefill, strategy=strategy)
    plain = greedy_generate(model, batch, new_tokens, ignore_eos=True).tokens
    merged = greedy_generate(model, batch, new_tokens, ignore_eos=True, after_prefill=lambda m, b: merge(m, b)).tokens
    want = forced_decode_logits(model, batch, plain)
    got = forced_decode_logits(model, batch, plain, after_prefill=lambda m, b: merge(m, b))
    return {"max_abs_logit_diff": float((want - got).abs().max()), "logit_scale": float(want.abs().max()),
            "tokens_identical": bool(torch.equal(plain, merged)), "batch": len(batch), "steps": new_tokens,
            "strategy": strategy or default_strategy(model)}
