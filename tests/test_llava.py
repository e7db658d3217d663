"""LLaVA-1.5's path, on a tiny random LlavaForConditionalGeneration with a real processor layout."""

from pathlib import Path

import pytest
import torch
from transformers import CLIPImageProcessorPil as CLIPImageProcessor
from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from eas.data import Example
from eas.method import skip
from eas.method.skip import SkipSet
from eas.models import arch, generate
from eas.models.llava import LlavaTarget

IMAGES = sorted(str(p) for p in (Path(__file__).parent / "fixtures").glob("aid/*/*.jpg"))[:2]


@pytest.fixture(scope="module")
def tiny_llava():
    from eas.models.mini_llava import load_tokenizer

    tok = load_tokenizer()
    tok.add_tokens(["<image>"], special_tokens=True)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1,
    )
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(text_config=text.to_dict(), vision_config=vision,
                                                      image_token_index=image_token_id)).eval()
    return LlavaTarget(model, processor)


def examples():
    return [Example("a", "What is shown?", "a cat", "cat", IMAGES[0]),
            Example("b", "Say something longer than the other prompt, please.", "ok", "ok", None),
            Example("c", "And here?", "a dog", "dog", IMAGES[1])]


def test_layers_reached_through_the_architecture_layer(tiny_llava):
    assert arch.family(tiny_llava) == "LlavaTarget" and arch.num_layers(tiny_llava) == 4
    assert arch.lm_head(tiny_llava) is tiny_llava.model.lm_head


def test_collate_expands_image_tokens(tiny_llava):
    batch = tiny_llava.collate(examples(), with_target=True)
    image_id = tiny_llava.model.config.image_token_index
    assert (batch.input_ids == image_id).sum(1).tolist() == [16, 0, 16]  # (32 / 8)^2 patches each
    assert batch.image_features.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("skips", [SkipSet(), SkipSet(mha=(0, 2))])
def test_cached_equals_uncached_and_single(tiny_llava, skips):
    skip.apply_skips(tiny_llava, skips)
    batch = tiny_llava.collate(examples())
    cached = generate.greedy_generate(tiny_llava, batch, 6, ignore_eos=True).tokens
    uncached = generate.greedy_generate(tiny_llava, batch, 6, ignore_eos=True, use_cache=False).tokens
    assert torch.equal(cached, uncached)
    single = generate.greedy_generate(tiny_llava, tiny_llava.collate(examples()[2:]), 6, ignore_eos=True).tokens
    assert torch.equal(single[0], cached[2])
