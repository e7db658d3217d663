"""The real embedded model loads offline and behaves (converted once from the packaged GGUF)."""

import pytest
import torch

from eas.data import Example
from eas.method import skip
from eas.method.skip import SkipSet
from eas.models import arch, generate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm():
    from eas.models.mini_llava import MiniLlava, load_language_model

    lm, tokenizer = load_language_model()
    return MiniLlava(lm, tokenizer, visual_grid=2).eval()


def test_smollm2_shape(smollm):
    cfg = smollm.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (9, 3, 49152)
    assert arch.num_layers(smollm) == 30


def test_pretrained_language_model_answers_a_text_question(smollm):
    ex = Example(uid="q", prompt="What is the capital of France? Answer in one word.", target="", answer="Paris",
                 image=None)
    text = generate.decode_texts(smollm, generate.greedy_generate(smollm, smollm.collate([ex]), 8).tokens)[0]
    assert "paris" in text.lower()


def test_real_model_cached_equals_uncached_with_layer0_skipped(smollm):
    exs = [Example(uid=str(i), prompt=p, target="", answer="", image=None) for i, p in
           enumerate(["Name three colours.", "Why is the sky blue? Explain briefly to a child."])]
    skip.apply_skips(smollm, SkipSet(mha=(0, 5, 17)))
    try:
        batch = smollm.collate(exs)
        cached = generate.greedy_generate(smollm, batch, 6, ignore_eos=True).tokens
        uncached = generate.greedy_generate(smollm, batch, 6, ignore_eos=True, use_cache=False).tokens
        assert torch.equal(cached, uncached)
    finally:
        skip.apply_skips(smollm, SkipSet())
