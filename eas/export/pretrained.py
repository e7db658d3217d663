"""EAS models out of this repository: transformers model directories that load with from_pretrained.

    save_pretrained(model, path)      the study's model (skips, PIAs, merge strategy) as a directory:
                                      config.json (base config + `eas` section + auto_map), the base
                                      weights (model.safetensors), the adapters (eas_adapters.safetensors),
                                      modeling_eas.py, and the tokenizer / processor / projector it has
    save_pretrained(..., fold=True)   adapters folded into q/k/v and gate/up biases where that is exact;
                                      only the skipping needs custom code at load time
    load_pretrained(path)             the model again, through the installed library's classes
    load_mini_llava(path)             the embedded MiniLlava again (language model + projector + tokenizer)
    export_adapters(base, dir, path)  a base model + a PIA checkpoint folder (a training run) -> a directory

Users elsewhere load the same directory with
`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (LLaVA:
`AutoModelForImageTextToText`), which runs the copied modeling_eas.py (it imports `eas`).

Tensor names are the EAS model's own (decoder layers are EASBlocks, so a layer's base weights sit
under `...layers.{i}.block.`), which is what makes loading exact without a renaming step. A directory
is written under a temporary name beside `path` and renamed into place at the end: an interrupted
export leaves no half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from eas import __version__
from eas.core import io
from eas.export import config as section_format
from eas.export import modeling_eas
from eas.export.checkpoint import expected_tensors
from eas.export.config import (
    ADAPTERS_FILE,
    BASE_FILE,
    CONFIG_FILE,
    INDEX_FILE,
    MODELING_FILE,
    PROJECTOR_FILE,
    WEIGHTS_FILE,
    CheckpointError,
)
from eas.method import reparam
from eas.method.pia import adapt_adapters, load_adapters, named_adapters, pia_config, skip_adapters
from eas.method.pia.config import MERGE_STRATEGIES
from eas.method.skip import current_skips
from eas.models import arch
from eas.models.mini_llava import MiniLlava

__all__ = ["CheckpointError", "FoldError", "save_pretrained", "load_pretrained", "load_mini_llava", "check_foldable",
           "export_adapters", "read_config", "model_class"]

_ADAPTER_SLOTS = (".attn_adapter.", ".ffn_adapter.")
# Keys of the base config that describe a saved file, not the model: rewritten for the EAS class.
_NOT_CARRIED = ("model_type", "architectures", "auto_map", "_name_or_path", "transformers_version", "eas")


class FoldError(ValueError):
    """The adapters cannot be folded into fixed weights without changing the model's function."""


def _modeling():

    return modeling_eas


def _family(hf: nn.Module):
    name = arch.family(hf)
    families = _modeling().FAMILIES
    if name not in families:
        raise arch.UnsupportedModelError(
            f"eas.export.pretrained writes {', '.join(families)} (and MiniLlava's language model); got {name}.")
    return name, families[name]


# ----------------------------------------------------------------------------- the directory, atomically

@contextlib.contextmanager
def _staged_dir(path: Path, overwrite: bool):
    """A fresh temporary directory beside `path`, renamed to `path` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        old = None
        if path.exists():  # swap: the old checkpoint disappears only once the new one is complete
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# ----------------------------------------------------------------------------- saving

def _section(model, hf, merge_strategy, folded: bool) -> dict:
    config = pia_config(model)
    if named_adapters(model) and config is None:
        raise CheckpointError("the model holds PIAs but no PIA config; attach them with eas.method.pia.attach_pia.")
    strategy = merge_strategy or (config.merge_strategy if config is not None else None)
    if strategy is not None and strategy not in MERGE_STRATEGIES:
        raise CheckpointError(f"unknown merge_strategy {strategy!r}; expected one of {', '.join(MERGE_STRATEGIES)}.")
    static = any(a.static_alpha is not None for a in skip_adapters(model).values())
    if strategy == "static_router" and not static:
        raise CheckpointError("merge_strategy 'static_router' needs calibrated router weights: "
                              "call eas.method.reparam.calibrate_static_router(model, batches) first.")
    dims = section_format.text_dims(hf.config)
    return {
        "format": section_format.FORMAT,
        "version": __version__,
        "base_architecture": arch.family(hf),
        **dims,
        "skips": current_skips(model).to_dict(),
        "pia": None if folded or config is None else config.to_dict(),
        "merge_strategy": None if folded or config is None else strategy,
        "static_router": static and not folded,
        "folded": folded,
        "folded_from": config.to_dict() if folded else None,
    }


def _config(hf, config_cls, model_cls, auto_class: str, section: dict, biases: dict):
    base = {k: v for k, v in hf.config.to_dict().items() if k not in _NOT_CARRIED}
    text = base["text_config"] if "text_config" in base else base
    for flag, needed in biases.items():  # LLaMA-style configs switch bias slots on per kind
        if needed and flag in text:
            text[flag] = True
    config = config_cls.from_dict({**base, "eas": section})
    config.architectures = [model_cls.__name__]
    module = MODELING_FILE.removesuffix(".py")
    config.auto_map = {"AutoConfig": f"{module}.{config_cls.__name__}", auto_class: f"{module}.{model_cls.__name__}"}
    return config


def _module_names(hf: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in hf.named_modules()}


def _matched(state: dict, want: dict) -> dict[str, torch.Tensor]:
    """The tensors of `state` the exported layout stores, or an error naming what does not fit."""
    kept = {k: v for k, v in state.items() if k in want}
    shared = {v.data_ptr() for v in kept.values()}
    extra = sorted(k for k, v in state.items() if k not in want and v.data_ptr() not in shared)  # tied copies
    missing = sorted(set(want) - set(kept))
    if extra or missing:
        raise CheckpointError(
            f"the model does not have the layout an EAS checkpoint describes: tensors {extra[:3]} have no place "
            f"in it, {missing[:3]} are absent "
            "(other adapters, e.g. LoRA or DAS, are not exported by eas.export.pretrained).")
    return kept


def check_foldable(model: nn.Module) -> None:
    """Raise FoldError unless every PIA is a fixed affine map of its input (no prompt dependence)."""
    for i, pia in skip_adapters(model).items():
        if pia.down2 is not None:
            raise FoldError(
                f"layer {i}'s skip PIA has info_exchange=True: its bias bd1 + down2(prompt mean) "
                "(SkipPIA.hidden_bias) depends on each prompt, so no fixed weights compute it. "
                "Export it unfolded (fold=False); the merge then happens per prompt after prefill.")
        if pia.router is not None and pia.static_alpha is None:
            raise FoldError(
                f"layer {i}'s skip PIA routes by the prompt mean, so its weights differ per prompt. "
                "Calibrate a task-level router first (eas.method.reparam.calibrate_static_router), or export unfolded.")


def _folded_gate_up(pia, mlp) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (d, 2 d_ff), b (2 d_ff,)) with [gate, up](n + pia(n)) = n @ W + b, for a prompt-free PIA."""
    if pia.static_alpha is not None:
        plan = reparam.static_ffn_plan(pia, mlp)
        bias = pia.down1.bias.to(plan.bias_map.dtype) @ plan.bias_map + plan.bias_const
    else:
        plan = reparam.ffn_plan(pia, mlp)
        _, bp = pia.linear_form()
        bias = reparam.gate_up_bias(mlp, bp)[0]
    return plan.base, bias


@torch.no_grad()
def _folded_tensors(model, hf: nn.Module, want: dict, family: str) -> dict[str, torch.Tensor]:
    check_foldable(model)
    names = _module_names(hf)
    state = {k: v for k, v in hf.state_dict().items() if not any(s in k for s in _ADAPTER_SLOTS)}

    def put(lin: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
        key = names[id(lin)]
        if f"{key}.bias" not in want:
            raise FoldError(f"{family} has no bias in {key} (its config has no switch for one), and the folded "
                            "adapter needs one there; export it unfolded (fold=False).")
        state[f"{key}.weight"], state[f"{key}.bias"] = weight, bias

    layers = arch.decoder_layers(model)
    for i, adapter in adapt_adapters(model).items():
        for lin in arch.layer_parts(layers[i]).qkv:
            merged = reparam.merged_linear(lin, adapter)
            put(lin, merged.weight, merged.bias)
    for i, pia in skip_adapters(model).items():
        parts = arch.layer_parts(layers[i])
        weight, bias = _folded_gate_up(pia, parts.mlp)
        f = parts.gate.out_features
        put(parts.gate, weight[:, :f].T, bias[:f])
        put(parts.up, weight[:, f:].T, bias[f:])
    for key, shape in want.items():
        if key not in state and key.endswith(".bias"):  # bias slots the fold did not need (o, down, other layers)
            state[key] = torch.zeros(shape)
    return _matched(state, want)


def _write_weights(tmp: Path, tensors: dict[str, torch.Tensor]) -> None:
    meta = {"format": "pt"}  # transformers refuses safetensors files without it
    adapters = {k: v for k, v in tensors.items() if any(s in k for s in _ADAPTER_SLOTS)}
    base = {k: v for k, v in tensors.items() if k not in adapters}
    if not adapters:
        io.save_tensors(tmp / WEIGHTS_FILE, base, metadata=meta)
        return
    io.save_tensors(tmp / BASE_FILE, base, metadata=meta)
    io.save_tensors(tmp / ADAPTERS_FILE, adapters, metadata=meta)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    io.write_json(tmp / INDEX_FILE, {"metadata": {"total_size": size},
                                     "weight_map": {k: ADAPTERS_FILE if k in adapters else BASE_FILE
                                                    for k in sorted(tensors)}})


@torch.no_grad()
def save_pretrained(model: nn.Module, path: str | Path, merge_strategy: str | None = None, *, fold: bool = False,
                    tokenizer=None, overwrite: bool = False) -> Path:
    """Write `model` (a supported transformers model, MiniLlava, or a LlavaTarget / CausalLMTarget around
    one, with its skips and PIAs) as a transformers model directory at `path`.

    merge_strategy  how generation merges the PIAs after prefill (default: the PIA config's)
    fold            fold the adapters into the weights (exact only for prompt-free PIAs, see check_foldable)
    tokenizer       a tokenizer or processor to save beside it (MiniLlava's and LlavaTarget's are saved anyway)
    """
    hf = arch.transformers_model(model)
    family, (config_cls, model_cls, auto_class) = _family(hf)
    reparam.unmerge(model)
    folded = bool(fold and named_adapters(model))
    section = _section(model, hf, merge_strategy, folded)
    is_mini = arch.family(model) == "MiniLlava"
    if is_mini:
        section["mini_llava"] = {"visual_grid": model.visual_grid, "vision_dim": model.vision_dim}
    biases = {"attention_bias": folded and bool(adapt_adapters(model)),
              "mlp_bias": folded and bool(skip_adapters(model))}
    config = _config(hf, config_cls, model_cls, auto_class, section, biases)
    want = expected_tensors(model_cls, config)
    tensors = _folded_tensors(model, hf, want, family) if folded else _matched(hf.state_dict(), want)
    for key, t in tensors.items():
        if tuple(t.shape) != want[key]:
            raise CheckpointError(f"tensor {key} has shape {list(t.shape)}, "
                                  f"the exported config expects {list(want[key])}.")
    tokenizer = tokenizer or getattr(model, "processor", None) or getattr(model, "tokenizer", None)
    with _staged_dir(Path(path), overwrite) as tmp:
        _write_weights(tmp, tensors)
        if is_mini:
            model.save_projector(tmp / PROJECTOR_FILE)
        io.write_text(tmp / MODELING_FILE, Path(_modeling().__file__).read_text())
        if getattr(hf, "generation_config", None) is not None:
            io.write_text(tmp / "generation_config.json", hf.generation_config.to_json_string())
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        io.write_text(tmp / CONFIG_FILE, config.to_json_string())  # last: a directory with a config is complete
    return Path(path)


def export_adapters(base: nn.Module, adapter_dir: str | Path, path: str | Path, **kwargs) -> Path:
    """Export a base model plus a PIA checkpoint folder (eas.method.pia.save_adapters: a training run's
    adapters) as one EAS model directory; kwargs as save_pretrained. A checkpoint saved for a base
    of another depth or width is refused (eas.method.pia.load_adapters names it)."""

    load_adapters(base, adapter_dir)
    return save_pretrained(base, path, **kwargs)


# ----------------------------------------------------------------------------- loading

def read_config(path: str | Path) -> dict:
    """config.json of an EAS checkpoint directory, its `eas` section checked."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{file} is missing: {path} is not an EAS checkpoint directory.")
    try:
        raw = json.loads(file.read_text())
    except ValueError as err:
        raise CheckpointError(f"{file} is not valid JSON: {err}.") from None
    dims_of = raw.get("text_config", raw)
    dims = {"num_layers": dims_of.get("num_hidden_layers"), "hidden_size": dims_of.get("hidden_size")}
    section_format.check_section(raw.get("eas"), str(file), dims)
    return raw


def model_class(path: str | Path):
    """The eas.export class that loads the checkpoint at `path` (by its config's base architecture)."""
    raw = read_config(path)
    name = raw["eas"].get("base_architecture")
    families = _modeling().FAMILIES
    if name not in families:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: eas.base_architecture {name!r} is not one of "
                              f"{', '.join(families)}.")
    return families[name][1]


def load_pretrained(path: str | Path, **kwargs) -> nn.Module:
    """The EAS model saved at `path`, built with the installed eas library's classes (no remote code);
    kwargs go to from_pretrained (dtype=..., device_map=...)."""
    return model_class(path).from_pretrained(path, **kwargs).eval()


def load_mini_llava(path: str | Path, **kwargs):
    """Rebuild a MiniLlava exported by save_pretrained: language model, tokenizer and projector."""
    from transformers import AutoTokenizer


    raw = read_config(path)
    mini = raw["eas"].get("mini_llava")
    if mini is None:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE} has no eas.models.mini_llava entry: "
                              "it was not exported from a MiniLlava (load it with load_pretrained).")
    projector = Path(path) / PROJECTOR_FILE
    if not projector.is_file():
        raise CheckpointError(f"{projector} is missing: the MiniLlava's projector weights.")
    lm = load_pretrained(path, **kwargs)
    # trust_remote_code: without it AutoTokenizer asks interactively whether to run the directory's code
    # (config.json names it in auto_map); it only defines the config classes here.
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    model = MiniLlava(lm, tokenizer, visual_grid=mini["visual_grid"],
                      vision_dim=mini["vision_dim"])
    try:
        model.load_projector(projector)
    except Exception as err:
        raise CheckpointError(f"{projector} is not a projector for this model ({err}).") from None
    model.projector.to(lm.dtype)
    # Skips and PIA options are tracked on the object the study's code is handed: the MiniLlava.
    model._eas_skips, model._eas_pia_config = current_skips(lm), pia_config(lm)
    return model.eval()
