"""Tiny EAS models of every exported family, shared by test_export.py and test_hf_generate.py."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from eas.method import pia
from eas.method.skip import SkipSet
from eas.models.mini_llava import Batch

VOCAB = 256
PAD = 2
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM)}
PIA = pia.PIAConfig(skip_hidden=8, adapt_hidden=4)
SKIPS = SkipSet(mha=(0, 2))  # includes layer 0 (DESIGN.md section 4)


def tiny_lm(family: str = "llama", layers: int = 4, hidden: int = 64, seed: int = 0):
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    # A wide initialisation makes the random model's greedy tokens vary, so token comparisons mean something.
    cfg = config_cls(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     initializer_range=0.25, tie_word_embeddings=family == "llama",
                     bos_token_id=1, eos_token_id=PAD, pad_token_id=PAD)
    return model_cls(cfg).eval()


def eas_lm(family: str = "llama", config: pia.PIAConfig | None = PIA, skips: SkipSet = SKIPS, seed: int = 0, **kw):
    """A tiny LM with skips and (randomised, so non-trivial) PIAs; config=None: skip-only."""
    model = tiny_lm(family, seed=seed, **kw)
    if config is None:
        from eas.method.skip import apply_skips

        apply_skips(model, skips)
    else:
        pia.attach_pia(model, skips, config)
        pia.randomise_adapters(model, scale=0.3, seed=seed + 1)
    return model


def left_padded(lens=(5, 9, 7), seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    width = max(lens)
    ids = torch.full((len(lens), width), PAD)
    mask = torch.zeros(len(lens), width, dtype=torch.long)
    for b, n in enumerate(lens):
        ids[b, width - n:] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[b, width - n:] = 1
    return Batch(ids, mask, mask.bool())


@torch.no_grad()
def study_logits(model, batch: Batch) -> torch.Tensor:
    """The study's forward: the bare decoder, positions from the mask, PIA's prompt = the real tokens."""
    from eas.models import arch
    from eas.models.causal_lm import CausalLMTarget

    with pia.prompt_context(batch.prompt_mask, batch.attention_mask):
        hidden, _ = CausalLMTarget(model)(batch.input_ids, batch.attention_mask)
    return arch.lm_head(model)(hidden)


def tiny_llava_target(seed: int = 0):
    """A tiny random LLaVA (CLIP tower + LLaMA) behind eas.models.llava.LlavaTarget, with skips and random PIAs."""
    from transformers import CLIPImageProcessorPil, LlavaForConditionalGeneration, LlavaProcessor

    from eas.models.llava import LlavaTarget
    from eas.models.mini_llava import load_tokenizer

    tok = load_tokenizer()
    tok.add_tokens(["<image>"], special_tokens=True)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                       initializer_range=0.25)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32)
    from transformers import LlavaConfig

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(LlavaConfig(text_config=text.to_dict(), vision_config=vision,
                                                      image_token_index=tok.convert_tokens_to_ids("<image>")))
    target = LlavaTarget(model.eval(), processor)
    pia.attach_pia(target, SKIPS, PIA)
    pia.randomise_adapters(target, seed=seed + 1)
    return target


def llava_examples():
    from pathlib import Path

    from eas.data import Example

    images = sorted(str(p) for p in (Path(__file__).parent / "fixtures").glob("aid/*/*.jpg"))[:2]
    return [Example("a", "What is shown?", "a cat", "cat", images[0]),
            Example("b", "Say something longer than the other prompt, please.", "ok", "ok", None),
            Example("c", "And here?", "a dog", "dog", images[1])]
