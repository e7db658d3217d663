"""The comparison methods (LoRA, Adapter, MAM, DAS, full fine-tuning, EAS through the registry).

Tiny random models only. Added weights are randomised where a test must see them act: untrained
adapters are the identity by design, which would make most comparisons vacuous."""

from __future__ import annotations

import pytest
import torch

from eas import baselines
from eas.baselines import (
    METHODS,
    AdapterConfig,
    BaselineError,
    Bottleneck,
    DASConfig,
    EASConfig,
    LoRAConfig,
    MAMConfig,
    attach,
    attach_adapter,
    attach_das,
    attach_full_finetune,
    attach_lora,
    attach_mam,
    count_parameters,
    detach,
    merge_lora,
    randomise,
    unmerge_lora,
)
from eas.method.pia import PIAConfig
from eas.method.skip import SkipSet, apply_skips
from eas.models import arch
from eas.models.generate import greedy_generate
from eas.models.mini_llava import Batch, MiniLlava, answer_loss, tiny_language_model

D, LAYERS = 64, 4
SMALL = {
    "lora": LoRAConfig(r=4),
    "adapter": AdapterConfig(hidden=8),
    "mam": MAMConfig(hidden=8, prefix_len=3),
    "das": DASConfig(layers=(1,), layer_hidden=8, kept_hidden=4),
    "full": baselines.FullConfig(),
    "eas": EASConfig(mha=(0, 2), pia=PIAConfig(skip_hidden=8, adapt_hidden=4)),
}


def tiny_llava(tokenizer, seed=0) -> MiniLlava:
    torch.manual_seed(seed)
    return MiniLlava(tiny_language_model(seed=seed, layers=LAYERS, hidden=D), tokenizer).eval()


def make_batch(seed=0, lens=(5, 9, 7), answer_len=3, with_answer=False) -> Batch:
    """Left-padded random-token batch (prompt only, or prompt + answer with labels)."""
    g = torch.Generator().manual_seed(seed)
    rows, plens = [], []
    for n in lens:
        p = torch.randint(100, 5000, (n,), generator=g)
        a = torch.randint(100, 5000, (answer_len,), generator=g)
        rows.append(torch.cat([p, a]) if with_answer else p)
        plens.append(n)
    W = max(map(len, rows))
    ids = torch.full((len(rows), W), 2)
    attn = torch.zeros(len(rows), W, dtype=torch.long)
    prompt = torch.zeros(len(rows), W, dtype=torch.bool)
    labels = torch.full((len(rows), W), -100)
    for b, (row, n) in enumerate(zip(rows, plens)):
        s = W - len(row)
        ids[b, s:], attn[b, s:], prompt[b, s:s + n] = row, 1, True
        labels[b, s + n:] = ids[b, s + n:]
    return Batch(ids, attn, prompt, None, labels if with_answer else None)


@torch.no_grad()
def logits(model, batch: Batch) -> torch.Tensor:
    hidden, _ = model(batch.input_ids, batch.attention_mask, prompt_mask=batch.prompt_mask)
    return model.lm_head(hidden)[batch.attention_mask.bool()]


def assert_cached_equals_uncached(model, batch, n=5):
    cached = greedy_generate(model, batch, n, ignore_eos=True).tokens
    uncached = greedy_generate(model, batch, n, ignore_eos=True, use_cache=False).tokens
    assert torch.equal(cached, uncached)


# ----------------------------------------------------------------------------- registry and errors

def test_registry_names_and_defaults():
    assert set(METHODS) == {"lora", "adapter", "mam", "das", "full", "eas"}
    assert METHODS["lora"].default == LoRAConfig() and METHODS["lora"].mergeable
    assert METHODS["das"].skips and not METHODS["adapter"].mergeable
    assert baselines.make_config("adapter", hidden=16) == AdapterConfig(hidden=16)


@pytest.mark.parametrize("make, match", [
    (lambda: baselines.get_method("prompt"), "unknown method 'prompt'"),
    (lambda: LoRAConfig(r=0), "r \\(the LoRA rank\\).*got 0"),
    (lambda: LoRAConfig(r=-2), "got -2"),
    (lambda: LoRAConfig(targets=("lm_head",)), "LoRA targets"),
    (lambda: AdapterConfig(hidden=0), "hidden.*got 0"),
    (lambda: MAMConfig(hidden=-1), "hidden.*got -1"),
    (lambda: MAMConfig(prefix_len=-1), "prefix_len must be an integer >= 0.*got -1"),
    (lambda: DASConfig(layer_hidden=0), "layer_hidden"),
    (lambda: DASConfig(kept_hidden=0), "kept_hidden"),
    (lambda: baselines.make_config("lora", rank=4), "unknown LoRAConfig option"),
    (lambda: baselines.check_das_k(4, 4), "k=4 .*0 <= k <= 3"),
    (lambda: baselines.check_das_k(-1, 4), "k=-1"),
    (lambda: baselines.das_bandit_config(0, 4), "k >= 1"),
])
def test_bad_input_is_named(make, match):
    with pytest.raises(BaselineError, match=match):
        make()


def test_das_layers_checked(tokenizer):
    model = tiny_llava(tokenizer)
    with pytest.raises(BaselineError, match="k=4"):
        attach_das(model, DASConfig(layers=(0, 1, 2, 3)))
    with pytest.raises(ValueError, match="out of range"):
        attach_das(model, DASConfig(layers=(7,)))
    assert baselines.das_bandit_config(2, 4).kind == "layer"


# ----------------------------------------------------------------------------- counting

def test_counts_and_updated_percent(tokenizer):
    model = tiny_llava(tokenizer)
    base = sum(p.numel() for p in model.parameters())
    kv = 2 * 16  # 2 KV heads x head_dim 16
    attach_lora(model, LoRAConfig(r=4))
    # q, o: 64 -> 64; k, v: 64 -> 32; gate, up: 64 -> 128; down: 128 -> 64.  LoRA adds r * (in + out).
    per_layer = 4 * ((64 + 64) * 2 + (64 + kv) * 2 + (64 + 128) * 3)
    c = count_parameters(model)
    assert c["trainable"] == c["added"] == LAYERS * per_layer and c["base"] == base
    assert c["updated_percent"] == pytest.approx(100 * LAYERS * per_layer / base)

    attach_adapter(model, AdapterConfig(hidden=8))  # replaces LoRA
    assert count_parameters(model)["trainable"] == LAYERS * ((64 * 8 + 8) + (8 * 64 + 64))
    assert count_parameters(model)["base"] == base

    attach_mam(model, MAMConfig(hidden=8, prefix_len=3))
    assert count_parameters(model)["trainable"] == LAYERS * ((64 * 8 + 8) + (8 * 64 + 64) + 2 * 2 * 3 * 16)

    attach_full_finetune(model)
    c = count_parameters(model)
    assert c["trainable"] == base and c["updated_percent"] == pytest.approx(100.0)
    detach(model)
    assert count_parameters(model)["trainable"] == 0


# ----------------------------------------------------------------------------- LoRA

def test_lora_merged_equals_unmerged(tokenizer):
    model = tiny_llava(tokenizer)
    attach_lora(model, LoRAConfig(r=4))
    randomise(model, scale=0.2, seed=3)
    batch = make_batch()
    base_free = logits(model, batch)
    merge_lora(model)
    merged = logits(model, batch)
    assert (merged - base_free).abs().max() < 1e-4
    unmerge_lora(model)
    assert (logits(model, batch) - base_free).abs().max() < 1e-4
    detach(model)  # unloads LoRA: the plain base again (up to the rounding of merge + unmerge)
    fresh = tiny_llava(tokenizer)
    assert (logits(model, batch) - logits(fresh, batch)).abs().max() < 1e-5


def test_lora_merge_and_unload_gives_plain_linears(tokenizer):
    model = tiny_llava(tokenizer)
    attach_lora(model, LoRAConfig(r=4, targets=("q_proj", "v_proj")))
    randomise(model, scale=0.2, seed=3)
    batch = make_batch()
    want = logits(model, batch)
    merge_lora(model, unload=True)
    assert baselines.lora_layers(model) == []
    assert type(arch.layer_parts(arch.decoder_layers(model)[0]).attn.q_proj) is torch.nn.Linear
    assert (logits(model, batch) - want).abs().max() < 1e-4


def test_lora_with_skips_cached_equals_uncached(tokenizer):
    model = tiny_llava(tokenizer)
    attach_lora(model, LoRAConfig(r=4))
    randomise(model, scale=0.2, seed=3)
    apply_skips(model, SkipSet(mha=(0, 2)))  # EASBlock wraps the layers LoRA was injected into
    assert_cached_equals_uncached(model, make_batch())


# ----------------------------------------------------------------------------- Adapter, MAM, DAS

def test_untrained_adapter_is_identity(tokenizer):
    model, base = tiny_llava(tokenizer), tiny_llava(tokenizer)
    batch = make_batch()
    attach_adapter(model, AdapterConfig(hidden=8))
    assert torch.equal(logits(model, batch), logits(base, batch))
    randomise(model, seed=1)
    assert not torch.allclose(logits(model, batch), logits(base, batch))
    assert_cached_equals_uncached(model, batch)


def test_mam_zero_prefix_and_zero_adapter_is_base(tokenizer):
    model, base = tiny_llava(tokenizer), tiny_llava(tokenizer)
    batch = make_batch()
    attach_mam(model, MAMConfig(hidden=8, prefix_len=0))
    assert torch.equal(logits(model, batch), logits(base, batch))


def test_mam_cached_equals_uncached_and_prefix_trains(tokenizer):
    model = tiny_llava(tokenizer)
    attach_mam(model, MAMConfig(hidden=8, prefix_len=3))
    randomise(model, scale=0.5, seed=2)
    batch = make_batch()
    assert_cached_equals_uncached(model, batch)
    # The prefix acts (it changes the output) and gradients reach it without a cache in the call.
    base = tiny_llava(tokenizer)
    assert not torch.allclose(logits(model, batch), logits(base, batch))
    loss = answer_loss(model, make_batch(with_answer=True))
    loss.backward()
    blk = arch.decoder_layers(model)[1]
    assert blk.mam_prefix.keys.grad.abs().sum() > 0 and blk.mam_prefix.values.grad.abs().sum() > 0
    assert blk.mam_adapter.up.weight.grad.abs().sum() > 0


def test_mam_prefix_with_skipped_attention(tokenizer):
    model = tiny_llava(tokenizer)
    apply_skips(model, SkipSet(mha=(0,)))
    attach_mam(model, MAMConfig(hidden=8, prefix_len=2))  # MAM attaches to an unskipped model
    randomise(model, scale=0.5, seed=2)
    apply_skips(model, SkipSet(mha=(0,)))  # layer 0's prefix sits unused; its cache entry counts the prefix
    assert_cached_equals_uncached(model, make_batch())


def test_untrained_das_is_plain_layer_skip(tokenizer):
    model, skipped = tiny_llava(tokenizer), tiny_llava(tokenizer)
    batch = make_batch()
    attach_das(model, DASConfig(layers=(1, 2), layer_hidden=8, kept_hidden=4))
    apply_skips(skipped, SkipSet(layer=(1, 2)))
    assert torch.equal(logits(model, batch), logits(skipped, batch))
    blocks = arch.decoder_layers(model)
    assert isinstance(blocks[1].layer_adapter, Bottleneck) and blocks[1].attn_adapter is None
    assert isinstance(blocks[0].attn_adapter, Bottleneck) and blocks[0].layer_adapter is None
    randomise(model, seed=4)
    assert not torch.allclose(logits(model, batch), logits(skipped, batch))
    assert_cached_equals_uncached(model, batch)


def test_das_all_layers_serves_any_skip_set(tokenizer):
    model = tiny_llava(tokenizer)
    attach_das(model, DASConfig(layers=(), layer_hidden=8, kept_hidden=4, all_layers=True))
    randomise(model, seed=4)
    for layers in [(0,), (1, 3)]:
        apply_skips(model, SkipSet(layer=layers))
        assert_cached_equals_uncached(model, make_batch(), n=3)


# ----------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("name", list(SMALL))
def test_save_load_reproduces_outputs(tokenizer, tmp_path, name):
    model = tiny_llava(tokenizer)
    attach(model, name, SMALL[name])
    randomise(model, scale=0.1, seed=5)
    batch = make_batch()
    want = logits(model, batch)
    baselines.save(model, tmp_path / name, extra={"note": "test"})
    fresh = tiny_llava(tokenizer)
    if name == "full":  # full fine-tuning saved the (changed) weights themselves
        torch.manual_seed(123)
        with torch.no_grad():
            for p in fresh.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    baselines.load(fresh, tmp_path / name)
    assert torch.equal(logits(fresh, batch), want)
    assert count_parameters(fresh)["trainable"] == count_parameters(model)["trainable"]
    assert baselines.read_config(tmp_path / name)["method"] == name


def _base_state(model):
    from eas.method.skip import current_skips

    return (baselines.attached(model), current_skips(model), [p.requires_grad for p in model.parameters()],
            {k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("name", ["lora", "das", "eas"])
@pytest.mark.parametrize("damage, file, message", [
    ("truncate", "adapter_model.safetensors", "is not a readable safetensors file"),
    ("json", "adapter_config.json", "is not valid JSON"),
    ("mismatch", "adapter_model.safetensors", "does not match"),
])
def test_a_failed_load_names_the_file_and_leaves_the_base(tokenizer, tmp_path, name, damage, file, message):
    """Issue 20.2: baselines.load reads the whole checkpoint before it attaches anything."""
    import json

    model = tiny_llava(tokenizer)
    attach(model, name, SMALL[name])
    randomise(model, scale=0.1, seed=5)
    ckpt = baselines.save(model, tmp_path / name)
    weights, config = ckpt / "adapter_model.safetensors", ckpt / "adapter_config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "json":
        config.write_text(config.read_text()[:-20])
    else:  # a readable checkpoint whose weights do not fit its own config
        meta = json.loads(config.read_text())
        key = {"lora": "r", "das": "layer_hidden", "eas": "pia"}[name]
        meta["config"][key] = {**meta["config"]["pia"], "skip_hidden": 16} if name == "eas" else 16
        config.write_text(json.dumps(meta))

    fresh = tiny_llava(tokenizer)
    batch = make_batch()
    want, before = logits(fresh, batch), _base_state(fresh)
    with pytest.raises(BaselineError, match=message) as err:
        baselines.load(fresh, ckpt)
    assert str(ckpt / file) in str(err.value)
    after = _base_state(fresh)
    assert after[:3] == before[:3] and after[3].keys() == before[3].keys()
    assert all(torch.equal(after[3][k], before[3][k]) for k in before[3])
    assert torch.equal(logits(fresh, batch), want)


def test_load_checks_shape(tokenizer, tmp_path):
    model = tiny_llava(tokenizer)
    attach_adapter(model, AdapterConfig(hidden=8))
    baselines.save(model, tmp_path)
    other = MiniLlava(tiny_language_model(seed=0, layers=3, hidden=D), tokenizer)
    with pytest.raises(BaselineError, match="num_layers=4"):
        baselines.load(other, tmp_path)
    with pytest.raises(BaselineError, match="no method attached"):
        baselines.save(tiny_llava(tokenizer), tmp_path / "none")
