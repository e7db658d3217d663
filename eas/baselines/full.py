"""Full fine-tuning of the language model and projector, and EAS itself behind the same interface."""

from __future__ import annotations

from torch import nn

from eas.baselines.config import EASConfig, FullConfig
from eas.baselines.state import Attached, begin, check_config, finish
from eas.method.pia import attach_pia, detach_pia
from eas.method.skip import SkipSet, apply_skips
from eas.models import arch


def attach_full_finetune(model: nn.Module, config: FullConfig | None = None) -> list[nn.Module]:
    """Unfreeze everything the model holds except a vision encoder (MiniLlava holds none: it reads
    cached features). Returns the model itself as the one trainable module."""
    config = check_config(config, FullConfig)
    begin(model)
    model.requires_grad_(True)
    vision = arch.vision_encoder(model)
    if vision is not None:
        vision.requires_grad_(False)
    model._eas_baseline = Attached("full", config, [], [])
    return [model]


def attach_eas(model: nn.Module, config: EASConfig | None = None) -> list[nn.Module]:
    """EAS: skip `config.mha` and attach PIAs (eas.method.pia.attach_pia)."""
    config = check_config(config, EASConfig)
    begin(model)
    modules = attach_pia(model, SkipSet(mha=config.mha), config.pia)

    def undo():
        detach_pia(model)
        apply_skips(model, SkipSet())

    return finish(model, "eas", config, modules, undo=[undo])
