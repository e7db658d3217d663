"""PIA: the adapter modules, the prompt mean, training vs. cached vs. uncached inference, checkpoints.

Tiny random models only. Adapters are randomised where a test must see them act (an untrained PIA
is exactly a skip, which would make most comparisons vacuous)."""

from __future__ import annotations

import json

import pytest
import torch

from eas.method.pia import (
    AdaptPIA,
    PIAConfig,
    PIAConfigError,
    PIAError,
    SkipPIA,
    adapter_state_dict,
    attach_pia,
    attach_skip_pia,
    count_parameters,
    load_adapters,
    prompt_context,
    randomise_adapters,
    save_adapters,
    trainable_parameters,
)
from eas.method.skip import SkipSet, apply_skips
from eas.models import arch
from eas.models.generate import greedy_generate
from eas.models.mini_llava import Batch, MiniLlava, answer_loss, load_tokenizer, tiny_language_model

CFG = PIAConfig(skip_hidden=8, adapt_hidden=4)
PROMPT_LENS = (5, 9, 7)  # different lengths -> left padding
ANSWER_LEN = 4


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def tiny_llava(tokenizer, seed=0) -> MiniLlava:
    return MiniLlava(tiny_language_model(seed=seed, layers=4, hidden=64), tokenizer).eval()


def randomise(model, scale=0.3, seed=1):
    randomise_adapters(model, scale, seed)


def make_batches(seed=0, lens=PROMPT_LENS, answer_len=ANSWER_LEN):
    """(prompt-only batch, teacher-forcing batch with the answers, answers (B, A)), both left padded."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(100, 5000, (n,), generator=g) for n in lens]
    answers = torch.randint(100, 5000, (len(lens), answer_len), generator=g)

    def pad(with_answer: bool) -> Batch:
        rows = [torch.cat([p, a]) if with_answer else p for p, a in zip(prompts, answers)]
        W = max(map(len, rows))
        ids = torch.full((len(rows), W), 2)
        attn = torch.zeros(len(rows), W, dtype=torch.long)
        prompt = torch.zeros(len(rows), W, dtype=torch.bool)
        labels = torch.full((len(rows), W), -100)
        for b, (row, p) in enumerate(zip(rows, prompts)):
            s = W - len(row)
            ids[b, s:], attn[b, s:], prompt[b, s:s + len(p)] = row, 1, True
            labels[b, s + len(p):] = ids[b, s + len(p):]
        return Batch(ids, attn, prompt, None, labels if with_answer else None)

    return pad(False), pad(True), answers


@torch.no_grad()
def teacher_forced_logits(model, tf: Batch, answer_len: int) -> torch.Tensor:
    """Logits predicting each answer token (B, A, V): from the last prompt token to the second-last answer."""
    hidden, _ = model(tf.input_ids, tf.attention_mask, prompt_mask=tf.prompt_mask)
    W = tf.input_ids.shape[1]
    return model.lm_head(hidden[:, W - answer_len - 1 : W - 1])


@torch.no_grad()
def cached_forced_logits(model, prompt: Batch, answers: torch.Tensor, after_prefill=None) -> torch.Tensor:
    """The same logits from prefill + one-token cached decode steps fed the answer tokens."""
    with prompt_context(prompt.prompt_mask, prompt.attention_mask):
        hidden, cache = model(prompt.input_ids, prompt.attention_mask, use_cache=True)
    undo = after_prefill(model, prompt) if after_prefill else None
    out, mask = [model.lm_head(hidden[:, -1])], prompt.attention_mask
    for j in range(answers.shape[1] - 1):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        hidden, cache = model(answers[:, j : j + 1], mask, cache=cache, use_cache=True)
        out.append(model.lm_head(hidden[:, -1]))
    if undo:
        undo()
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- construction

def test_attach_places_skip_and_adaptation_pias_and_freezes_base(tokenizer):
    model = tiny_llava(tokenizer)
    adapters = attach_pia(model, SkipSet(mha=(0, 2)), CFG)
    layers = arch.decoder_layers(model)
    assert [type(a) for a in adapters] == [SkipPIA, AdaptPIA, SkipPIA, AdaptPIA]
    assert isinstance(layers[0].ffn_adapter, SkipPIA) and layers[0].attn_adapter is None
    assert isinstance(layers[1].attn_adapter, AdaptPIA) and layers[1].ffn_adapter is None
    trainable = {id(p) for p in trainable_parameters(model)}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}
    # skip PIA (d=64, r=8): down1, down2 (64*8+8 each), up1, up2 (8*64+64 each), router (64*2+2);
    # adaptation PIA (r=4): down1 (64*4+4), up1 (4*64+64)
    skip_n = 2 * (64 * 8 + 8) + 2 * (8 * 64 + 64) + (64 * 2 + 2)
    adapt_n = (64 * 4 + 4) + (4 * 64 + 64)
    assert count_parameters(model)["adapter"] == 2 * skip_n + 2 * adapt_n


def test_table6_switches_change_the_module(tokenizer):
    model = tiny_llava(tokenizer)
    base = attach_pia(model, SkipSet(mha=(1,)), PIAConfig.ablation("base", skip_hidden=8, adapt_hidden=None))[0]
    assert base.down2 is None and base.up2 is None and base.router is None
    full = attach_pia(model, SkipSet(mha=(0,)), PIAConfig.ablation("reparam", skip_hidden=8))[0]
    assert full.down2 is not None and full.up2 is not None and full.router is not None
    assert PIAConfig.ablation("info_exchange").frozen_bias is False
    assert PIAConfig.preset("llava").skip_hidden == 256 and PIAConfig.preset("llava").adapt_hidden == 128
    assert PIAConfig.preset("lavin").skip_hidden == 32 and PIAConfig.preset("lavin").adapt_hidden == 8


@pytest.mark.parametrize("bad, match", [
    (dict(skip_hidden=0), "skip_hidden"), (dict(skip_hidden=-3), "skip_hidden"), (dict(adapt_hidden=0), "adapt_hidden"),
    (dict(skip_hidden=2.5), "skip_hidden"), (dict(tau=0.0), "tau"), (dict(tau=-1.0), "tau"),
    (dict(tau=float("nan")), "tau"), (dict(merge_strategy="dense"), "merge_strategy"),
    (dict(frozen_bias=False, reparam=True), "frozen_bias"), (dict(hiden=8), "unknown PIA option"),
])
def test_bad_options_raise_clear_errors(bad, match):
    with pytest.raises(PIAConfigError, match=match):
        PIAConfig.from_dict(bad)


def test_unknown_preset_and_row():
    with pytest.raises(PIAConfigError, match="preset"):
        PIAConfig.preset("gpt")
    with pytest.raises(PIAConfigError, match="Table 6"):
        PIAConfig.ablation("everything")


def test_skip_pia_needs_a_skipped_mha(tokenizer):
    model = tiny_llava(tokenizer)
    apply_skips(model, SkipSet(mha=(1,)))
    with pytest.raises(PIAError, match="not skipped"):
        attach_skip_pia(model, 2, CFG)
    apply_skips(model, SkipSet(layer=(1,)))
    with pytest.raises(PIAError, match="FFN is skipped"):
        attach_skip_pia(model, 1, CFG)


def test_missing_prompt_context_is_a_clear_error(tokenizer):
    model = tiny_llava(tokenizer)
    attach_pia(model, SkipSet(mha=(1,)), CFG)
    prompt, _, _ = make_batches()
    with pytest.raises(PIAError, match="prompt_context"):
        model(prompt.input_ids, prompt.attention_mask)


# ----------------------------------------------------------------------------- the function

@pytest.mark.parametrize("config", [CFG, PIAConfig.ablation("base", skip_hidden=8, adapt_hidden=4),
                                    PIAConfig.ablation("info_exchange", skip_hidden=8, adapt_hidden=4)])
def test_untrained_pia_is_exactly_the_plain_skip(tokenizer, config):
    skips = SkipSet(mha=(0, 2))
    plain = tiny_llava(tokenizer)
    apply_skips(plain, skips)
    model = tiny_llava(tokenizer)
    attach_pia(model, skips, config)
    _, tf, _ = make_batches()
    a = teacher_forced_logits(plain, tf, ANSWER_LEN)
    b = teacher_forced_logits(model, tf, ANSWER_LEN)
    assert torch.equal(a, b)
    randomise(model)  # and the comparison can fail: trained adapters change the output
    assert (teacher_forced_logits(model, tf, ANSWER_LEN) - a).abs().max() > 1e-3


def test_skip_pia_matches_the_equations():
    torch.manual_seed(0)
    pia = SkipPIA(16, PIAConfig(skip_hidden=4, tau=2.0))
    with torch.no_grad():
        for p in pia.parameters():
            p.normal_()
    n = torch.randn(2, 6, 16)
    prompt = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    attn = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with prompt_context(prompt, attn):
        got = pia(n)
    for b in range(2):
        m = n[b][prompt[b]].mean(0)
        h = n[b] @ pia.down1.weight.T + pia.down1.bias + m @ pia.down2.weight.T + pia.down2.bias
        alpha = torch.softmax((m @ pia.router.weight.T + pia.router.bias) / 2.0, -1)
        want = alpha[0] * (h @ pia.up1.weight.T + pia.up1.bias) + alpha[1] * (h @ pia.up2.weight.T + pia.up2.bias)
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)


def test_prompt_mean_ignores_answer_and_padding(tokenizer):
    """Prompt-position outputs must not depend on the answer (the mean covers the prompt only; the
    reference code averaged answer tokens too) nor on what the padding tokens are."""
    model = tiny_llava(tokenizer)
    attach_pia(model, SkipSet(mha=(0, 2)), CFG)
    randomise(model)
    _, tf, _ = make_batches()
    other = Batch(tf.input_ids.clone(), tf.attention_mask, tf.prompt_mask)
    answer = tf.attention_mask.bool() & ~tf.prompt_mask
    other.input_ids[answer] = 777
    other.input_ids[~tf.attention_mask.bool()] = 999
    with torch.no_grad():
        a, _ = model(tf.input_ids, tf.attention_mask, prompt_mask=tf.prompt_mask)
        b, _ = model(other.input_ids, other.attention_mask, prompt_mask=other.prompt_mask)
        assert torch.allclose(a[tf.prompt_mask], b[tf.prompt_mask], atol=1e-6)
        # Averaging over every real token instead changes them: the check has teeth.
        c, _ = model(tf.input_ids, tf.attention_mask, prompt_mask=tf.attention_mask.bool())
        d, _ = model(other.input_ids, other.attention_mask, prompt_mask=other.attention_mask.bool())
        assert (c[tf.prompt_mask] - d[tf.prompt_mask]).abs().max() > 1e-4


@pytest.mark.parametrize("config", [CFG, PIAConfig.ablation("info_exchange", skip_hidden=8, adapt_hidden=4),
                                    PIAConfig.ablation("base", skip_hidden=8, adapt_hidden=4)],
                         ids=["frozen_bias", "running_mean", "base"])
@pytest.mark.parametrize("skips", [SkipSet(mha=(0, 2)), SkipSet(mha=(1, 3))], ids=["layer0", "no-layer0"])
def test_teacher_forcing_equals_cached_decoding(tokenizer, config, skips):
    model = tiny_llava(tokenizer)
    attach_pia(model, skips, config)
    randomise(model)
    prompt, tf, answers = make_batches()
    want = teacher_forced_logits(model, tf, ANSWER_LEN)
    got = cached_forced_logits(model, prompt, answers)
    assert want.abs().max() > 0.1
    assert (want - got).abs().max() < 1e-4


def test_cached_and_uncached_greedy_agree(tokenizer):
    model = tiny_llava(tokenizer)
    attach_pia(model, SkipSet(mha=(0, 2)), CFG)
    randomise(model)
    prompt, _, _ = make_batches()
    cached = greedy_generate(model, prompt, 6, ignore_eos=True).tokens
    uncached = greedy_generate(model, prompt, 6, ignore_eos=True, use_cache=False).tokens
    assert torch.equal(cached, uncached)


# ----------------------------------------------------------------------------- training

def test_training_moves_adapters_only(tokenizer):
    model = tiny_llava(tokenizer)
    attach_pia(model, SkipSet(mha=(0, 2)), CFG)
    base = {k: v.clone() for k, v in model.state_dict().items() if "adapter" not in k}
    before = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    _, tf, _ = make_batches()
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-2, weight_decay=0.1)
    model.train()
    loss = answer_loss(model, tf)
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)
    moved = [k for k, v in adapter_state_dict(model).items() if not torch.equal(v, before[k])]
    assert any("up1" in k for k in moved) and any("down1" in k for k in moved)
    assert all(p.grad is None for n, p in model.named_parameters() if "adapter" not in n)


# ----------------------------------------------------------------------------- checkpoints

def test_save_load_reproduces_outputs_exactly(tokenizer, tmp_path):
    model = tiny_llava(tokenizer)
    attach_pia(model, SkipSet(mha=(0, 2)), PIAConfig(skip_hidden=8, adapt_hidden=4, tau=3.0))
    randomise(model)
    save_adapters(model, tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
    assert meta["skips"]["mha"] == [0, 2] and meta["pia"]["tau"] == 3.0
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").stat().st_size < 50_000

    fresh = tiny_llava(tokenizer)
    load_adapters(fresh, tmp_path / "ckpt")
    _, tf, _ = make_batches()
    assert torch.equal(teacher_forced_logits(model, tf, ANSWER_LEN), teacher_forced_logits(fresh, tf, ANSWER_LEN))
    assert not any(p.requires_grad for n, p in fresh.named_parameters() if "adapter" not in n)


def test_load_onto_a_different_model_fails(tokenizer, tmp_path):
    model = tiny_llava(tokenizer)
    attach_pia(model, SkipSet(mha=(1,)), CFG)
    save_adapters(model, tmp_path / "ckpt")
    other = MiniLlava(tiny_language_model(layers=3, hidden=64), tokenizer)
    with pytest.raises(PIAError, match="num_layers"):
        load_adapters(other, tmp_path / "ckpt")


def _snapshot(model):
    """What a failed load must leave alone: the skip set, the adapter objects, their weights, the outputs."""
    from eas.method.pia import named_adapters
    from eas.method.skip import current_skips

    _, tf, _ = make_batches()
    return (current_skips(model), {k: id(v) for k, v in named_adapters(model).items()},
            {k: v.clone() for k, v in adapter_state_dict(model).items()},
            teacher_forced_logits(model, tf, ANSWER_LEN))


def _assert_unchanged(model, before):
    skips, ids, state, logits = before
    after = _snapshot(model)
    assert after[0] == skips and after[1] == ids
    assert state.keys() == after[2].keys() and all(torch.equal(state[k], after[2][k]) for k in state)
    assert torch.equal(after[3], logits)


def _damage_weights(ckpt):
    f = ckpt / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _damage_config(ckpt):
    f = ckpt / "adapter_config.json"
    f.write_text(f.read_text()[:-20])


def _config_lacks_skips(ckpt):
    f = ckpt / "adapter_config.json"
    meta = json.loads(f.read_text())
    del meta["skips"]
    f.write_text(json.dumps(meta))


def _config_disagrees_with_weights(ckpt):  # another skip set: other adapters than the file holds
    f = ckpt / "adapter_config.json"
    meta = json.loads(f.read_text())
    meta["skips"]["mha"] = [1]
    f.write_text(json.dumps(meta))


def _weights_of_another_size(ckpt):  # same names, another hidden size
    f = ckpt / "adapter_config.json"
    meta = json.loads(f.read_text())
    meta["pia"]["skip_hidden"] = 16
    f.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, file, message", [
    (_damage_weights, "adapter_model.safetensors", "is not a readable safetensors file"),
    (_damage_config, "adapter_config.json", "is not valid JSON"),
    (_config_lacks_skips, "adapter_config.json", r"lacks \['skips'\]"),
    (_config_disagrees_with_weights, "adapter_model.safetensors", "does not match the adapters its config describes"),
    (_weights_of_another_size, "adapter_model.safetensors", "wrong shapes"),
])
def test_a_failed_load_names_the_file_and_changes_nothing(tokenizer, tmp_path, damage, file, message):
    """Issue 20.2: load_adapters reads and checks everything before it touches the model."""
    source = tiny_llava(tokenizer)
    attach_pia(source, SkipSet(mha=(0, 2)), PIAConfig(skip_hidden=8, adapt_hidden=4, tau=3.0))
    randomise(source)
    ckpt = save_adapters(source, tmp_path / "ckpt")
    damage(ckpt)

    model = tiny_llava(tokenizer)  # a model with its own skips and trained adapters
    attach_pia(model, SkipSet(mha=(3,)), CFG)
    randomise(model, seed=7)
    before = _snapshot(model)
    with pytest.raises(PIAError, match=message) as err:
        load_adapters(model, ckpt)
    assert str(ckpt / file) in str(err.value)
    _assert_unchanged(model, before)

    fresh = tiny_llava(tokenizer)  # a fresh base stays a plain base
    before = _snapshot(fresh)
    with pytest.raises(PIAError, match=message):
        load_adapters(fresh, ckpt)
    _assert_unchanged(fresh, before)


# ----------------------------------------------------------------------------- other families

def tiny_hf(kind: str):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config),
                "mistral": (MistralForCausalLM, MistralConfig)}[kind]
    return cls(cfg(**common)).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_plain_hf_models_take_pia(kind):
    model = tiny_hf(kind)
    ids = torch.randint(0, 300, (2, 7))
    prompt = torch.ones(2, 7, dtype=torch.bool)
    apply_skips(model, SkipSet(mha=(0,)))
    with torch.no_grad():
        plain = model(ids).logits
        attach_pia(model, SkipSet(mha=(0,)), CFG)
        with prompt_context(prompt):
            assert torch.equal(model(ids).logits, plain)
            randomise(model)
            assert (model(ids).logits - plain).abs().max() > 1e-4
