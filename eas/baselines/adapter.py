"""The sequential bottleneck adapter (Sung et al. 2022) in front of each attention; not mergeable."""

from __future__ import annotations

from typing import Callable

from torch import nn

from eas.baselines.config import AdapterConfig
from eas.baselines.layer import Bottleneck
from eas.baselines.state import begin, check_config, factory_kwargs, finish
from eas.method.skip import SkipSet, apply_skips, eas_blocks
from eas.models import arch


def sequential_adapters(model: nn.Module, hidden: int, layers) -> list[nn.Module]:
    """A sequential bottleneck adapter on norm_a(x) in front of each given block's attention."""
    d = arch.text_config(model).hidden_size
    blocks = eas_blocks(model)
    out = []
    for i in layers:
        blocks[i].attn_adapter = Bottleneck(d, hidden, **factory_kwargs(model))
        out.append(blocks[i].attn_adapter)
    return out


def clear_slots(model: nn.Module, slots=("attn_adapter", "ffn_adapter", "layer_adapter")) -> Callable[[], None]:
    def undo():
        for blk in eas_blocks(model):
            for slot in slots:
                if isinstance(getattr(blk, slot), Bottleneck):
                    setattr(blk, slot, None)
    return undo


def attach_adapter(model: nn.Module, config: AdapterConfig | None = None) -> list[nn.Module]:
    """One sequential adapter per block, in front of the attention (see the module docstring)."""
    config = check_config(config, AdapterConfig)
    begin(model)
    apply_skips(model, SkipSet())
    modules = sequential_adapters(model, config.hidden, range(arch.num_layers(model)))
    return finish(model, "adapter", config, modules, undo=[clear_slots(model)])
