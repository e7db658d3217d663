"""LLaVA-1.5's path, on a tiny random LlavaForConditionalGeneration with a real processor layout."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
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
    # the CLIP tower's cached features of the two images (16 patches, CLS dropped), not their pixels
    assert batch.image_features.shape == (2, 16, 32)
    assert set(tiny_llava.features) == {str(Path(p).resolve()) for p in IMAGES}


def test_cached_clip_features_give_what_pixels_give(tiny_llava):
    """The forward on cached CLIP features is LlavaModel's own forward on the pixels (one tower pass per image)."""
    skip.apply_skips(tiny_llava, SkipSet())
    batch = tiny_llava.collate(examples())
    pixels = tiny_llava.processor.image_processor(images=[Image.open(p).convert("RGB") for p in IMAGES],
                                                  return_tensors="pt")["pixel_values"]
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours, _ = tiny_llava(batch.input_ids, batch.attention_mask, batch.image_features)
        theirs = tiny_llava.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        position_ids=positions, pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    calls = []
    handle = tiny_llava.model.model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    tiny_llava.collate(examples(), with_target=True)
    handle.remove()
    assert not calls  # every image is cached: the tower does not run again


def llama_style_tokenizer():
    """A tokenizer laid out as LLaMA-2's / Vicuna's tokenizer.json: a normalizer that prepends the word-start marker
    to the whole text and turns spaces into it, then BPE over word pieces (trained here, on word-split text)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    text = ["USER: Which is it? ASSISTANT: The answer is (A). BECAUSE: the light is on."] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_the_answer_starts_with_the_token_llava_was_trained_with():
    """LLaVA-1.5 tokenized "... ASSISTANT: The answer ..." as one string; the target's first token must be the one
    that follows "ASSISTANT:" there, not a SentencePiece tokenizer's reading of " The answer" alone."""
    tok = llama_style_tokenizer()
    target = "The answer is (A)."
    ids = LlavaTarget.target_ids(SimpleNamespace(tokenizer=tok), target)
    joint = tok("ASSISTANT: " + target, add_special_tokens=False)["input_ids"]
    assert joint[-len(ids):] == ids and tok.decode(ids) == target
    assert tok.convert_ids_to_tokens(ids[0]).startswith("\u2581T")
    alone = tok(" " + target, add_special_tokens=False)["input_ids"]
    assert alone != ids  # what the old collate trained on: an extra word-start marker first
    # a BPE tokenizer without word-start markers (the mini model's) splits the same either way
    from eas.models.mini_llava import load_tokenizer

    gpt2_style = load_tokenizer()
    assert LlavaTarget.target_ids(SimpleNamespace(tokenizer=gpt2_style), target) == \
        gpt2_style(" " + target, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("skips", [SkipSet(), SkipSet(mha=(0, 2))])
def test_cached_equals_uncached_and_single(tiny_llava, skips):
    skip.apply_skips(tiny_llava, skips)
    batch = tiny_llava.collate(examples())
    cached = generate.greedy_generate(tiny_llava, batch, 6, ignore_eos=True).tokens
    uncached = generate.greedy_generate(tiny_llava, batch, 6, ignore_eos=True, use_cache=False).tokens
    assert torch.equal(cached, uncached)
    single = generate.greedy_generate(tiny_llava, tiny_llava.collate(examples()[2:]), 6, ignore_eos=True).tokens
    assert torch.equal(single[0], cached[2])
