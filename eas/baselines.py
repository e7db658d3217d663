"""The PETL / PCETL methods the paper compares EAS with (Tables 1 and 3), on the same models.

    lora     LoRA (Hu et al. 2022) from peft, on the decoder's linear layers; mergeable (base speed)
    adapter  sequential bottleneck adapter (Sung et al. 2022), one per block; not mergeable
    mam      Mix-and-Match (He et al. 2022): parallel FFN adapter + prefix tuning on attention
    das      DAS (Wu et al. 2023): whole blocks skipped, each replaced by an adapter; adapters on kept blocks
    full     full fine-tuning of everything but the vision encoder
    eas      the paper's method, eas.pia.attach_pia (in the registry so notebooks can loop over methods)

Every `attach_<name>(model, config)` freezes the base, adds the method's modules and returns the
trainable ones; `detach` undoes it. `count_parameters`, `save`, `load` are common to all methods:
a checkpoint is the method's name + config (JSON) and its trainable parameters (safetensors), and
`load` re-attaches the method to a fresh base model before copying the weights in.

Placements (see DESIGN.md section 1; "n" is a block's normalised input):
    adapter  n + up(relu(down(n))) on norm_a(x) in front of each attention (EASBlock.attn_adapter).
             This is the authors' own LLaVA adapter (LLaVA-DAS `adapter_adapt`, hidden 128); with one
             adapter of hidden 128 per block it reproduces the paper's 0.54 % on LLaVA-7B, and it makes
             the Adapter baseline exactly DAS with no layer skipped.
    mam      x + Attn([P_k; K], [P_v; V]) + MLP(n) + s * up(relu(down(n))): learned prefix keys/values
             (post-RoPE, so they carry no position) in front of every kept attention's cache, and a
             parallel adapter beside each MLP (a forward hook on the MLP adds it to its output).
    das      skipped block: x + up(relu(down(norm_a(x)))) (EASBlock.layer_adapter, the block's own
             frozen input norm as "LN"); kept blocks: the sequential adapter above (attn_adapter),
             as in the reference LLaVA-DAS code (dim_replace 256, dim_adapt 128).
Up-projections start at zero, so every untrained adapter is the identity (an untrained DAS is a plain
layer skip). Prefixes cannot start neutral (any prefix takes attention mass); a prefix of length 0 is
exactly the base model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import arch, io
from .pia import PIAConfig, attach_pia, detach_pia
from .pia.config import check_hidden
from .pia.layer import zero_linear
from .pia.model import (CONFIG_FILE, WEIGHTS_FILE, check_saved_shape, check_tensor_shapes,
                        read_adapter_config, read_saved_tensors)
from .skip import EASBlock, SkipSet, apply_skips, count_tokens, eas_blocks, remove_eas

FORMAT_VERSION = 1
LORA_ADAPTER_NAME = "default"


class BaselineError(ValueError):
    pass


# ----------------------------------------------------------------------------- configs

class _Config:
    """JSON round trip shared by the method configs (tuples come back from JSON as lists)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BaselineError(f"unknown {cls.__name__} option(s) {unknown}; known: {', '.join(sorted(known))}.")
        return cls(**options)

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})


def _check_hidden(name: str, value) -> int:
    try:
        return check_hidden(name, value)
    except ValueError as err:
        raise BaselineError(str(err)) from None


@dataclass(frozen=True)
class LoRAConfig(_Config):
    """r 16 on every linear layer of the decoder gives the paper's ~0.6 % on LLaVA-7B (Table 1: 0.62 %)."""

    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = arch.ATTENTION_LINEARS + arch.MLP_LINEARS
    dropout: float = 0.0

    def __post_init__(self):
        _check_hidden("r (the LoRA rank)", self.r)
        object.__setattr__(self, "targets", tuple(self.targets))
        allowed = arch.ATTENTION_LINEARS + arch.MLP_LINEARS
        bad = [t for t in self.targets if t not in allowed]
        if not self.targets or bad:
            raise BaselineError(f"LoRA targets {list(self.targets)} must be a non-empty subset of {list(allowed)}.")
        if not 0 <= self.dropout < 1:
            raise BaselineError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")


@dataclass(frozen=True)
class AdapterConfig(_Config):
    hidden: int = 128  # the paper's LLaVA adapters (and LLaVA-DAS dim_adapt)

    def __post_init__(self):
        _check_hidden("hidden (the adapter bottleneck)", self.hidden)


@dataclass(frozen=True)
class MAMConfig(_Config):
    """He et al.'s MAM uses a scale of 4 on the parallel adapter. The paper reports MAM with the same
    updated-parameter share as Adapter (0.54 %), which a hidden size of 128 and a short prefix match."""

    hidden: int = 128
    scale: float = 4.0
    prefix_len: int = 10

    def __post_init__(self):
        _check_hidden("hidden (the parallel adapter bottleneck)", self.hidden)
        p = self.prefix_len
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise BaselineError(f"prefix_len must be an integer >= 0 (prefix tokens per attention), got {p!r}.")


@dataclass(frozen=True)
class DASConfig(_Config):
    """layers: the skipped blocks (chosen by the bandit, kind "layer", or a selector).
    all_layers: put both adapters in every block, so that any block can be skipped while training
    with random / sampled skip sets (DAS's warm-up and search); attach again with all_layers=False
    for the final fine-tuning of the chosen set."""

    layers: tuple[int, ...] = ()
    layer_hidden: int = 256  # LLaVA-DAS dim_replace
    kept_hidden: int | None = 128  # LLaVA-DAS dim_adapt; None: no adapters on kept blocks
    all_layers: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(sorted(int(i) for i in self.layers)))
        _check_hidden("layer_hidden (the skip adapter bottleneck)", self.layer_hidden)
        if self.kept_hidden is not None:
            _check_hidden("kept_hidden (the kept-block adapter bottleneck)", self.kept_hidden)


@dataclass(frozen=True)
class FullConfig(_Config):
    pass


@dataclass(frozen=True)
class EASConfig(_Config):
    """EAS as a registry entry: the skipped MHAs and the PIA options."""

    mha: tuple[int, ...] = ()
    pia: PIAConfig = field(default_factory=lambda: PIAConfig.preset("llava"))

    def __post_init__(self):
        object.__setattr__(self, "mha", tuple(sorted(int(i) for i in self.mha)))
        if isinstance(self.pia, dict):
            object.__setattr__(self, "pia", PIAConfig.from_dict(self.pia))


# ----------------------------------------------------------------------------- modules

class Bottleneck(nn.Module):
    """scale * up(relu(down(norm(x)))), a delta. Up starts at zero: an untrained adapter adds nothing.

    `norm` (DAS's skip adapter) is the block's own frozen input norm; it is kept outside the
    registered modules so the adapter's parameters and checkpoint are its own weights only."""

    def __init__(self, d: int, hidden: int, scale: float = 1.0, norm: nn.Module | None = None, **kw):
        super().__init__()
        self.down = nn.Linear(d, hidden, **kw)
        self.up = zero_linear(hidden, d, **kw)
        self.scale = scale
        self._norm = (norm,)  # a tuple hides it from nn.Module's registration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self._norm[0]
        h = self.up(torch.relu(self.down(norm(x) if norm is not None else x)))
        return h if self.scale == 1.0 else self.scale * h

    def extra_repr(self) -> str:
        return f"scale={self.scale}, norm={'block input norm' if self._norm[0] is not None else None}"


class Prefix(nn.Module):
    """Learned keys and values (kv_heads, length, head_dim) put in front of one attention's cache."""

    def __init__(self, kv_heads: int, length: int, head_dim: int, **kw):
        super().__init__()
        # Small random init: equal (e.g. zero) keys would give every prefix slot the same attention
        # weight and the same gradient, and a zero prefix is not neutral anyway (it takes softmax mass).
        self.keys = nn.Parameter(torch.randn(kv_heads, length, head_dim, **kw) * 0.02)
        self.values = nn.Parameter(torch.randn(kv_heads, length, head_dim, **kw) * 0.02)

    def expanded(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[None].expand(batch, -1, -1, -1), self.values[None].expand(batch, -1, -1, -1)


# ----------------------------------------------------------------------------- bookkeeping

@dataclass
class Attached:
    """What a method added to a model: enough to count, save and detach it."""

    method: str
    config: Any
    modules: list[nn.Module]  # the added (trainable) modules; their parameters are not "base"
    undo: list[Callable[[], None]] = field(default_factory=list)


def attached(model: nn.Module) -> Attached | None:
    return getattr(model, "_eas_baseline", None)


def _factory_kwargs(model: nn.Module) -> dict:
    w = arch.layer_parts(arch.decoder_layers(model)[0]).attn_norm.weight
    return {"device": w.device, "dtype": w.dtype}


def _begin(model: nn.Module) -> None:
    detach(model)
    model.requires_grad_(False)


def _finish(model: nn.Module, method: str, config, modules: list[nn.Module], undo=()) -> list[nn.Module]:
    for m in modules:
        m.requires_grad_(True)
    model._eas_baseline = Attached(method, config, list(modules), list(undo))
    return list(modules)


def detach(model: nn.Module) -> nn.Module:
    """Remove whatever method is attached (adapters, hooks, LoRA layers, PIAs, skips); freeze the base."""
    state = attached(model)
    if state is not None:
        for fn in reversed(state.undo):
            fn()
        model._eas_baseline = None
    model.requires_grad_(False)
    return model


def _check_config(config, cls):
    if config is None:
        return cls()
    if isinstance(config, dict):
        return cls.from_dict(config)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}.")
    return config


# ----------------------------------------------------------------------------- LoRA

def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in arch.text_model(model).modules() if isinstance(m, LoraLayer)]


def attach_lora(model: nn.Module, config: LoRAConfig | None = None) -> list[nn.Module]:
    """peft LoRA on the decoder's linear layers `config.targets` (not the LM head, not the projector)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = _check_config(config, LoRAConfig)
    _begin(model)
    peft_config = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=list(config.targets), bias="none")
    inject_adapter_in_model(peft_config, arch.text_model(model), adapter_name=LORA_ADAPTER_NAME)
    modules = []
    for layer in lora_layers(model):
        modules += [layer.lora_A[LORA_ADAPTER_NAME], layer.lora_B[LORA_ADAPTER_NAME]]
    return _finish(model, "lora", config, modules, undo=[lambda: _unload_lora(model)])


def _unload_lora(model: nn.Module, unmerge: bool = True) -> None:
    """Put the plain base Linear layers back (unmerging first, so the base weights are the originals)."""
    if unmerge:
        unmerge_lora(model)
    text = arch.text_model(model)
    lora_ids = {id(m) for m in lora_layers(model)}
    for name, module in list(text.named_modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in lora_ids:
                setattr(module, child_name, child.get_base_layer())


def merge_lora(model: nn.Module, unload: bool = False) -> None:
    """Fold B @ A * alpha / r into the base weights: inference at base cost (Table 1 "+0.0G").
    Reversible with `unmerge_lora`; merging twice is a no-op. A merged peft layer still passes through
    its wrapper's Python forward; `unload=True` also swaps the wrappers for the merged plain Linear
    layers (exactly the base model's modules, for timing), which cannot be undone."""
    for layer in lora_layers(model):
        if not layer.merged:
            layer.merge(adapter_names=[LORA_ADAPTER_NAME])
    if unload:
        _unload_lora(model, unmerge=False)


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()


# ----------------------------------------------------------------------------- Adapter

def _sequential_adapters(model: nn.Module, hidden: int, layers) -> list[nn.Module]:
    """A sequential bottleneck adapter on norm_a(x) in front of each given block's attention."""
    d = arch.text_config(model).hidden_size
    blocks = eas_blocks(model)
    out = []
    for i in layers:
        blocks[i].attn_adapter = Bottleneck(d, hidden, **_factory_kwargs(model))
        out.append(blocks[i].attn_adapter)
    return out


def _clear_slots(model: nn.Module, slots=("attn_adapter", "ffn_adapter", "layer_adapter")) -> Callable[[], None]:
    def undo():
        for blk in eas_blocks(model):
            for slot in slots:
                if isinstance(getattr(blk, slot), Bottleneck):
                    setattr(blk, slot, None)
    return undo


def attach_adapter(model: nn.Module, config: AdapterConfig | None = None) -> list[nn.Module]:
    """One sequential adapter per block, in front of the attention (see the module docstring)."""
    config = _check_config(config, AdapterConfig)
    _begin(model)
    apply_skips(model, SkipSet())
    modules = _sequential_adapters(model, config.hidden, range(arch.num_layers(model)))
    return _finish(model, "adapter", config, modules, undo=[_clear_slots(model)])


# ----------------------------------------------------------------------------- MAM

def attach_mam(model: nn.Module, config: MAMConfig | None = None) -> list[nn.Module]:
    """A scaled parallel adapter beside every MLP and a learned prefix in front of every attention."""
    config = _check_config(config, MAMConfig)
    _begin(model)
    apply_skips(model, SkipSet())
    d = arch.text_config(model).hidden_size
    kv_heads, head_dim = arch.kv_shape(model)
    kw = _factory_kwargs(model)
    modules, handles = [], []
    for blk in eas_blocks(model):
        blk.mam_adapter = Bottleneck(d, config.hidden, scale=config.scale, **kw)
        handles.append(arch.layer_parts(blk).mlp.register_forward_hook(_parallel_hook(blk.mam_adapter)))
        modules.append(blk.mam_adapter)
        if config.prefix_len > 0:
            blk.mam_prefix = Prefix(kv_heads, config.prefix_len, head_dim, **kw)
            modules.append(blk.mam_prefix)
    if config.prefix_len > 0:
        text = arch.text_model(model)
        handles.append(text.register_forward_pre_hook(_prefix_pre_hook(config.prefix_len), with_kwargs=True))

    def undo():
        for h in handles:
            h.remove()
        for blk in eas_blocks(model):
            for name in ("mam_adapter", "mam_prefix"):
                if hasattr(blk, name):
                    delattr(blk, name)

    return _finish(model, "mam", config, modules, undo=[undo])


def _parallel_hook(adapter: nn.Module):
    def hook(mlp, args, output):
        return output + adapter(args[0])  # MLP(n) + s * up(relu(down(n))), same input n
    return hook


def _prefix_pre_hook(prefix_len: int):
    """A forward pre-hook on the decoder stack that fills a new cache with the learned prefixes.

    At the first forward of a sequence (no cache, or an empty one; with or without use_cache, so that
    training reaches the prefix parameters through the cache), every kept attention's cache entry
    starts with its prefix, and the attention mask gets `prefix_len` ones on the left. Later forwards
    on that cache (cached decoding) get the same ones. Position ids are the caller's, counted over
    the real tokens only: the prefix has no position."""
    from transformers import DynamicCache

    def hook(text_model, args, kwargs):
        cache = kwargs.get("cache")
        if cache is None or (getattr(cache, "_eas_prefix_len", 0) == 0 and cache.get_seq_length() == 0):
            inputs = kwargs.get("inputs_embeds")
            inputs = inputs if inputs is not None else kwargs.get("input_ids", args[0] if args else None)
            batch = inputs.shape[0]
            cache = cache if cache is not None else DynamicCache(config=text_model.config)
            for i, blk in enumerate(text_model.layers):
                if blk.skip_attn:  # its entry counts the prefix's positions too, holding nothing
                    count_tokens(cache, blk.original_attn_idx, text_model.norm.weight.new_empty(batch, prefix_len))
                    continue
                prefix = getattr(blk, "mam_prefix", None)
                if prefix is None:
                    raise BaselineError(f"layer {i}'s attention is kept but has no MAM prefix (it was skipped "
                                        "when MAM was attached): attach MAM again after changing the skips.")
                cache.update(*prefix.expanded(batch), blk.block.self_attn.layer_idx)
            cache._eas_prefix_len = prefix_len
            kwargs["cache"] = cache
        if getattr(cache, "_eas_prefix_len", 0):
            mask = kwargs.get("attention_mask")
            if mask is not None:
                kwargs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], prefix_len), mask], dim=1)
        return args, kwargs

    return hook


# ----------------------------------------------------------------------------- DAS

def check_das_k(k: int, n_layers: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n_layers:
        raise BaselineError(f"DAS skips k={k!r} layers of a {n_layers}-layer model; expected 0 <= k <= "
                            f"{n_layers - 1} (at least one block must stay).")
    return k


def das_bandit_config(k: int, n_layers: int, **options):
    """The bandit settings for DAS's layer search: the EAS search over whole blocks (kind "layer")."""
    from .bandit import BanditConfig

    if check_das_k(k, n_layers) == 0:
        raise BaselineError("a DAS search needs k >= 1 layers to skip.")
    return BanditConfig(k=k, kind="layer", **options)


def attach_das(model: nn.Module, config: DASConfig | None = None) -> list[nn.Module]:
    """Skip `config.layers` whole, each replaced by x + up(relu(down(norm_a x))); adapters on kept blocks."""
    config = _check_config(config, DASConfig)
    n = arch.num_layers(model)
    check_das_k(len(config.layers), n)
    _begin(model)
    apply_skips(model, SkipSet(layer=config.layers))  # validates the indices
    d = arch.text_config(model).hidden_size
    kw = _factory_kwargs(model)
    blocks = eas_blocks(model)
    skipped = set(config.layers)
    modules = []
    for i, blk in enumerate(blocks):
        if i in skipped or config.all_layers:
            norm = arch.layer_parts(blk).attn_norm
            blk.layer_adapter = Bottleneck(d, config.layer_hidden, norm=norm, **kw)
            modules.append(blk.layer_adapter)
        if config.kept_hidden is not None and (i not in skipped or config.all_layers):
            modules += _sequential_adapters(model, config.kept_hidden, [i])
    return _finish(model, "das", config, modules,
                   undo=[_clear_slots(model), lambda: apply_skips(model, SkipSet())])


# ----------------------------------------------------------------------------- full fine-tuning and EAS

def attach_full_finetune(model: nn.Module, config: FullConfig | None = None) -> list[nn.Module]:
    """Unfreeze everything the model holds except a vision encoder (MiniLlava holds none: it reads
    cached features). Returns the model itself as the one trainable module."""
    config = _check_config(config, FullConfig)
    _begin(model)
    model.requires_grad_(True)
    vision = arch.vision_encoder(model)
    if vision is not None:
        vision.requires_grad_(False)
    model._eas_baseline = Attached("full", config, [], [])
    return [model]


def attach_eas(model: nn.Module, config: EASConfig | None = None) -> list[nn.Module]:
    """EAS: skip `config.mha` and attach PIAs (eas.pia.attach_pia)."""
    config = _check_config(config, EASConfig)
    _begin(model)
    modules = attach_pia(model, SkipSet(mha=config.mha), config.pia)

    def undo():
        detach_pia(model)
        apply_skips(model, SkipSet())

    return _finish(model, "eas", config, modules, undo=[undo])


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Method:
    name: str
    attach: Callable[[nn.Module, Any], list[nn.Module]]
    config_cls: type
    mergeable: bool  # no extra inference cost after training
    skips: bool  # removes computation

    @property
    def default(self):
        return self.config_cls()


METHODS: dict[str, Method] = {
    "lora": Method("lora", attach_lora, LoRAConfig, mergeable=True, skips=False),
    "adapter": Method("adapter", attach_adapter, AdapterConfig, mergeable=False, skips=False),
    "mam": Method("mam", attach_mam, MAMConfig, mergeable=False, skips=False),
    "das": Method("das", attach_das, DASConfig, mergeable=False, skips=True),
    "full": Method("full", attach_full_finetune, FullConfig, mergeable=True, skips=False),
    "eas": Method("eas", attach_eas, EASConfig, mergeable=True, skips=True),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise BaselineError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}.")
    return METHODS[name]


def make_config(name: str, **options):
    """The method's default config with `options` changed (hidden sizes, rank, layers, ...)."""
    return get_method(name).config_cls.from_dict(options)


def attach(model: nn.Module, name: str, config=None, **options) -> list[nn.Module]:
    """attach(model, "lora", r=8) or attach(model, "das", DASConfig(layers=(3, 5)))."""
    method = get_method(name)
    if config is None:
        config = make_config(name, **options)
    elif options:
        config = _check_config(config, method.config_cls).replace(**options)
    return method.attach(model, config)


# ----------------------------------------------------------------------------- counting

def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> dict:
    """Trainable, added and base parameter counts, and the paper's "Updated Parameters" (percent of
    the base model as loaded: everything the model holds minus what the method added)."""
    from .train import updated_params_percent

    state = attached(model)
    added_ids = {id(p) for m in (state.modules if state else []) for p in m.parameters()}
    total = {id(p): p.numel() for p in model.parameters()}
    added = sum(n for i, n in total.items() if i in added_ids)
    base = sum(total.values()) - added
    trainable = sum(p.numel() for p in trainable_parameters(model).values())
    return {"method": state.method if state else None, "trainable": trainable, "added": added, "base": base,
            "updated_percent": updated_params_percent(model, base)}


# ----------------------------------------------------------------------------- checkpoints

def save(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write the attached method's trainable parameters and its name + config to folder `path`.
    LoRA is saved unmerged-equivalent: only its A/B matrices are written."""
    state = attached(model)
    if state is None:
        raise BaselineError("no method attached to this model: nothing to save (use attach first).")
    path = Path(path)
    cfg = arch.text_config(model)
    meta = {"format": FORMAT_VERSION, "method": state.method, "config": state.config.to_dict(),
            "family": arch.family(model), "num_layers": arch.num_layers(model),
            "hidden_size": cfg.hidden_size, "extra": extra or {}}
    io.save_tensors(path / WEIGHTS_FILE, {k: p.detach() for k, p in trainable_parameters(model).items()})
    io.write_json(path / CONFIG_FILE, meta)
    return path


CONFIG_KEYS = ("method", "config", "num_layers", "hidden_size")  # what `load` reads from a baseline config


def read_config(path: str | Path) -> dict:
    meta = read_adapter_config(path, what="baseline", error=BaselineError)
    file = Path(path) / CONFIG_FILE
    if "method" not in meta:
        raise BaselineError(f"{file} is not a baseline checkpoint (no 'method'); a PIA checkpoint loads "
                            "with eas.pia.load_adapters.")
    missing = [k for k in CONFIG_KEYS if k not in meta]
    if missing:
        raise BaselineError(f"{file} lacks {missing}: not a baseline checkpoint config (expected the keys "
                            f"{', '.join(CONFIG_KEYS)}).")
    return meta


def load(model: nn.Module, path: str | Path) -> list[nn.Module]:
    """Attach the saved method with its saved config to `model` (a fresh base) and load the weights strictly.

    The config, the method's options and the whole weights file are read and checked before the model is
    touched: a damaged checkpoint raises BaselineError naming its file and leaves the model as it was.
    The tensors' names and shapes can only be compared once the method is attached; a checkpoint whose
    weights do not fit its own config is detached again (the model's requires_grad flags, skip set and
    decoder layers restored), which gives back the model as it was if it had no method attached (a fresh base)."""
    path = Path(path)
    meta = read_config(path)
    check_saved_shape(model, meta, path, BaselineError)
    try:
        method = get_method(meta["method"])
        if not isinstance(meta["config"], dict):
            raise BaselineError(f"'config' must be a JSON object, got {meta['config']!r}")
        config = method.config_cls.from_dict(meta["config"])
    except (TypeError, ValueError) as err:  # BaselineError, PIAConfigError, a bad value
        raise BaselineError(f"{path / CONFIG_FILE} holds an invalid method or options: {err}") from None
    stored = read_saved_tensors(path, what="baseline", error=BaselineError)

    grads = [(p, p.requires_grad) for p in model.parameters()]
    skips = getattr(model, "_eas_skips", None)
    wrapped = any(isinstance(layer, EASBlock) for layer in arch.decoder_layers(model))
    modules = method.attach(model, config)
    own = trainable_parameters(model)
    try:
        check_tensor_shapes({k: tuple(p.shape) for k, p in own.items()}, stored, path / WEIGHTS_FILE, BaselineError)
    except BaselineError:
        detach(model)
        if not wrapped:
            remove_eas(model)  # the plain decoder layers back, as the model came
        elif skips is not None:
            apply_skips(model, skips)
        for p, flag in grads:
            p.requires_grad_(flag)
        raise
    io.copy_tensors_into(own, stored, path, BaselineError)
    return modules


@torch.no_grad()
def randomise(model: nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Fill the attached method's added parameters with N(0, scale): a stand-in for trained weights in
    equivalence tests (untrained adapters are the identity, which would make comparisons vacuous)."""
    state = attached(model)
    g = torch.Generator().manual_seed(seed)
    for m in state.modules if state else []:
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g).to(p) * scale)
