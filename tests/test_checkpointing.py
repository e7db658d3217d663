"""Gradient checkpointing through the EASBlock (issue 21: memory at 7B). The block calls the decoder layer's parts
itself, so transformers' own checkpointing never runs inside it; `set_checkpointing` makes the block recompute its
activations in backward. Checked: the gradients are the ones without it, the block's parts really run again in
backward, inference is untouched, and the spec, the profile and the memory estimate carry the switch."""

from __future__ import annotations

import pytest
import torch

from eas import baselines
from eas.data import Example
from eas.measure.memory import training_memory
from eas.measure.shapes import shape_config
from eas.method.pia import PIAConfig, attach_pia, trainable_parameters
from eas.method.skip import SkipSet, eas_blocks, set_checkpointing
from eas.models import train as trainlib
from eas.models.mini_llava import MiniLlava, answer_loss, tiny_language_model
from eas.study.experiments import ExperimentError, ExperimentSpec, build_model


def examples(n=4):
    return [Example(uid=f"c{i}", prompt=f"What colour is item {i}?", target="red and then blue"[: 8 + i], answer="red",
                    image=None) for i in range(n)]


def model_with(method: str, tokenizer) -> MiniLlava:
    model = MiniLlava(tiny_language_model(seed=0, layers=4, hidden=64), tokenizer).eval()
    model.requires_grad_(False)
    eas_blocks(model)  # wrapped first, as eas.study.experiments.build_model does for every method
    if method == "eas":
        attach_pia(model, SkipSet(mha=(1, 3)), PIAConfig(skip_hidden=8, adapt_hidden=4))
        params = trainable_parameters(model)
    else:
        baselines.attach(model, method, **({"r": 2} if method == "lora" else {"hidden": 4}))
        params = list(trainlib.trainable_parameters(model).values())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-zero up-projections, so every adapter has a gradient path
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def gradients(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    for p in trainlib.trainable_parameters(model).values():
        p.grad = None
    answer_loss(model, batch).backward()
    return {name: p.grad.clone() for name, p in trainlib.trainable_parameters(model).items()}


def saved_tensor_count(model, batch) -> int:
    """How many tensors autograd keeps for backward during one forward (each checkpointed block keeps only its
    inputs)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(1) or t, lambda t: t):
        answer_loss(model, batch)
    return len(saved)


@pytest.mark.parametrize("method", ["eas", "lora", "adapter"])
def test_checkpointed_gradients_equal_plain_ones_and_the_blocks_run_again(method, tokenizer):
    model = model_with(method, tokenizer)
    batch = model.collate(examples(), with_target=True)
    model.train()
    plain_saved = saved_tensor_count(model, batch)
    plain = gradients(model, batch)
    assert set_checkpointing(model, True) == 4
    checkpointed_saved = saved_tensor_count(model, batch)
    assert checkpointed_saved < plain_saved / 3, (checkpointed_saved, plain_saved)
    calls = []
    attention = eas_blocks(model)[0].block.self_attn
    handle = attention.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    loss = answer_loss(model, batch)
    forward_calls = len(calls)
    model.zero_grad(set_to_none=True)
    loss.backward()
    handle.remove()
    assert forward_calls == 1 and len(calls) == 2  # the forward, then its recomputation during backward
    checkpointed = {name: p.grad.clone() for name, p in trainlib.trainable_parameters(model).items()}
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_leaves_inference_and_cached_decoding_alone(tokenizer):
    model = model_with("eas", tokenizer)
    batch = model.collate(examples(2))
    before, _ = model(batch.input_ids, batch.attention_mask, prompt_mask=batch.prompt_mask)
    set_checkpointing(model, True)
    model.train()  # even in training mode: no grad, no checkpoint
    with torch.no_grad():
        after, _ = model(batch.input_ids, batch.attention_mask, prompt_mask=batch.prompt_mask)
    torch.testing.assert_close(after, before)
    assert all(blk.checkpointing for blk in eas_blocks(model))
    set_checkpointing(model, False)
    assert not any(blk.checkpointing for blk in eas_blocks(model))


def test_the_spec_and_the_estimate_carry_the_switch(tiny_mini_llava):
    spec = ExperimentSpec(task="vqa", method="lora", model="tiny", steps=2)
    on = spec.replace(gradient_checkpointing=True)
    assert on.key() == spec.key()  # the same run: gradients do not change
    model = build_model(on, lambda: tiny_mini_llava, progress=False)
    assert all(blk.checkpointing for blk in eas_blocks(model))
    with pytest.raises(ExperimentError, match="gradient_checkpointing must be true or false"):
        spec.replace(gradient_checkpointing="yes")
    cfg = shape_config("llava-1.5-7b")
    kw = dict(trainable=4_000_000, micro_batch=4, seq_len=992, answer_tokens=256)
    plain, checkpointed = training_memory(cfg, **kw), training_memory(cfg, checkpointing=True, **kw)
    # 34 bytes per unit per layer kept in every layer, against 2 bytes (the input) plus one layer recomputed
    ratio = checkpointed.activations / plain.activations
    assert ratio == pytest.approx((2 * cfg.num_hidden_layers + 34) / (34 * cfg.num_hidden_layers))
    assert checkpointed.weights == plain.weights and checkpointed.total < plain.total


def test_the_profile_passes_the_switch_to_every_spec():
    from eas.study.profiles import FineTuneParams

    params = FineTuneParams(model="tiny", gradient_checkpointing=True)
    assert params.spec(method="lora", k=0, kind=None, selector="none").gradient_checkpointing


def test_length_grouping_is_a_profile_switch_and_its_own_run():
    from eas.study.profiles import FineTuneParams, ParameterError

    plain = FineTuneParams(model="tiny").spec(method="lora", k=0, kind=None, selector="none")
    grouped = FineTuneParams(model="tiny", group_by_length=True).spec(method="lora", k=0, kind=None, selector="none")
    assert grouped.group_by_length and not plain.group_by_length
    assert grouped.key() != plain.key()  # another batch order trains other weights: another run
    with pytest.raises(ParameterError, match="group_by_length must be true or false"):
        FineTuneParams(model="tiny", group_by_length="yes")
