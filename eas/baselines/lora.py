"""LoRA (Hu et al. 2022) from peft on the decoder's linear layers; merged after training (base speed)."""

from __future__ import annotations

from torch import nn

from eas.baselines.config import LORA_ADAPTER_NAME, LoRAConfig
from eas.baselines.state import begin, check_config, factory_kwargs, finish
from eas.models import arch


def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in arch.text_model(model).modules() if isinstance(m, LoraLayer)]


def attach_lora(model: nn.Module, config: LoRAConfig | None = None) -> list[nn.Module]:
    """peft LoRA on the decoder's linear layers `config.targets` (not the LM head, not the projector)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = check_config(config, LoRAConfig)
    begin(model)
    peft_config = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=list(config.targets), bias="none")
    inject_adapter_in_model(peft_config, arch.text_model(model), adapter_name=LORA_ADAPTER_NAME)
    modules = []
    for layer in lora_layers(model):
        modules += [layer.lora_A[LORA_ADAPTER_NAME], layer.lora_B[LORA_ADAPTER_NAME]]
    # fp32 beside a 16-bit base, as every adapter here (peft casts a layer's input to its LoRA weights' dtype)
    dtype = factory_kwargs(model)["dtype"]
    for m in modules:
        m.to(dtype)
    return finish(model, "lora", config, modules, undo=[lambda: _unload_lora(model)])


def _unload_lora(model: nn.Module, unmerge: bool = True) -> None:
    """Put the plain base Linear layers back (unmerging first, so the base weights are the originals)."""
    if unmerge:
        unmerge_lora(model)
    text = arch.text_model(model)
    lora_ids = {id(m) for m in lora_layers(model)}
    for name, module in list(text.named_modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in lora_ids:
                setattr(module, child_name, child.get_base_layer())


def merge_lora(model: nn.Module, unload: bool = False) -> None:
    """Fold B @ A * alpha / r into the base weights: inference at base cost (Table 1 "+0.0G").
    Reversible with `unmerge_lora`; merging twice is a no-op. A merged peft layer still passes through
    its wrapper's Python forward; `unload=True` also swaps the wrappers for the merged plain Linear
    layers (exactly the base model's modules, for timing), which cannot be undone."""
    for layer in lora_layers(model):
        if not layer.merged:
            layer.merge(adapter_names=[LORA_ADAPTER_NAME])
    if unload:
        _unload_lora(model, unmerge=False)


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()
