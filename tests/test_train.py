"""eas.models.train on the tiny random mini-LLaVA: learning, determinism, exact resume, divergence, frozen base."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from eas.data import Example
from eas.method import skip
from eas.method.skip import SkipSet
from eas.models.mini_llava import MiniLlava, answer_loss, tiny_language_model
from eas.models.train import (
    TrainConfig,
    TrainingDiverged,
    batch_indices,
    train,
    trainable_parameter_count,
    updated_params_percent,
)

COLOURS = ["red", "blue", "green", "yellow"]


def examples(n=24):
    return [Example(uid=f"x{i}", prompt=f"What colour is item {i}?", target=COLOURS[i % 4], answer=COLOURS[i % 4],
                    image=None) for i in range(n)]


def with_adapters(model: MiniLlava, seed: int = 0) -> MiniLlava:
    """Freeze the base, put a small bottleneck delta adapter in front of every FFN (up-projection zero)."""
    model.requires_grad_(False)
    torch.manual_seed(seed)
    d = model.config.hidden_size
    for blk in skip.eas_blocks(model):
        adapter = nn.Sequential(nn.Linear(d, 4), nn.Linear(4, d))
        nn.init.zeros_(adapter[1].weight)
        blk.ffn_adapter = adapter
    return model


def fresh(tokenizer) -> MiniLlava:
    torch.manual_seed(0)
    return with_adapters(MiniLlava(tiny_language_model(seed=0, layers=4), tokenizer, visual_grid=2).eval())


def trainable_state(model):
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def cfg(**kw):
    base = dict(lr=1e-2, steps=8, batch_size=4, grad_accum=1, warmup_steps=1, checkpoint_every=0, log_every=2)
    return TrainConfig(**{**base, **kw})


def test_loss_goes_down_on_a_tiny_overfit_set(tiny_mini_llava, tmp_path):
    # A random LM's logits are tiny (embeddings ~0.02): the loss starts at ln(vocab) = 10.80 and the
    # adapters alone move it slowly, so the final norm's scale trains too.
    model = with_adapters(tiny_mini_llava)
    model.language_model.model.norm.weight.requires_grad_(True)
    result = train(model, examples(8), cfg(steps=40, lr=0.1, warmup_steps=3), run_dir=tmp_path, progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first - 0.3 and last < math.log(49152) - 0.3, (first, last)
    assert len(result.history) == 40 and result.steps == 40
    assert result.lrs[0] == 0.0 and max(result.lrs) == pytest.approx(0.1)  # linear warm-up, then cosine
    assert result.lrs[-1] < 0.01
    assert result.trainable_params == trainable_parameter_count(model) == 4 * (64 * 4 + 4 + 4 * 64 + 64) + 64


def test_base_weights_unchanged_and_updated_percent(tiny_mini_llava):
    model = with_adapters(tiny_mini_llava)
    frozen = {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}
    before = trainable_state(model)
    train(model, examples(8), cfg(steps=3), run_dir=None, progress=False)
    for k, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[k]), k
    assert any(not torch.equal(p, before[k]) for k, p in trainable_state(model).items())
    base = sum(frozen[k].numel() for k in frozen)
    assert updated_params_percent(model, base) == pytest.approx(100 * trainable_parameter_count(model) / base)


def test_same_seed_same_numbers(tokenizer):
    runs = []
    for _ in range(2):
        model = fresh(tokenizer)
        sampler = lambda step, rng: SkipSet(mha=[int(rng.integers(4))])  # noqa: E731
        result = train(model, examples(), cfg(steps=5, grad_accum=2), run_dir=None, skip_sampler=sampler,
                       progress=False)
        runs.append((result.history, trainable_state(model)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    other = train(fresh(tokenizer), examples(), cfg(steps=5, grad_accum=2, seed=1), run_dir=None, progress=False)
    assert other.losses != [h["loss"] for h in runs[0][0]]


def test_resume_equals_uninterrupted(tokenizer, tmp_path):
    config = cfg(steps=10, grad_accum=2, checkpoint_every=3)
    sampler = lambda step, rng: SkipSet(mha=[int(rng.integers(4))])  # noqa: E731

    model = fresh(tokenizer)
    whole = train(model, examples(), config, run_dir=tmp_path / "whole", skip_sampler=sampler, progress=False)
    expected = trainable_state(model)

    class Crash(RuntimeError):
        pass

    def crash_at_7(step, model, loss):
        if step == 7:
            raise Crash()

    model = fresh(tokenizer)
    with pytest.raises(Crash):
        train(model, examples(), config, run_dir=tmp_path / "cut", skip_sampler=sampler, on_step=crash_at_7,
              progress=False)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["step"] == 6
    model = fresh(tokenizer)  # a new process would start from the untrained model
    resumed = train(model, examples(), config, run_dir=tmp_path / "cut", skip_sampler=sampler, progress=False)
    assert resumed.resumed_from == 6
    assert resumed.history == whole.history
    assert all(torch.equal(p, expected[k]) for k, p in trainable_state(model).items())

    # A finished run is not repeated: its result and final parameters come back as stored.
    model = fresh(tokenizer)
    again = train(model, examples(), config, run_dir=tmp_path / "cut", on_step=crash_at_7, progress=False)
    assert again.from_cache and again.history == whole.history
    assert all(torch.equal(p, expected[k]) for k, p in trainable_state(model).items())
    with pytest.raises(ValueError, match="different settings"):
        train(fresh(tokenizer), examples(), cfg(steps=11, checkpoint_every=3), run_dir=tmp_path / "cut",
              progress=False)


def test_nan_loss_stops_cleanly(tiny_mini_llava, tmp_path):
    from safetensors.torch import load_file

    model = with_adapters(tiny_mini_llava)
    calls = []

    def poisoned(model, batch):
        calls.append(1)
        loss = answer_loss(model, batch)
        return loss * float("nan") if len(calls) == 4 else loss

    after = {}
    remember = lambda step, model, loss: after.update(step=step, state=trainable_state(model))  # noqa: E731
    with pytest.raises(TrainingDiverged, match="step 3.*nan"):
        train(model, examples(8), cfg(steps=6, checkpoint_every=2), run_dir=tmp_path, loss_fn=poisoned,
              on_step=remember, progress=False)
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    assert pointer["step"] == 2 and not (tmp_path / "done.json").exists()
    saved = load_file(str(tmp_path / pointer["dir"] / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    # The diverged step was not applied: the weights are still those after step 2.
    assert after["step"] == 2
    assert all(torch.equal(p, after["state"][k]) for k, p in trainable_state(model).items())


def test_nothing_trainable_is_an_error(tiny_mini_llava):
    tiny_mini_llava.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        train(tiny_mini_llava, examples(4), cfg(), run_dir=None, progress=False)


def test_config_validation_and_data_order():
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(steps=3, epochs=1)
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig()
    assert TrainConfig(epochs=2, batch_size=4, grad_accum=2).total_steps(24) == 6
    # Every example once per epoch; epochs are shuffled differently; processes take disjoint slices.
    epoch0 = [i for micro in range(6) for i in batch_indices(24, 4, micro, seed=0)]
    epoch1 = [i for micro in range(6, 12) for i in batch_indices(24, 4, micro, seed=0)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(24)) and epoch0 != epoch1
    ranks = [set(batch_indices(24, 4, 0, seed=0, rank=r, world=2)) for r in range(2)]
    assert not ranks[0] & ranks[1]


def test_length_grouped_order_pads_less_and_keeps_every_example():
    rng = np.random.default_rng(0)
    n, b = 400, 8
    lengths = tuple(int(x) for x in rng.integers(20, 250, n))

    def batches(lens, world=1):
        out = []
        for micro in range(n // b):
            out.append([i for r in range(world) for i in batch_indices(n, b // world, micro, 0, r, world, lens)])
        return out

    plain, grouped = batches(None), batches(lengths)
    assert sorted(i for bt in grouped for i in bt) == list(range(n))  # an epoch still sees each example once
    def padded(bs):
        return sum(len(bt) * max(lengths[i] for i in bt) for bt in bs)
    assert padded(grouped) < 0.8 * padded(plain)
    # the steps do not run from long to short within a chunk: the batches of a chunk are shuffled
    first_chunk = [max(lengths[i] for i in bt) for bt in grouped[:16]]
    assert first_chunk != sorted(first_chunk, reverse=True)
    # two processes split the same global batches
    assert [sorted(bt) for bt in batches(lengths, world=2)] == [sorted(bt) for bt in grouped]
    with pytest.raises(ValueError, match="lengths has 3 entries for 400"):
        batch_indices(n, b, 0, 0, lengths=(1, 2, 3))
