"""Counting, saving and loading any method's trainable parameters (JSON config + safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from eas.baselines.config import FORMAT_VERSION, BaselineError
from eas.baselines.registry import get_method
from eas.baselines.state import attached, detach
from eas.core import io
from eas.method.pia.model import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_saved_shape,
    check_tensor_shapes,
    read_adapter_config,
    read_saved_tensors,
)
from eas.method.skip import EASBlock, apply_skips, remove_eas
from eas.models import arch
from eas.models.train import updated_params_percent


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> dict:
    """Trainable, added and base parameter counts, and the paper's "Updated Parameters" (percent of
    the base model as loaded: everything the model holds minus what the method added)."""

    state = attached(model)
    added_ids = {id(p) for m in (state.modules if state else []) for p in m.parameters()}
    total = {id(p): p.numel() for p in model.parameters()}
    added = sum(n for i, n in total.items() if i in added_ids)
    base = sum(total.values()) - added
    trainable = sum(p.numel() for p in trainable_parameters(model).values())
    return {"method": state.method if state else None, "trainable": trainable, "added": added, "base": base,
            "updated_percent": updated_params_percent(model, base)}




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
                            "with eas.method.pia.load_adapters.")
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
