"""Building the study's models by name, with their trained parts cached.

    mini-llava  the real pretrained embedded model (eas.mini_llava); its projector is aligned once
                (stage 1) and cached, keyed by the alignment parameters
    tiny        a randomly initialised 4-layer LLaMA with the same tokenizer and vision path, for
                unit tests and the smoke profile (seconds, meaningless answers)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from . import io
from .mini_llava import MiniLlava, load_language_model, load_tokenizer, tiny_language_model

MODEL_NAMES = ("mini-llava", "tiny")


@dataclass(frozen=True)
class AlignConfig:
    captions: int = 4000
    steps: int = 250
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0


def load_model(name: str = "mini-llava", *, visual_grid: int = 2, align: AlignConfig | None = None,
               seed: int = 0, progress: bool = True) -> MiniLlava:
    if name not in MODEL_NAMES:
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)} "
            "(LLaVA-1.5-7B and other hub models: see eas.arch.SUPPORTED_FAMILIES and the README)"
        )
    if not isinstance(visual_grid, int) or not 1 <= visual_grid <= 7:
        raise ValueError(f"visual_grid must be an integer in 1..7 (EfficientNet-Lite0's grid is 7x7); got {visual_grid!r}")
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
        from .align import caption_examples, train_projector

        torch.manual_seed(align.seed)
        model.projector.reset_parameters() if hasattr(model.projector, "reset_parameters") else None
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


def parameter_counts(model: MiniLlava) -> dict[str, int]:
    lm = sum(p.numel() for p in model.language_model.parameters())
    proj = sum(p.numel() for p in model.projector.parameters())
    return {"language_model": lm, "projector": proj, "total": lm + proj}
