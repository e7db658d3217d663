"""Attaching PIAs to a model, which parameters train, and saving / loading them.

The base model is frozen by `attach_pia` and never written to: adapters live in EASBlock's slots,
so a checkpoint is just the adapters plus the skip set they were trained for.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from eas.core import io
from eas.method.pia.config import PIAConfig
from eas.method.pia.layer import AdaptPIA, PIAError, SkipPIA
from eas.method.skip import SkipSet, apply_skips, current_skips, eas_blocks, validate
from eas.models import arch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
SLOTS = ("attn_adapter", "ffn_adapter")
FORMAT_VERSION = 1


def _factory_kwargs(block: nn.Module) -> dict:
    return arch.adapter_factory_kwargs(arch.layer_parts(block).ffn_norm.weight)


def attach_skip_pia(model: nn.Module, index: int, config: PIAConfig) -> SkipPIA:
    """Put a skip-replacing PIA in front of layer `index`'s FFN; its MHA must be skipped."""
    arch.check_layer_index(model, index)
    blk = eas_blocks(model)[index]
    if not blk.skip_attn:
        raise PIAError(
            f"layer {index}'s attention is not skipped: a skip-replacing PIA stands in for a skipped MHA "
            "(use apply_skips / attach_pia with this layer in SkipSet.mha, or an adaptation PIA)."
        )
    if blk.skip_ffn:
        raise PIAError(f"layer {index}'s FFN is skipped too: there is no FFN input to put a PIA on.")
    blk.ffn_adapter = SkipPIA(arch.text_config(model).hidden_size, config, **_factory_kwargs(blk.block))
    return blk.ffn_adapter


def attach_adapt_pia(model: nn.Module, index: int, hidden: int) -> AdaptPIA:
    """Put a single-path adaptation PIA in front of layer `index`'s kept attention (on norm_a(x))."""
    arch.check_layer_index(model, index)
    blk = eas_blocks(model)[index]
    if blk.skip_attn:
        raise PIAError(f"layer {index}'s attention is skipped: there is no attention to adapt.")
    blk.attn_adapter = AdaptPIA(arch.text_config(model).hidden_size, hidden, **_factory_kwargs(blk.block))
    return blk.attn_adapter


def attach_pia(model: nn.Module, skips: SkipSet, config: PIAConfig) -> list[nn.Module]:
    """Skip `skips`, freeze the base, and attach PIAs: a skip-replacing one in every layer whose MHA
    alone is skipped, an adaptation one in front of every kept MHA (unless adapt_hidden is None).
    Replaces adapters attached before. Returns the adapters, in layer order."""
    if not isinstance(config, PIAConfig):
        raise TypeError(f"config must be a PIAConfig, got {type(config).__name__}")
    apply_skips(model, skips)
    detach_pia(model)
    model.requires_grad_(False)
    adapters = []
    for i, slot in pia_layout(skips, config, arch.num_layers(model)):
        if slot == "ffn_adapter":
            adapters.append(attach_skip_pia(model, i, config))
        else:
            adapters.append(attach_adapt_pia(model, i, config.adapt_hidden))
    for a in adapters:
        a.requires_grad_(True)
    model._eas_pia_config = config
    return adapters


def pia_layout(skips: SkipSet, config: PIAConfig, n_layers: int) -> list[tuple[int, str]]:
    """(layer, slot) of every PIA `attach_pia` puts on an `n_layers`-layer model: "ffn_adapter" (a
    skip-replacing PIA) where the MHA alone is skipped, "attn_adapter" (an adaptation PIA) in front of
    every kept MHA unless adapt_hidden is None."""
    out = []
    for i in range(n_layers):
        attn, ffn = skips.attn_skipped(i), skips.ffn_skipped(i)
        if attn and not ffn:
            out.append((i, "ffn_adapter"))
        elif not attn and config.adapt_hidden is not None:
            out.append((i, "attn_adapter"))
    return out


def detach_pia(model: nn.Module) -> None:
    """Remove every PIA (the skips stay)."""
    for blk in eas_blocks(model):
        for slot in SLOTS:
            if isinstance(getattr(blk, slot), (SkipPIA, AdaptPIA)):
                setattr(blk, slot, None)
    model._eas_pia_config = None


def pia_config(model: nn.Module) -> PIAConfig | None:
    return getattr(model, "_eas_pia_config", None)


def named_adapters(model: nn.Module) -> dict[str, nn.Module]:
    """'layers.{i}.{slot}' -> adapter, for the PIAs attached now."""
    out = {}
    for i, blk in enumerate(arch.decoder_layers(model)):
        for slot in SLOTS:
            a = getattr(blk, slot, None)
            if isinstance(a, (SkipPIA, AdaptPIA)):
                out[f"layers.{i}.{slot}"] = a
    return out


def skip_adapters(model: nn.Module) -> dict[int, SkipPIA]:
    return {i: blk.ffn_adapter for i, blk in enumerate(arch.decoder_layers(model))
            if isinstance(getattr(blk, "ffn_adapter", None), SkipPIA)}


def adapt_adapters(model: nn.Module) -> dict[int, AdaptPIA]:
    return {i: blk.attn_adapter for i, blk in enumerate(arch.decoder_layers(model))
            if isinstance(getattr(blk, "attn_adapter", None), AdaptPIA)}


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters: the only ones an optimiser should see."""
    return [p for a in named_adapters(model).values() for p in a.parameters()]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Adapter and base parameter counts ("updated parameters" as the paper counts them)."""
    adapter = sum(p.numel() for p in trainable_parameters(model))
    ids = {id(p) for p in trainable_parameters(model)}
    base = sum(p.numel() for p in model.parameters() if id(p) not in ids)
    return {"adapter": adapter, "base": base}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, a in named_adapters(model).items() for k, v in a.state_dict().items()}


def reset_prompt_state(model: nn.Module) -> None:
    for a in skip_adapters(model).values():
        a.reset_state()


# ----------------------------------------------------------------------------- checkpoints

def save_adapters(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write `path/adapter_model.safetensors` and `path/adapter_config.json` (PIA options + skip set)."""
    config = pia_config(model)
    if config is None:
        raise PIAError("no PIAs attached to this model: nothing to save.")
    path = Path(path)
    cfg = arch.text_config(model)
    meta = {
        "format": FORMAT_VERSION,
        "family": arch.family(model),
        "num_layers": arch.num_layers(model),
        "hidden_size": cfg.hidden_size,
        "pia": config.to_dict(),
        "skips": current_skips(model).to_dict(),
        "extra": extra or {},
    }
    io.save_tensors(path / WEIGHTS_FILE, adapter_state_dict(model))
    io.write_json(path / CONFIG_FILE, meta)
    return path


CONFIG_KEYS = ("num_layers", "hidden_size", "pia", "skips")  # what load_adapters reads from a PIA config


def read_adapter_config(path: str | Path, what: str = "PIA", error: type[Exception] = PIAError,
                        required: tuple[str, ...] = ()) -> dict:
    """The JSON config of an adapter checkpoint folder (PIA or baseline: they share the layout): a JSON
    object holding at least the keys `required`. A missing file is FileNotFoundError; a file that is not
    such an object is `error`, naming the file."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: not a {what} checkpoint folder.")
    try:
        meta = json.loads(file.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{file} is not valid JSON ({err}): a {what} checkpoint's config is a JSON object "
                    "(the file is damaged: save the checkpoint again).") from None
    if not isinstance(meta, dict):
        raise error(f"{file} holds a JSON {type(meta).__name__}; expected a {what} checkpoint's config, "
                    f"a JSON object with {', '.join(required) or 'its options'}.")
    missing = [k for k in required if k not in meta]
    if missing:
        raise error(f"{file} lacks {missing}: not a {what} checkpoint config (expected the keys "
                    f"{', '.join(required)}).")
    return meta


def read_saved_tensors(path: str | Path, what: str = "PIA", error: type[Exception] = PIAError) -> dict:
    """Every tensor of a checkpoint folder's weights file, or `error` naming the file (missing, truncated,
    not safetensors). Reads the whole file: a load checks it all before changing a model."""
    from safetensors.torch import load_file

    file = Path(path) / WEIGHTS_FILE
    if not file.is_file():
        raise error(f"{file} does not exist: the {what} checkpoint's weights are missing.")
    try:
        return load_file(str(file))
    except Exception as err:  # safetensors raises its own error types for truncated or garbled files
        raise error(f"{file} is not a readable safetensors file ({err}): the {what} checkpoint's weights "
                    "are damaged (save the checkpoint again).") from None


def check_saved_shape(model: nn.Module, meta: dict, path, error=PIAError) -> None:
    """A checkpoint of adapters fits only a model of the depth and width it was saved for."""
    here = {"num_layers": arch.num_layers(model), "hidden_size": arch.text_config(model).hidden_size}
    for key, value in here.items():
        if meta[key] != value:
            raise error(f"checkpoint {path} was saved for {key}={meta[key]}, this model has {key}={value}.")


def check_tensor_shapes(expected: dict[str, tuple], stored: dict, file, error: type[Exception] = PIAError,
                        optional: dict[str, tuple] | None = None) -> None:
    """`stored` (name -> tensor) holds exactly the tensors `expected` (name -> shape), plus any of
    `optional`, each of its shape; else `error` naming the file, the missing, unexpected and misshapen ones."""
    optional = optional or {}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected) - set(optional))
    shapes = {**optional, **expected}
    wrong = [f"{k} {tuple(stored[k].shape)} (expected {shapes[k]})" for k in sorted(set(stored) & set(shapes))
             if tuple(stored[k].shape) != tuple(shapes[k])]
    if missing or unexpected or wrong:
        raise error(f"{file} does not match the adapters its config describes: missing {missing}, "
                    f"unexpected {unexpected}, wrong shapes {wrong}.")


def _expected_adapter_shapes(hidden_size: int, skips: SkipSet, config: PIAConfig, n_layers: int):
    """name -> shape of every tensor `attach_pia` gives a model (adapters built on the meta device, so
    nothing is allocated), and the optional ones (a calibrated static router's weights)."""
    expected, optional = {}, {}
    for i, slot in pia_layout(skips, config, n_layers):
        adapter = SkipPIA(hidden_size, config, device="meta") if slot == "ffn_adapter" else \
            AdaptPIA(hidden_size, config.adapt_hidden, device="meta")
        expected.update({f"layers.{i}.{slot}.{k}": tuple(v.shape) for k, v in adapter.state_dict().items()})
        if slot == "ffn_adapter":
            optional[f"layers.{i}.{slot}.static_alpha"] = (2,)
    return expected, optional


def load_adapters(model: nn.Module, path: str | Path) -> list[nn.Module]:
    """Skip the saved skip set, attach PIAs with the saved options and load their weights (strictly).

    Atomic: the config, the skip set, the PIA options and every tensor of the weights file (names and
    shapes against the adapters the config describes) are read and checked before the model is touched,
    so a damaged or mismatched checkpoint raises PIAError naming its file and leaves the model as it was."""
    path = Path(path)
    file = path / CONFIG_FILE
    meta = read_adapter_config(path, required=CONFIG_KEYS)
    check_saved_shape(model, meta, path)
    try:
        if not isinstance(meta["skips"], dict) or not isinstance(meta["pia"], dict):
            raise ValueError("'skips' and 'pia' must be JSON objects")
        skips = validate(model, SkipSet(**meta["skips"]), raw=meta["skips"])
        config = PIAConfig.from_dict(meta["pia"])
    except (TypeError, ValueError) as err:  # SkipError, PIAConfigError, a bad index
        raise PIAError(f"{file} holds an invalid skip set or PIA options: {err}") from None
    state = read_saved_tensors(path)
    expected, optional = _expected_adapter_shapes(meta["hidden_size"], skips, config, meta["num_layers"])
    check_tensor_shapes(expected, state, path / WEIGHTS_FILE, PIAError, optional)

    # Everything is read and checked: only now is the model changed.
    adapters = attach_pia(model, skips, config)
    for name, adapter in named_adapters(model).items():
        if f"{name}.static_alpha" in state:  # a calibrated task-level router: give the buffer a slot
            adapter.static_alpha = torch.zeros(2, dtype=adapter.down1.weight.dtype, device=adapter.down1.weight.device)
    io.copy_tensors_into(adapter_state_dict(model), state, path, PIAError)
    return adapters


@torch.no_grad()
def randomise_adapters(model: nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Fill every adapter parameter with N(0, scale): a stand-in for trained adapters, so that
    equivalence checks (merged vs unmerged) compare non-trivial functions."""
    g = torch.Generator().manual_seed(seed)
    for p in trainable_parameters(model):
        p.copy_(torch.randn(p.shape, generator=g) * scale)
