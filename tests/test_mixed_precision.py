"""A bf16 base with fp32 adapters (issue 21: the GPU path): adapters are created in fp32 beside a 16-bit base, run
in fp32 and hand bf16 back, train with finite losses, and merge after prefill to within bf16's own rounding."""

from __future__ import annotations

import torch
from test_reparam import prompt_batch  # the same left-padded prompts as the fp32 merge tests

from eas import baselines
from eas.data import Example
from eas.method import reparam
from eas.method.pia import PIAConfig, attach_pia, trainable_parameters
from eas.method.reparam import forced_decode_logits
from eas.method.skip import SkipSet
from eas.models import train as trainlib
from eas.models.mini_llava import MiniLlava, tiny_language_model

CFG = PIAConfig(skip_hidden=8, adapt_hidden=4)
SKIPS = SkipSet(mha=(0, 2))


def model_in(dtype, tokenizer, seed=1) -> MiniLlava:
    model = MiniLlava(tiny_language_model(seed=0, layers=4, hidden=64).to(dtype), tokenizer).eval()
    attach_pia(model, SKIPS, CFG)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-looking adapters, identical in both models
        for p in trainable_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_adapters_are_fp32_beside_a_bf16_base(tokenizer):
    model = model_in(torch.bfloat16, tokenizer)
    assert {p.dtype for p in trainable_parameters(model)} == {torch.float32}
    assert model.lm_head.weight.dtype == torch.bfloat16
    hidden, _ = model(prompt_batch().input_ids, prompt_batch().attention_mask, prompt_mask=prompt_batch().prompt_mask)
    assert hidden.dtype == torch.bfloat16 and torch.isfinite(hidden.float()).all()
    for method, kw in (("lora", {"r": 2}), ("adapter", {"hidden": 4}), ("das", {"layers": (1,), "layer_hidden": 4})):
        plain = MiniLlava(tiny_language_model(seed=0, layers=4, hidden=64).to(torch.bfloat16), tokenizer)
        baselines.attach(plain, method, **kw)
        dtypes = {p.dtype for p in trainlib.trainable_parameters(plain).values()}
        assert dtypes == {torch.float32}, (method, dtypes)  # peft keeps LoRA in fp32 too
        hidden, _ = plain(prompt_batch().input_ids, prompt_batch().attention_mask)
        assert torch.isfinite(hidden.float()).all(), method


def test_bf16_merge_is_within_bf16_rounding(tokenizer):
    """Merged vs unmerged in bf16, judged against what bf16 itself costs: the same adapters in an fp32 model."""
    reference, bf16 = model_in(torch.float32, tokenizer), model_in(torch.bfloat16, tokenizer)
    batch = prompt_batch()
    answers = torch.randint(100, 5000, (3, 5), generator=torch.Generator().manual_seed(3))
    exact = forced_decode_logits(reference, batch, answers).float()
    unmerged = forced_decode_logits(bf16, batch, answers).float()
    rounding = (unmerged - exact).abs().max()
    assert 0 < rounding < 0.1 * exact.abs().max()
    for strategy in ("low_rank", "per_example"):
        merged = forced_decode_logits(bf16, batch, answers, after_prefill=lambda m, b, s=strategy:
                                      reparam.merge_after_prefill(m, b, strategy=s)).float()
        assert (merged - unmerged).abs().max() <= 3 * rounding, strategy
        assert not reparam.is_merged(bf16)


def test_bf16_base_trains_its_fp32_adapters(tokenizer, tmp_path):
    model = model_in(torch.bfloat16, tokenizer)
    before = {k: p.detach().clone() for k, p in trainlib.trainable_parameters(model).items()}
    examples = [Example(f"e{i}", f"Say the word number {i}.", f"word {i}", f"word {i}", None) for i in range(8)]
    result = trainlib.train(model, examples, trainlib.TrainConfig(lr=1e-2, steps=4, batch_size=4),
                            run_dir=tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses))) and result.losses[-1] < result.losses[0]
    after = trainlib.trainable_parameters(model)
    assert all(p.dtype == torch.float32 for p in after.values())
    assert any((after[k] - before[k]).abs().max() > 0 for k in before)
