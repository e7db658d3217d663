"""DAS (Wu et al. 2023): whole blocks skipped and replaced by adapters, adapters on the kept blocks."""

from __future__ import annotations

from torch import nn

from eas.baselines.adapter import clear_slots, sequential_adapters
from eas.baselines.config import BaselineError, DASConfig
from eas.baselines.layer import Bottleneck
from eas.baselines.state import begin, check_config, factory_kwargs, finish
from eas.method.bandit import BanditConfig
from eas.method.skip import SkipSet, apply_skips, eas_blocks
from eas.models import arch


def check_das_k(k: int, n_layers: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n_layers:
        raise BaselineError(f"DAS skips k={k!r} layers of a {n_layers}-layer model; expected 0 <= k <= "
                            f"{n_layers - 1} (at least one block must stay).")
    return k


def das_bandit_config(k: int, n_layers: int, **options):
    """The bandit settings for DAS's layer search: the EAS search over whole blocks (kind "layer")."""

    if check_das_k(k, n_layers) == 0:
        raise BaselineError("a DAS search needs k >= 1 layers to skip.")
    return BanditConfig(k=k, kind="layer", **options)


def attach_das(model: nn.Module, config: DASConfig | None = None) -> list[nn.Module]:
    """Skip `config.layers` whole, each replaced by x + up(relu(down(norm_a x))); adapters on kept blocks."""
    config = check_config(config, DASConfig)
    n = arch.num_layers(model)
    check_das_k(len(config.layers), n)
    begin(model)
    apply_skips(model, SkipSet(layer=config.layers))  # validates the indices
    d = arch.text_config(model).hidden_size
    kw = factory_kwargs(model)
    blocks = eas_blocks(model)
    skipped = set(config.layers)
    modules = []
    for i, blk in enumerate(blocks):
        if i in skipped or config.all_layers:
            norm = arch.layer_parts(blk).attn_norm
            blk.layer_adapter = Bottleneck(d, config.layer_hidden, norm=norm, **kw)
            modules.append(blk.layer_adapter)
        if config.kept_hidden is not None and (i not in skipped or config.all_layers):
            modules += sequential_adapters(model, config.kept_hidden, [i])
    return finish(model, "das", config, modules,
                   undo=[clear_slots(model), lambda: apply_skips(model, SkipSet())])
