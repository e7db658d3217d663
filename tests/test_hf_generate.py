"""transformers' model.generate() on an exported EAS model equals the study's greedy decoding.

The exported model detects the prefill (an empty cache), runs it with the prompt mask, and merges the
PIAs before the first decode step; these tests check the tokens, that the merge really happened, and
that nothing stays merged afterwards.
"""

from __future__ import annotations

import pytest
import torch
from hf_helpers import PAD, PIA, VOCAB, eas_lm, left_padded
from transformers import AutoModelForCausalLM, DynamicCache

from eas.export import pretrained as export
from eas.method import pia, reparam
from eas.models.causal_lm import CausalLMTarget
from eas.models.generate import greedy_generate

NEW = 10


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(study model, its export loaded through trust_remote_code) per family, built once."""
    cache = {}

    def get(family="llama", config=PIA):
        key = (family, config)
        if key not in cache:
            model = eas_lm(family, config=config)
            path = export.save_pretrained(model, tmp_path_factory.mktemp(family) / "ckpt")
            cache[key] = model, AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
        return cache[key]

    return get


def hf_greedy(model, batch, new=NEW, **kw):
    out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                         max_new_tokens=new, min_new_tokens=new, eos_token_id=None, pad_token_id=PAD, **kw)
    return out[:, batch.input_ids.shape[1]:]


def study_greedy(model, batch, new=NEW):
    """eas.models.generate's greedy decoding through CausalLMTarget, merging after prefill as the study does."""
    merge = (lambda t, b: reparam.merge_after_prefill(model, b)) if pia.pia_config(model).reparam else None
    return greedy_generate(CausalLMTarget(model), batch, new, ignore_eos=True, after_prefill=merge).tokens


@pytest.fixture()
def count_merges(monkeypatch):
    calls = []
    merge = reparam.merge_after_prefill

    def counted(model, batch=None, strategy=None):
        calls.append(strategy)
        return merge(model, batch, strategy)

    monkeypatch.setattr(reparam, "merge_after_prefill", counted)  # the modeling file calls it by module attribute
    return calls


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("lens", [(7,), (5, 9, 7)], ids=["batch1", "batch3-leftpad"])
def test_generate_equals_study_greedy(exported, family, lens, count_merges):
    model, loaded = exported(family)
    batch = left_padded(lens)
    want = study_greedy(model, batch)
    assert len(set(want.flatten().tolist())) > 3  # the tokens vary: the comparison means something
    count_merges.clear()
    got = hf_greedy(loaded, batch)
    assert count_merges == ["low_rank"]  # one merge, after the prefill, with the checkpoint's strategy
    assert not reparam.is_merged(loaded)  # generate leaves the model unmerged
    assert torch.equal(got, want)
    assert torch.equal(study_greedy(loaded, batch), want)  # the study's decoding on the loaded model too


def test_consecutive_generations_do_not_leak_state(exported):
    model, loaded = exported()
    first, second = left_padded((5, 9, 7), seed=1), left_padded((8, 4), seed=2)
    hf_greedy(loaded, first)
    assert torch.equal(hf_greedy(loaded, second), study_greedy(model, second))
    assert torch.equal(hf_greedy(loaded, first), study_greedy(model, first))


def test_no_padding_mask_dropped_by_generate(exported):
    # generate drops an all-ones mask; the prompt is then every token.
    model, loaded = exported()
    batch = left_padded((6, 6))
    out = loaded.generate(input_ids=batch.input_ids, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                          eos_token_id=None, pad_token_id=PAD)
    assert torch.equal(out[:, 6:], study_greedy(model, batch))


@pytest.mark.parametrize("strategy", ["two_matrix", "per_example"])
def test_merge_strategy_from_the_checkpoint(exported, strategy, count_merges):
    model, loaded = exported(config=PIA.replace(merge_strategy=strategy))
    batch = left_padded()
    got = hf_greedy(loaded, batch)
    assert count_merges == [strategy] and torch.equal(got, study_greedy(model, batch))


def test_unmerged_pias_without_reparam(exported, count_merges):
    model, loaded = exported(config=PIA.replace(reparam=False))
    batch = left_padded()
    got = hf_greedy(loaded, batch)
    assert count_merges == [] and torch.equal(got, study_greedy(model, batch))


def test_manual_decoding_loop_with_a_cache(exported):
    """Without generate: a forward given an empty cache merges; the next full forward unmerges."""
    model, loaded = exported()
    batch = left_padded()
    want = study_greedy(model, batch, new=4)
    mask, cache = batch.attention_mask, DynamicCache(config=loaded.config)
    with torch.no_grad():
        out = loaded(input_ids=batch.input_ids, attention_mask=mask, cache=cache, use_cache=True)
        assert reparam.is_merged(loaded)
        tokens = [out.logits[:, -1].argmax(-1)]
        for _ in range(3):
            mask = torch.cat([mask, mask.new_ones(len(batch), 1)], dim=1)
            out = loaded(input_ids=tokens[-1][:, None], attention_mask=mask, cache=out.cache, use_cache=True)
            tokens.append(out.logits[:, -1].argmax(-1))
        assert torch.equal(torch.stack(tokens, 1), want)
        loaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask)  # no cache: a plain full forward
    assert not reparam.is_merged(loaded)


def test_sampling_is_seeded_and_valid(exported):
    _, loaded = exported()
    batch = left_padded()

    def sample(seed):
        torch.manual_seed(seed)
        return loaded.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=True,
                               temperature=1.5, top_k=50, max_new_tokens=NEW, min_new_tokens=NEW,
                               eos_token_id=None, pad_token_id=PAD)[:, batch.input_ids.shape[1]:]

    a, b, c = sample(0), sample(0), sample(1)
    assert a.shape == (3, NEW) and a.min() >= 0 and a.max() < VOCAB
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, hf_greedy(loaded, batch))  # it did sample
    assert not reparam.is_merged(loaded)


def test_generate_refuses_what_would_change_the_prompt_mean(exported):
    _, loaded = exported()
    batch = left_padded()
    with pytest.raises(ValueError, match="use_cache=False"):
        hf_greedy(loaded, batch, use_cache=False)
    skip_only, loaded_skip = exported(config=None)
    assert torch.equal(hf_greedy(loaded_skip, batch, use_cache=False), hf_greedy(loaded_skip, batch))


def test_mistral_generate(exported):
    model, loaded = exported("mistral")
    batch = left_padded()
    assert torch.equal(hf_greedy(loaded, batch), study_greedy(model, batch))


def test_llava_generate_through_image_text_to_text(tmp_path):
    from hf_helpers import llava_examples, tiny_llava_target
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from eas.models.llava import LlavaTarget

    target = tiny_llava_target()
    batch = target.collate(llava_examples())
    want = greedy_generate(target, batch, 6, ignore_eos=True,
                           after_prefill=lambda t, b: reparam.merge_after_prefill(target, b)).tokens
    path = export.save_pretrained(target, tmp_path / "llava")
    loaded = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
    assert type(loaded).__name__ == "EasLlavaForConditionalGeneration" and pia.pia_config(loaded) == PIA
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    again = LlavaTarget(loaded, processor)
    assert torch.equal(again.collate(llava_examples()).input_ids, batch.input_ids)
    with torch.no_grad():
        with pia.prompt_context(batch.prompt_mask, batch.attention_mask):
            ref, _ = target(batch.input_ids, batch.attention_mask, batch.image_features)
            got, _ = again(batch.input_ids, batch.attention_mask, batch.image_features)
    assert torch.equal(got, ref)
    # The batch holds cached CLIP features; generate() takes what a user passes: the processor's pixels.
    from PIL import Image
    pixels = processor.image_processor(images=[Image.open(e.image).convert("RGB") for e in llava_examples() if e.image],
                                       return_tensors="pt")["pixel_values"]
    out = loaded.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          pixel_values=pixels, do_sample=False, max_new_tokens=6, min_new_tokens=6,
                          eos_token_id=None, pad_token_id=target.pad_token_id)
    assert torch.equal(out[:, batch.input_ids.shape[1]:], want) and not reparam.is_merged(loaded)
