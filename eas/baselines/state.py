"""Which baseline is attached to a model: attaching, recording and detaching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from eas.models import arch


@dataclass
class Attached:
    """What a method added to a model: enough to count, save and detach it."""

    method: str
    config: Any
    modules: list[nn.Module]  # the added (trainable) modules; their parameters are not "base"
    undo: list[Callable[[], None]] = field(default_factory=list)


def attached(model: nn.Module) -> Attached | None:
    return getattr(model, "_eas_baseline", None)


def factory_kwargs(model: nn.Module) -> dict:
    return arch.adapter_factory_kwargs(arch.layer_parts(arch.decoder_layers(model)[0]).attn_norm.weight)


def begin(model: nn.Module) -> None:
    detach(model)
    model.requires_grad_(False)


def finish(model: nn.Module, method: str, config, modules: list[nn.Module], undo=()) -> list[nn.Module]:
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


def check_config(config, cls):
    if config is None:
        return cls()
    if isinstance(config, dict):
        return cls.from_dict(config)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}.")
    return config
