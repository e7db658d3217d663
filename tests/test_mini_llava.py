"""The embedded model's plumbing on a tiny random LM: layout, padding, caching, saving."""

from pathlib import Path

import pytest
import torch

from eas.data import Example
from eas.method import skip
from eas.method.skip import SkipSet
from eas.models import generate
from eas.models.mini_llava import answer_loss

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = sorted(str(p) for p in FIXTURES.glob("aid/*/*.jpg"))[:3]


def examples(with_images=True):
    prompts = ["What is shown?", "Name the colour of the sky on a clear day, please.", "Is it big?"]
    return [Example(uid=str(i), prompt=p, target=f"answer number {i}", answer=str(i),
                    image=IMAGES[i] if with_images and i != 1 else None) for i, p in enumerate(prompts)]


def test_collate_layout(tiny_mini_llava):
    m = tiny_mini_llava
    batch = m.collate(examples(), with_target=True)
    T = batch.input_ids.shape[1]
    for b, ex in enumerate(examples()):
        n_prompt = len(m.prompt_ids(ex.prompt, ex.image is not None))
        n_target = len(m.target_ids(ex.target))
        assert batch.attention_mask[b].sum() == n_prompt + n_target
        assert batch.attention_mask[b, -1] == 1  # left padding: real tokens end the row
        assert batch.prompt_mask[b].sum() == n_prompt
        assert not (batch.prompt_mask[b] & (batch.labels[b] != -100)).any()  # the answer is not prompt
        assert (batch.labels[b] != -100).sum() == n_target
        n_visual = (batch.input_ids[b] == m.image_token_id).sum().item()
        assert n_visual == (m.num_visual_tokens if ex.image else 0)
    assert batch.image_features.shape == (3, m.num_visual_tokens, 1280)
    assert T == batch.labels.shape[1]


def test_image_features_reach_the_model(tiny_mini_llava):
    m = tiny_mini_llava
    batch = m.collate(examples())
    with torch.no_grad():
        h1, _ = m(batch.input_ids, batch.attention_mask, batch.image_features)
        h2, _ = m(batch.input_ids, batch.attention_mask, batch.image_features.flip(0))
    assert not torch.allclose(h1[0, -1], h2[0, -1])
    assert torch.allclose(h1[1, -1], h2[1, -1], atol=1e-6)  # row 1 has no image: placeholder-free


def test_answer_loss_only_counts_answer_tokens(tiny_mini_llava):
    m = tiny_mini_llava
    batch = m.collate(examples(), with_target=True)
    loss = answer_loss(m, batch)
    changed = m.collate([Example(e.uid, e.prompt, "something else entirely", e.answer, e.image) for e in examples()],
                        with_target=True)
    assert torch.isfinite(loss) and loss.item() > 0
    assert not torch.isclose(loss, answer_loss(m, changed))


@pytest.mark.parametrize("skips", [SkipSet(), SkipSet(mha=(0,)), SkipSet(mha=(0, 3), ffn=(1,)), SkipSet(layer=(0,))])
def test_cached_uncached_and_batch_single_agree(tiny_mini_llava, skips):
    m = tiny_mini_llava
    skip.apply_skips(m, skips)
    exs = examples()
    batch = m.collate(exs)
    cached = generate.greedy_generate(m, batch, 10, ignore_eos=True).tokens
    uncached = generate.greedy_generate(m, batch, 10, ignore_eos=True, use_cache=False).tokens
    assert torch.equal(cached, uncached)
    for b, ex in enumerate(exs):
        single = generate.greedy_generate(m, m.collate([ex]), 10, ignore_eos=True).tokens
        assert torch.equal(single[0], cached[b])


def test_skipped_attentions_shrink_the_kv_cache(tiny_mini_llava):
    m = tiny_mini_llava
    batch = m.collate(examples())
    full = skip.kv_cache_bytes(generate.greedy_generate(m, batch, 3, ignore_eos=True).cache)
    skip.apply_skips(m, SkipSet(mha=(0, 1, 2)))
    one = skip.kv_cache_bytes(generate.greedy_generate(m, batch, 3, ignore_eos=True).cache)
    assert one * 4 == full


def test_generation_stops_at_eos(tiny_mini_llava):
    m = tiny_mini_llava
    head = torch.nn.Linear(m.config.hidden_size, m.config.vocab_size)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[m.eos_token_id] = 1.0  # every position predicts eos
    m.language_model.lm_head = head
    gen = generate.greedy_generate(m, m.collate(examples()), 20)
    assert gen.tokens.shape[1] == 1 and (gen.tokens == m.eos_token_id).all()
    assert generate.decode_texts(m, gen.tokens) == ["", "", ""]


def test_projector_roundtrip(tmp_path, tiny_mini_llava, tokenizer):
    from eas.models.mini_llava import MiniLlava

    m = tiny_mini_llava
    path = m.save_projector(tmp_path / "p.safetensors")
    other = MiniLlava(m.language_model, tokenizer, visual_grid=2)
    other.load_projector(path)
    for a, b in zip(m.projector.parameters(), other.projector.parameters()):
        assert torch.equal(a, b)
    wrong = MiniLlava(m.language_model, tokenizer, visual_grid=3)
    with pytest.raises(ValueError, match="visual_grid=2"):
        wrong.load_projector(path)
