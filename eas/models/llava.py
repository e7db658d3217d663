"""LLaVA-1.5 (transformers' LlavaForConditionalGeneration) behind the same interface as MiniLlava.

The study's code (generation, training, probes, measurement) talks to a model through a handful
of members: `collate(examples, with_target)`, `forward(input_ids, attention_mask, image_features,
cache, use_cache) -> (hidden, cache)`, `lm_head`, `tokenizer`, `eos_token_id`, `config`.
`LlavaTarget` provides them for a real LLaVA checkpoint (e.g. `llava-hf/llava-1.5-7b-hf` where a
hub or a local copy is available), so the notebooks run on it unchanged: pass its path as `model`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from eas.models.mini_llava import Batch, left_pad

# LLaVA-1.5's conversation template (Vicuna v1 style).
TEMPLATE = "USER: {image}{prompt} ASSISTANT:"


class LlavaTarget(nn.Module):
    def __init__(self, model: nn.Module, processor):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                             else self.eos_token_id)
        self.image_token = getattr(processor, "image_token", "<image>")

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=torch.float16, device: str | None = None) -> "LlavaTarget":
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
        if device:
            model = model.to(device)
        return cls(model.eval(), AutoProcessor.from_pretrained(path))

    @property
    def config(self):
        return self.model.config.text_config

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.lm_head

    def cache_features(self, examples, progress: bool = True) -> None:
        """LLaVA encodes pixels on the fly (its CLIP tower runs inside the forward pass)."""

    def prompt_text(self, prompt: str, has_image: bool) -> str:
        return TEMPLATE.format(image=self.image_token + "\n" if has_image else "", prompt=prompt)

    def collate(self, examples, with_target: bool = False) -> Batch:
        from PIL import Image

        rows, prompt_lens, pixels = [], [], []
        for ex in examples:
            image = Image.open(ex.image).convert("RGB") if ex.image is not None else None
            enc = self.processor(text=self.prompt_text(ex.prompt, image is not None),
                                 images=[image] if image is not None else None, return_tensors="pt")
            ids = enc["input_ids"][0].tolist()
            if image is not None:
                pixels.append(enc["pixel_values"][0])
            target = (self.tokenizer(" " + ex.target, add_special_tokens=False)["input_ids"] + [self.eos_token_id]
                      if with_target else [])
            rows.append(ids + target)
            prompt_lens.append(len(ids))
        ids, attn, prompt_mask, labels = left_pad(rows, prompt_lens, self.pad_token_id, with_target)
        batch = Batch(ids, attn, prompt_mask, torch.stack(pixels) if pixels else None, labels)
        return batch.to(self.lm_head.weight.device)

    def forward(self, input_ids, attention_mask, image_features=None, cache=None, use_cache: bool = False):
        """`image_features` carries pixel values here; LlavaModel splices the projected CLIP
        features into the image-token slots itself."""
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        dtype = next(self.model.parameters()).dtype
        out = self.model.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
            pixel_values=None if image_features is None else image_features.to(dtype),
            cache=cache, use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache
