"""Checking an EAS checkpoint directory's files before transformers loads them.

transformers loads what it finds and fills anything missing with fresh random values (it only logs
that), so a checkpoint whose weights belong to another base model, or whose adapter file is gone,
would load into a model that silently computes something else. `check_directory` compares every
stored tensor's name and shape with the model the config describes, and names the file at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eas.export.config import (
    ADAPTERS_FILE,
    CONFIG_FILE,
    INDEX_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    check_section,
    text_dims,
)


def expected_tensors(cls, config) -> dict[str, tuple]:
    """name -> shape of every tensor a checkpoint of `config` must store (tied copies stored once)."""
    with torch.device("meta"):
        skeleton = cls(config)
    tied = set(getattr(skeleton, "all_tied_weights_keys", None) or {}) if _ties(config) else set()
    return {name: tuple(t.shape) for name, t in skeleton.state_dict().items() if name not in tied}


def _ties(config) -> bool:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text, "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False))


def _open(file: Path, role: str):
    from safetensors import safe_open

    if not file.is_file():
        raise CheckpointError(f"{file} is missing: the EAS checkpoint's {role} file.")
    try:
        return safe_open(str(file), "pt")
    except Exception as err:  # safetensors raises its own error types for truncated or garbled files
        raise CheckpointError(f"{file} is not a readable safetensors file ({err}); the {role} file is corrupt "
                              "(re-export the model).") from None


def stored_tensors(path: Path) -> dict[str, tuple[Path, tuple]]:
    """name -> (file, shape) over the directory's weight files (one file, or an index and its shards)."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index} is not a safetensors index (a JSON object with a weight_map): {err}.")
        files = sorted(set(weight_map.values()))
    elif (path / WEIGHTS_FILE).is_file():
        weight_map, files = None, [WEIGHTS_FILE]
    else:
        raise CheckpointError(f"{path} holds neither {WEIGHTS_FILE} nor {INDEX_FILE}: no weights to load.")
    out = {}
    for name in files:
        role = "PIA adapter" if name == ADAPTERS_FILE else "weights"
        with _open(path / name, role) as f:
            for key in f.keys():
                out[key] = (path / name, tuple(f.get_slice(key).get_shape()))
    if weight_map is not None:
        listed = {k for k, v in weight_map.items()}
        absent = sorted(listed - set(out))
        if absent:
            raise CheckpointError(f"{index} lists tensors its files do not hold, e.g. {absent[:3]}.")
    return out


def check_directory(cls, path, config=None) -> None:
    """Raise CheckpointError unless the local directory `path` holds exactly the tensors of the EAS
    model its config.json describes. Non-local paths (hub ids) are left to transformers."""
    path = Path(path)
    if not path.is_dir():
        return
    config_file = path / CONFIG_FILE
    if config is None:
        if not config_file.is_file():
            raise CheckpointError(f"{config_file} is missing: not a transformers model directory.")
        config = cls.config_class.from_pretrained(path)
    check_section(getattr(config, "eas", None), str(config_file), text_dims(config))
    want = expected_tensors(cls, config)
    have = stored_tensors(path)
    missing = sorted(set(want) - set(have))
    if missing:
        role = "PIA adapter" if any("_adapter." in k for k in missing) else "weight"
        raise CheckpointError(
            f"{path}: {len(missing)} {role} tensor(s) that {config_file.name} implies are in no weight file, "
            f"e.g. {missing[:3]}.")
    unexpected = sorted(set(have) - set(want))
    if unexpected:
        raise CheckpointError(
            f"{have[unexpected[0]][0]} holds {len(unexpected)} tensor(s) the config has no place for, "
            f"e.g. {unexpected[:3]}: the weights were made for another model (more layers, or other adapters).")
    for key in sorted(want):
        file, shape = have[key]
        if shape != want[key]:
            dims = text_dims(config)
            raise CheckpointError(
                f"{file}: tensor {key} has shape {list(shape)}, but {config_file.name} (hidden_size="
                f"{dims['hidden_size']}, {dims['num_layers']} layers) expects {list(want[key])}: "
                "the weights were made for another base model.")
