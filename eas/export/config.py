"""The `eas` section of an exported config.json: what makes a base transformers config an EAS model.

    "eas": {
      "format": 1,                       layout of this section
      "version": "0.1.0",                the eas library that wrote it
      "base_architecture": "LlamaForCausalLM",
      "num_layers": 4, "hidden_size": 64,  the decoder the skips and adapters were made for
      "skips": {"mha": [0, 2], "ffn": [], "layer": []},
      "pia": {...PIAConfig...} | null,   null: skip-only, or adapters folded into the weights
      "merge_strategy": "per_example" | null,
      "static_router": false,            skip PIAs carry calibrated fixed router weights
      "folded": false,                   adapters were folded into q/k/v and gate/up at export
      "mini_llava": {...} | absent       the projector's shape, for eas.export.load_mini_llava
    }

Every reader goes through `check_section`, so a bad section fails with one message that names the
file, the field, the value found and what was expected.
"""

from __future__ import annotations

from eas.method.pia.config import MERGE_STRATEGIES, PIAConfig, PIAConfigError
from eas.method.skip import KINDS

FORMAT = 1
CONFIG_FILE = "config.json"
MODELING_FILE = "modeling_eas.py"
WEIGHTS_FILE = "model.safetensors"          # a model without adapters: everything in one file
# With adapters, two shards and their index (transformers reads model.safetensors first if it exists,
# so the base shard must be named otherwise).
BASE_FILE = "base_model.safetensors"
ADAPTERS_FILE = "eas_adapters.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PROJECTOR_FILE = "projector.safetensors"


class CheckpointError(ValueError):
    """An EAS checkpoint directory that does not describe a loadable EAS model."""


def text_dims(config) -> dict:
    """(num_layers, hidden_size) of the decoder a config describes (LLaVA: its text config)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {"num_layers": text.num_hidden_layers, "hidden_size": text.hidden_size}


def check_section(section, source: str, dims: dict | None = None) -> dict:
    """Validate an `eas` section read from `source` (a path, for messages); returns it unchanged.

    `dims`: the base config's decoder size; a section written for another base model is refused."""
    where = f"{source}: eas section"
    if not isinstance(section, dict):
        raise CheckpointError(f"{source} has no `eas` section (got {section!r}): not an EAS checkpoint "
                              "(write one with eas.export.save_pretrained).")
    if section.get("format") != FORMAT:
        raise CheckpointError(f"{where} has format {section.get('format')!r}; this eas reads format {FORMAT}.")
    for key in ("skips", "num_layers", "hidden_size"):
        if key not in section:
            raise CheckpointError(f"{where} lacks the field {key!r}.")
    if dims is not None:
        for key, value in dims.items():
            if section[key] != value:
                raise CheckpointError(
                    f"{where} was written for a base model with {key}={section[key]}, but the base config "
                    f"in the same file has {key}={value}: the EAS part belongs to another base model.")
    skips = section["skips"]
    if not isinstance(skips, dict) or set(skips) - set(KINDS):
        raise CheckpointError(f"{where}: skips {skips!r} must map some of {', '.join(KINDS)} to layer lists.")
    n = section["num_layers"]
    for kind, indices in skips.items():
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
        if bad:
            raise CheckpointError(f"{where}: skips.{kind} has {bad}, expected layer indices in 0..{n - 1}.")
    strategy = section.get("merge_strategy")
    if strategy is not None and strategy not in MERGE_STRATEGIES:
        raise CheckpointError(f"{where}: unknown merge_strategy {strategy!r}; expected one of "
                              f"{', '.join(MERGE_STRATEGIES)} (or null).")
    pia = section.get("pia")
    if pia is not None:
        try:
            PIAConfig.from_dict(pia)
        except (PIAConfigError, TypeError) as err:
            raise CheckpointError(f"{where}: invalid pia options {pia!r}: {err}") from None
        if section.get("folded"):
            raise CheckpointError(f"{where}: folded=true but pia options are given; a folded export has no PIAs.")
    return section


def pia_config(section: dict) -> PIAConfig | None:
    """The PIAConfig the checkpoint's adapters use (its merge_strategy is the section's, if set)."""
    if section.get("pia") is None:
        return None
    config = PIAConfig.from_dict(section["pia"])
    strategy = section.get("merge_strategy")
    return config.replace(merge_strategy=strategy) if strategy else config
