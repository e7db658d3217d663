"""Building the study's models by name, with their trained parts cached.

    mini-llava  the real pretrained embedded model (eas.models.mini_llava); its projector is aligned once
                (stage 1) and cached, keyed by the alignment parameters
    tiny        a randomly initialised 4-layer LLaMA with the same tokenizer and vision path, for
                unit tests and the smoke profile (seconds, meaningless answers)
    <path or hub id of a LLaVA-1.5 checkpoint>, e.g. llava-hf/llava-1.5-7b-hf
                a real LlavaForConditionalGeneration behind the same interface (eas.models.llava)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from eas.core import io
from eas.models.align import caption_examples, train_projector
from eas.models.llava import LlavaTarget
from eas.models.mini_llava import MiniLlava, load_language_model, load_tokenizer, tiny_language_model

MODEL_NAMES = ("mini-llava", "tiny")


@dataclass(frozen=True)
class AlignConfig:
    captions: int = 4000
    steps: int = 250
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0


def looks_like_path(name: str) -> bool:
    """A name written as a filesystem path (absolute, ./, ../ or ~/), which must then exist: never a hub id."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def is_llava_checkpoint(name: str) -> bool:
    """A local LLaVA folder (its config names LlavaForConditionalGeneration) or a llava hub id ("org/name")."""
    path = Path(name).expanduser()
    if looks_like_path(name):
        config = path / "config.json"
        return config.is_file() and "LlavaForConditionalGeneration" in config.read_text()
    return "llava" in name.lower() and name.count("/") == 1


def check_model_name(name: str) -> str:
    if name in MODEL_NAMES or is_llava_checkpoint(name):
        return name
    path = Path(name).expanduser()
    if looks_like_path(name):
        found = ("does not exist" if not path.exists() else
                 "has no config.json" if not (path / "config.json").is_file() else
                 "has a config.json that does not name LlavaForConditionalGeneration")
        raise ValueError(f"model folder {path} {found}; expected a LLaVA-1.5 checkpoint folder (config.json naming "
                         "LlavaForConditionalGeneration, the weights, and the processor's files), as "
                         "LlavaForConditionalGeneration.save_pretrained and processor.save_pretrained write it")
    raise ValueError(
        f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}, or the path / hub id of a "
        "LLaVA-1.5 checkpoint (a folder whose config.json names LlavaForConditionalGeneration)"
    )


def process_device() -> torch.device:
    """This process's accelerator: under `accelerate launch` each rank's own GPU (cuda:0, cuda:1, ...), never a bare
    "cuda" that puts every rank's copy on the first GPU; a single process gets the first."""
    from accelerate import PartialState

    return PartialState().device


def load_model(name: str = "mini-llava", *, visual_grid: int = 2, align: AlignConfig | None = None,
               seed: int = 0, progress: bool = True):
    check_model_name(name)
    if name not in MODEL_NAMES:

        cuda = torch.cuda.is_available()
        # bf16, not fp16: the trained adapters are kept in fp32 beside it (eas.method.skip runs each adapter in
        # its own dtype), and bf16's range keeps the frozen base's activations finite
        return LlavaTarget.from_pretrained(name, dtype=torch.bfloat16 if cuda else torch.float32,
                                           device=process_device() if cuda else None).requires_grad_(False)
    if not isinstance(visual_grid, int) or not 1 <= visual_grid <= 7:
        raise ValueError(f"visual_grid must be an integer in 1..7 (EfficientNet-Lite0's grid is 7x7); "
                         f"got {visual_grid!r}")
    if name == "tiny":
        torch.manual_seed(seed)
        return MiniLlava(tiny_language_model(seed), load_tokenizer(), visual_grid).eval()
    lm, tokenizer = load_language_model()
    model = MiniLlava(lm, tokenizer, visual_grid).eval()
    model.requires_grad_(False)
    align = align or AlignConfig()
    params = {"visual_grid": visual_grid, **asdict(align)}
    path = io.cache_dir("projector") / f"projector-{io.key_of(params)}.safetensors"
    if path.exists():
        model.load_projector(path)
    else:

        torch.manual_seed(align.seed)  # the projector's initial weights are part of the cache key's run
        for layer in model.projector:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        losses = train_projector(model, caption_examples(align.captions, align.seed), steps=align.steps,
                                 batch_size=align.batch_size, lr=align.lr, seed=align.seed, progress=progress)
        io.write_json(path.with_suffix(".json"), {"params": params, "losses": losses})
        model.save_projector(path, extra=params)
    return model


def alignment_log(visual_grid: int = 2, align: AlignConfig | None = None) -> dict | None:
    """The cached alignment run's parameters and loss curve, if it has been trained."""
    params = {"visual_grid": visual_grid, **asdict(align or AlignConfig())}
    path = io.cache_dir("projector") / f"projector-{io.key_of(params)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def parameter_counts(model) -> dict[str, int]:
    """Parameters by part: the language model (with its LM head), the projector, and the vision tower where the
    module holds one (LLaVA's CLIP; the mini-LLaVA's EfficientNet runs outside it, on cached features)."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    total = count(model)
    if isinstance(model, LlavaTarget):
        inner = model.model.model
        proj, vision = count(getattr(inner, "multi_modal_projector", None)), count(getattr(inner, "vision_tower", None))
    else:
        proj, vision = count(getattr(model, "projector", None)), 0
    return {"language_model": total - proj - vision, "projector": proj, "vision": vision, "total": total}
