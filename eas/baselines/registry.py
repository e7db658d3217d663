"""Every method by name: its attach function, config class, and whether it merges or skips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from eas.baselines.adapter import attach_adapter
from eas.baselines.config import AdapterConfig, BaselineError, DASConfig, EASConfig, FullConfig, LoRAConfig, MAMConfig
from eas.baselines.das import attach_das
from eas.baselines.full import attach_eas, attach_full_finetune
from eas.baselines.lora import attach_lora
from eas.baselines.mam import attach_mam
from eas.baselines.state import check_config


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
        config = check_config(config, method.config_cls).replace(**options)
    return method.attach(model, config)
