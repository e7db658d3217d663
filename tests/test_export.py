"""eas.export.pretrained: EAS models as transformers directories that load exactly, folded exports, bad checkpoints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from hf_helpers import PIA, SKIPS, eas_lm, left_padded, study_logits, tiny_lm
from transformers import AutoConfig, AutoModelForCausalLM

from eas.export import pretrained as export
from eas.export.config import ADAPTERS_FILE, BASE_FILE, MODELING_FILE, CheckpointError
from eas.method import pia, reparam
from eas.method.skip import SkipSet, current_skips
from eas.models.causal_lm import CausalLMTarget
from eas.models.generate import greedy_generate


def remote(path):
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)


def edit_config(path, change):
    file = Path(path) / "config.json"
    cfg = json.loads(file.read_text())
    change(cfg)
    file.write_text(json.dumps(cfg))


# ----------------------------------------------------------------------------- exact round trips

@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_remote_code_load_equals_the_study_model(tmp_path, family):
    model = eas_lm(family)
    out = export.save_pretrained(model, tmp_path / "ckpt")
    files = sorted(os.listdir(out))
    assert {"config.json", MODELING_FILE, BASE_FILE, ADAPTERS_FILE, "model.safetensors.index.json"} <= set(files)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"].startswith("modeling_eas.Eas")
    assert cfg["eas"]["skips"]["mha"] == [0, 2] and cfg["eas"]["pia"]["skip_hidden"] == 8
    assert cfg["eas"]["merge_strategy"] == "low_rank" and cfg["eas"]["version"]

    loaded = remote(out)
    assert type(loaded).__module__.startswith("transformers_modules")  # the copied file ran, not eas.export
    assert current_skips(loaded) == SKIPS and pia.pia_config(loaded) == PIA
    batch = left_padded()
    want = study_logits(model, batch)
    assert want.abs().max() > 0.1
    assert torch.equal(study_logits(loaded, batch), want)
    # transformers' own forward on the loaded model: the prompt is every real token, positions from the mask.
    with torch.no_grad():
        hf = loaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    assert torch.equal(hf[real], want[real])
    a = greedy_generate(CausalLMTarget(model), batch, 6, ignore_eos=True).tokens
    assert torch.equal(greedy_generate(CausalLMTarget(loaded), batch, 6, ignore_eos=True).tokens, a)


def test_library_loader_and_skip_only(tmp_path):
    model = eas_lm(config=None, skips=SkipSet(mha=(0,), ffn=(3,)))
    out = export.save_pretrained(model, tmp_path / "skip")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    loaded = export.load_pretrained(out)
    assert type(loaded).__name__ == "EasLlamaForCausalLM" and current_skips(loaded) == SkipSet(mha=(0,), ffn=(3,))
    batch = left_padded()
    assert torch.equal(study_logits(loaded, batch), study_logits(model, batch))
    # One cache entry per layer; only the 3 kept attentions hold keys and values.
    with torch.no_grad():
        cache = loaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=True).cache
    assert sum(layer.keys is not None and layer.keys.numel() > 0 for layer in cache.layers) == 3


def test_static_router_and_merge_strategy_are_kept(tmp_path):
    model = eas_lm(config=PIA.replace(merge_strategy="two_matrix"))
    reparam.calibrate_static_router(CausalLMTarget(model), [left_padded(seed=4)])
    out = export.save_pretrained(model, tmp_path / "static", merge_strategy="static_router")
    cfg = json.loads((out / "config.json").read_text())["eas"]
    assert cfg["static_router"] and cfg["merge_strategy"] == "static_router"
    loaded = export.load_pretrained(out)
    assert pia.pia_config(loaded).merge_strategy == "static_router"
    for i, a in pia.skip_adapters(loaded).items():
        assert torch.equal(a.static_alpha, pia.skip_adapters(model)[i].static_alpha)
    batch = left_padded()
    assert torch.equal(study_logits(loaded, batch), study_logits(model, batch))


def test_export_of_a_merged_model_saves_the_unmerged_weights(tmp_path):
    model = eas_lm()
    batch = left_padded()
    want = study_logits(model, batch)
    reparam.merge_after_prefill(model, batch)
    loaded = export.load_pretrained(export.save_pretrained(model, tmp_path / "m"))
    assert not reparam.is_merged(model)
    assert torch.equal(study_logits(loaded, batch), want)


def test_hf_save_pretrained_of_a_loaded_model_round_trips(tmp_path):
    loaded = remote(export.save_pretrained(eas_lm(), tmp_path / "a"))
    loaded.save_pretrained(tmp_path / "b")
    again = remote(tmp_path / "b")
    batch = left_padded()
    assert torch.equal(study_logits(again, batch), study_logits(loaded, batch))


def test_mini_llava_round_trip(tmp_path, tiny_mini_llava):
    model = tiny_mini_llava
    pia.attach_pia(model, SKIPS, PIA)
    pia.randomise_adapters(model)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.normal_(0, 0.2)
    out = export.save_pretrained(model, tmp_path / "mini")
    back = export.load_mini_llava(out)
    assert pia.pia_config(back) == PIA and current_skips(back) == SKIPS
    batch = left_padded()
    ids = batch.input_ids.clone()
    ids[:, -4:] = model.image_token_id  # four visual slots per row, filled from image features
    feats = torch.randn(3, model.num_visual_tokens, model.vision_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, _ = model(ids, batch.attention_mask, feats, prompt_mask=batch.prompt_mask)
        got, _ = back(ids, batch.attention_mask, feats, prompt_mask=batch.prompt_mask)
    assert torch.equal(got, want)
    from eas.models.mini_llava import Batch

    b = Batch(ids, batch.attention_mask, batch.prompt_mask, feats)
    merge = reparam.reparam_hook(back)
    assert torch.equal(greedy_generate(back, b, 5, ignore_eos=True, after_prefill=merge).tokens,
                       greedy_generate(model, b, 5, ignore_eos=True, after_prefill=merge).tokens)


# ----------------------------------------------------------------------------- folded exports

@pytest.mark.parametrize("kind", ["skip_only", "static_router", "no_router"])
def test_folded_export_is_plain_biased_layers(tmp_path, kind):
    if kind == "skip_only":
        model = eas_lm(config=None)
    elif kind == "static_router":
        model = eas_lm(config=PIA.replace(info_exchange=False))
        reparam.calibrate_static_router(CausalLMTarget(model), [left_padded(seed=5)])
    else:
        model = eas_lm(config=PIA.replace(info_exchange=False, router=False))
    out = export.save_pretrained(model, tmp_path / kind, fold=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eas"]["pia"] is None and cfg["eas"]["skips"]["mha"] == [0, 2]
    if kind != "skip_only":
        assert cfg["eas"]["folded"] and cfg["attention_bias"] and cfg["mlp_bias"]
    loaded = remote(out)
    assert not pia.named_adapters(loaded)  # no PIA code runs at decode time
    batch = left_padded()
    want = study_logits(model, batch)
    assert (study_logits(loaded, batch) - want).abs().max() <= 1e-4 * max(1.0, want.abs().max())
    merge = reparam.reparam_hook(model) if pia.pia_config(model) else None
    assert torch.equal(greedy_generate(CausalLMTarget(loaded), batch, 8, ignore_eos=True).tokens,
                       greedy_generate(CausalLMTarget(model), batch, 8, ignore_eos=True, after_prefill=merge).tokens)


def test_fold_refuses_prompt_dependent_pias(tmp_path):
    with pytest.raises(export.FoldError, match=r"info_exchange=True.*hidden_bias.*depends on each prompt"):
        export.save_pretrained(eas_lm(), tmp_path / "x", fold=True)
    with pytest.raises(export.FoldError, match="calibrate_static_router"):
        export.save_pretrained(eas_lm(config=PIA.replace(info_exchange=False)), tmp_path / "y", fold=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("family,config,where", [
    ("qwen2", PIA.replace(info_exchange=False, router=False), "gate_proj"),
    ("mistral", PIA.replace(info_exchange=False, router=False, skip_hidden=8), "q_proj"),
])
def test_fold_refuses_families_without_bias_slots(tmp_path, family, config, where):
    with pytest.raises(export.FoldError, match=rf"{family.capitalize()}.*no bias in .*{where}"):
        export.save_pretrained(eas_lm(family, config=config), tmp_path / "x", fold=True)


def test_qwen2_folds_adaptation_pias_into_its_qkv_biases(tmp_path):
    from eas.method.skip import eas_blocks

    model = eas_lm("qwen2")
    for i in pia.skip_adapters(model):  # keep the adaptation PIAs only: Qwen2's q/k/v have biases, its MLP none
        eas_blocks(model)[i].ffn_adapter = None
    loaded = export.load_pretrained(export.save_pretrained(model, tmp_path / "q", fold=True))
    batch = left_padded()
    want = study_logits(model, batch)
    assert (study_logits(loaded, batch) - want).abs().max() <= 1e-4 * max(1.0, want.abs().max())


# ----------------------------------------------------------------------------- bad input

@pytest.fixture()
def ckpt(tmp_path):
    return export.save_pretrained(eas_lm(), tmp_path / "ckpt")


def test_weights_of_another_base_model(tmp_path, ckpt):
    other = export.save_pretrained(eas_lm(hidden=32), tmp_path / "narrow")
    (ckpt / BASE_FILE).write_bytes((other / BASE_FILE).read_bytes())
    with pytest.raises(CheckpointError,
                       match=rf"{BASE_FILE}: tensor .* has shape .*32.* expects .*64.*another base model"):
        remote(ckpt)
    deeper = export.save_pretrained(eas_lm(layers=5), tmp_path / "deep")
    for name in (BASE_FILE, ADAPTERS_FILE, "model.safetensors.index.json"):
        (ckpt / name).write_bytes((deeper / name).read_bytes())
    with pytest.raises(CheckpointError, match=r"model.layers.4.* another model"):
        export.load_pretrained(ckpt)


def test_eas_section_of_another_base_model(ckpt):
    edit_config(ckpt, lambda c: c["eas"].update(hidden_size=128))
    with pytest.raises(CheckpointError, match=r"config.json: eas section was written for a base model with "
                                              r"hidden_size=128, but the base config .* hidden_size=64"):
        remote(ckpt)


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
@pytest.mark.parametrize("name", [ADAPTERS_FILE, BASE_FILE])
def test_missing_or_corrupt_files(ckpt, damage, name):
    file = ckpt / name
    if damage == "missing":
        file.unlink()
        expected = rf"{file} is missing"
    else:
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00\x01garbage" * 10)
        expected = rf"{file} is not a readable safetensors file"
    role = "PIA adapter" if name == ADAPTERS_FILE else "weights"
    with pytest.raises(CheckpointError, match=rf"{expected}.*{role}"):
        remote(ckpt)
    with pytest.raises(CheckpointError, match=expected):
        export.load_pretrained(ckpt)


def test_unknown_merge_strategy(ckpt):
    edit_config(ckpt, lambda c: c["eas"].update(merge_strategy="magic"))
    with pytest.raises(CheckpointError,
                       match=r"config.json: eas section: unknown merge_strategy 'magic'; expected one of per_example"):
        remote(ckpt)
    with pytest.raises(CheckpointError, match="unknown merge_strategy 'magic'"):
        export.load_pretrained(ckpt)


def test_unknown_merge_strategy_at_export(tmp_path):
    with pytest.raises(CheckpointError, match="unknown merge_strategy 'magic'"):
        export.save_pretrained(eas_lm(), tmp_path / "x", merge_strategy="magic")
    with pytest.raises(CheckpointError, match="calibrate_static_router"):
        export.save_pretrained(eas_lm(), tmp_path / "x", merge_strategy="static_router")


def test_remote_code_without_its_modeling_file(ckpt):
    (ckpt / MODELING_FILE).unlink()
    with pytest.raises(OSError, match=MODELING_FILE):
        remote(ckpt)


def test_remote_code_is_needed(ckpt):
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoConfig.from_pretrained(ckpt, trust_remote_code=False)


def test_modeling_file_names_the_missing_package(ckpt, monkeypatch):
    import runpy

    for name in [m for m in sys.modules if m == "eas" or m.startswith("eas.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "eas", None)  # `import eas` now fails as if it were not installed
    with pytest.raises(ImportError, match=r"needs the Python package `eas`"):
        runpy.run_path(str(ckpt / MODELING_FILE))


def test_nothing_half_written(tmp_path, monkeypatch):
    model = eas_lm()
    monkeypatch.setattr(export.io, "write_text", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        export.save_pretrained(model, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    export.save_pretrained(model, tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.save_pretrained(model, tmp_path / "ckpt")
    export.save_pretrained(eas_lm(seed=3), tmp_path / "ckpt", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_unsupported_layouts_are_refused(tmp_path):
    model = eas_lm()
    from eas.method.skip import eas_blocks

    eas_blocks(model)[1].layer_adapter = torch.nn.Linear(64, 64)  # e.g. a DAS adapter: not exportable
    with pytest.raises(CheckpointError, match="layer_adapter.*have no place"):
        export.save_pretrained(model, tmp_path / "x")


def test_export_from_an_adapter_checkpoint(tmp_path):
    model = eas_lm()
    pia.save_adapters(model, tmp_path / "run")
    out = export.export_adapters(tiny_lm(), tmp_path / "run", tmp_path / "ckpt")
    batch = left_padded()
    assert torch.equal(study_logits(export.load_pretrained(out), batch), study_logits(model, batch))
    with pytest.raises(pia.PIAError, match=r"run was saved for num_layers=4, this model has num_layers=5"):
        export.export_adapters(tiny_lm(layers=5), tmp_path / "run", tmp_path / "deep")
    with pytest.raises(pia.PIAError, match=r"run was saved for hidden_size=64, this model has hidden_size=32"):
        export.export_adapters(tiny_lm(hidden=32), tmp_path / "run", tmp_path / "narrow")
    assert not (tmp_path / "deep").exists() and not (tmp_path / "narrow").exists()
