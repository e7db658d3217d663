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
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutputWithPooling

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
        self.features: dict[str, torch.Tensor] = {}  # image path -> CLIP features (cache_features)

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

    @torch.no_grad()
    def cache_features(self, examples, progress: bool = True) -> None:
        """The frozen CLIP tower's features of the examples' images (the layer LLaVA reads, before the projector),
        computed once per image and kept on the CPU: training, evaluation and timing then run the projector and the
        language model only. Every method here leaves the vision tower frozen (eas.baselines.full included)."""
        from PIL import Image

        missing = list(dict.fromkeys(str(Path(e.image).resolve()) for e in examples
                                     if e.image is not None and str(Path(e.image).resolve()) not in self.features))
        for path in tqdm(missing, desc="CLIP features", disable=not progress or len(missing) < 16):
            pixels = self.processor.image_processor(images=[Image.open(path).convert("RGB")],
                                                    return_tensors="pt")["pixel_values"]
            self.features[path] = self.vision_features(pixels)[0].cpu()

    def vision_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """What LlavaModel.get_image_features feeds its projector: the configured hidden layer(s) of the vision tower,
        without the CLS token under the "default" strategy."""
        inner, cfg = self.model.model, self.model.config
        vision = inner.vision_tower
        weight = next(vision.parameters())
        hidden = vision(pixels.to(weight.device, weight.dtype), output_hidden_states=True,
                        return_dict=True).hidden_states
        layers = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, list) else [cfg.vision_feature_layer]
        chosen = [hidden[i][:, 1:] if cfg.vision_feature_select_strategy == "default" else hidden[i] for i in layers]
        return torch.cat(chosen, dim=-1)

    def prompt_text(self, prompt: str, has_image: bool) -> str:
        return TEMPLATE.format(image=self.image_token + "\n" if has_image else "", prompt=prompt)

    def target_ids(self, target: str) -> list[int]:
        """The target's tokens as LLaVA-1.5 saw them in training, where prompt and answer were one string: read off
        the tokenization of "ASSISTANT: {target}". A SentencePiece (LLaMA) tokenizer given " {target}" alone adds its
        own word-start marker and begins with a token that never follows "ASSISTANT:" in training."""
        suffix = TEMPLATE.rsplit("{prompt}", 1)[1]
        head = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        joint = self.tokenizer(f"{suffix} {target}", add_special_tokens=False)["input_ids"]
        if joint[:len(head)] != head:  # a merge across the boundary: no clean split, the separate tokenization
            return self.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
        return joint[len(head):]

    def collate(self, examples, with_target: bool = False) -> Batch:
        from PIL import Image

        self.cache_features(examples, progress=False)
        rows, prompt_lens, features = [], [], []
        for ex in examples:
            image = Image.open(ex.image).convert("RGB") if ex.image is not None else None
            enc = self.processor(text=self.prompt_text(ex.prompt, image is not None),
                                 images=[image] if image is not None else None, return_tensors="pt")
            ids = enc["input_ids"][0].tolist()
            if image is not None:
                features.append(self.features[str(Path(ex.image).resolve())])
            target = self.target_ids(ex.target) + [self.eos_token_id] if with_target else []
            rows.append(ids + target)
            prompt_lens.append(len(ids))
        ids, attn, prompt_mask, labels = left_pad(rows, prompt_lens, self.pad_token_id, with_target)
        batch = Batch(ids, attn, prompt_mask, torch.stack(features) if features else None, labels)
        return batch.to(self.lm_head.weight.device)

    def forward(self, input_ids, attention_mask, image_features=None, cache=None, use_cache: bool = False):
        """`image_features`: the cached CLIP features of the batch's images (one row per image, in order; see
        cache_features). The projector maps them here, and LlavaModel splices them into the image-token slots."""
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        encoded = None
        if image_features is not None:
            projector = self.model.model.multi_modal_projector
            weight = next(projector.parameters())
            encoded = {"image": BaseModelOutputWithPooling(
                pooler_output=list(projector(image_features.to(weight.device, weight.dtype))))}
        out = self.model.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
            mm_encoder_outputs=encoded, cache=cache, use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache
