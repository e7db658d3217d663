"""The `paper` profile (issue 21): LLaVA-1.5 by folder and the official ScienceQA release by path, each missing or
wrong piece a clear error before anything trains, and every chapter the profile runs taken end to end through
papermill on a tiny random LlavaForConditionalGeneration saved to disk, then rendered as a book."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eas.core import io
from eas.data import DatasetNotFound, build_task
from eas.study import experiments
from eas.study.profiles import ParameterError, notebook_params, profile_chapters, profile_values

SQA_SIZES = {"train": 16, "val": 8, "test": 8}


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    """A tiny random LLaVA-1.5 checkpoint (model + processor) as save_pretrained writes it."""
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from eas.models.mini_llava import load_tokenizer

    tok = load_tokenizer()
    tok.add_tokens(["<image>"], special_tokens=True)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1,
    )
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(text_config=text.to_dict(), vision_config=vision,
                                                      image_token_index=tok.convert_tokens_to_ids("<image>")))
    path = tmp_path_factory.mktemp("llava") / "tiny-llava-1.5"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A folder in the official ScienceQA release's layout (problems.json, pid_splits.json, images/...)."""
    return build_task("scienceqa", tmp_path_factory.mktemp("release") / "ScienceQA", seed=0, **SQA_SIZES)


@pytest.fixture()
def paper_env(llava_dir, release, tmp_path, monkeypatch):
    monkeypatch.setenv("EAS_LLAVA", str(llava_dir))
    monkeypatch.setenv("EAS_SCIENCEQA", str(release))
    monkeypatch.setenv("EAS_DATA", str(tmp_path / "data"))
    if "EAS_CACHE" not in os.environ:
        monkeypatch.setenv("EAS_CACHE", str(io.REPO_ROOT / "data" / "cache"))
    return tmp_path


# ----------------------------------------------------------------------------- bad input, before anything runs

def test_paper_profile_names_what_it_needs(monkeypatch, llava_dir):
    monkeypatch.delenv("EAS_SCIENCEQA", raising=False)
    monkeypatch.delenv("EAS_LLAVA", raising=False)
    with pytest.raises(ParameterError, match="environment variable EAS_SCIENCEQA is not set"):
        profile_values("paper", "07_methods")
    monkeypatch.setenv("EAS_SCIENCEQA", "/nowhere/ScienceQA")
    values = profile_values("paper", "07_methods")
    assert values["model"] == "llava-hf/llava-1.5-7b-hf"  # the default hub id when EAS_LLAVA is unset
    with pytest.raises(ParameterError, match=r"scienceqa_root='/nowhere/ScienceQA'.*does not exist.*problems.json"):
        notebook_params("07_methods", values)


def test_a_release_missing_a_file_or_an_image_is_named(tmp_path, release, llava_dir):
    broken = tmp_path / "ScienceQA"
    shutil.copytree(release, broken)
    (broken / "pid_splits.json").unlink()
    with pytest.raises(ParameterError, match=f"missing file {broken}/pid_splits.json"):
        notebook_params("02_redundancy", {**_values("02_redundancy", broken, llava_dir)})
    shutil.copy(release / "pid_splits.json", broken / "pid_splits.json")
    problems = json.loads((broken / "problems.json").read_text())
    splits = json.loads((broken / "pid_splits.json").read_text())
    pid = next(p for p in splits["train"] if problems[p]["image"])
    shutil.rmtree(next((broken / "images").rglob(pid)))
    spec = experiments.ExperimentSpec(task="scienceqa", method="lora", model=str(llava_dir), dataset=str(broken),
                                      n_eval=4, heldout=4)
    with pytest.raises(DatasetNotFound, match=f"image for problem {pid} not found"):
        experiments.load_data(spec)  # run_experiment loads every split before it trains


def test_a_folder_that_is_not_llava_is_refused(tmp_path, release, llava_dir):
    plain = tmp_path / "llama"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    for bad in (plain, tmp_path / "no-such-llava-folder"):
        with pytest.raises(ParameterError, match=f"parameter model: .*{bad}"):
            notebook_params("07_methods", _values("07_methods", release, bad))


def _values(name: str, release: Path, model: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EAS_SCIENCEQA", str(release))
        mp.setenv("EAS_LLAVA", str(model))
        return profile_values("paper", name)


def test_paper_settings_and_memory_estimate(paper_env, llava_dir):
    P = notebook_params("07_methods", profile_values("paper", "07_methods"))
    assert (P.skip_hidden, P.adapt_hidden, P.eas_ks, P.answer_format) == (256, 128, [8, 12], "QCM-ALE")
    # 5 epochs of random sub-networks, then 5 epochs of 3 sub-networks compared every 10 steps (398 steps an epoch)
    assert (P.bandit_warmup_steps, P.bandit_comparisons, P.bandit_T, P.bandit_m) == (1990, 199, 10, 3)
    spec = P.method_spec("eas", 12)
    assert spec.dataset == str(Path(os.environ["EAS_SCIENCEQA"]).resolve()) and spec.model == str(llava_dir)
    est = experiments.memory_estimate(spec.replace(model="llava-hf/llava-1.5-7b-hf"))  # not resolvable: 7B shape
    assert 13 < est.weights / 2**30 < 30 and est.total_gb > est.weights / 2**30  # 7B at 2 or 4 bytes a weight
    tiny = experiments.memory_estimate(spec)  # the saved tiny checkpoint's own config.json, fp32 on a CPU
    assert tiny.weights < 16e6 and tiny.total_gb < 1 and "estimated peak memory" in tiny.describe(80)
    assert profile_chapters("paper") == ["01_base_model", "02_redundancy", "07_methods", "08_claims"]


# ----------------------------------------------------------------------------- end to end, through papermill

FINETUNE = dict(steps=2, warmup_steps=0, batch_size=2, grad_accum=2, skip_hidden=8, adapt_hidden=4,
                bandit_warmup_steps=2, bandit_comparisons=2, bandit_T=2, heldout=4, n_eval=8, eval_batch_size=4,
                answer_tokens=6, timing_tokens=2, timing_repeats=1)
OVERRIDES = {
    "01_base_model": dict(n_eval=6, eval_batch_size=3, probe_examples=4, probe_batch_size=4,
                          max_new_tokens={"scienceqa": 6, "vqa": 4, "classification": 4},
                          dataset_sizes={"scienceqa": SQA_SIZES, "vqa": {"train": 20, "val": 10, "test": 10},
                                         "classification": {"per_class": 10}}),
    "02_redundancy": dict(FINETUNE, k=2),
    "07_methods": dict(FINETUNE, eas_ks=[1, 2], das_k=1, lora_r=2, adapter_hidden=4, mam_hidden=4, mam_prefix=2,
                       das_layer_hidden=8, das_kept_hidden=4),
    "08_claims": {},
}


@pytest.mark.notebooks
def test_every_paper_chapter_runs_on_a_llava_checkpoint_and_the_book_builds(paper_env):
    from eas.study.notebooks import run_notebook, write_toc

    executed = paper_env / "book" / "notebooks"
    chapters = profile_chapters("paper")
    assert set(chapters) == set(OVERRIDES)
    for name in chapters:
        out = run_notebook(name, "paper", output_dir=executed, parameters=OVERRIDES[name])
        nb = json.loads(out.read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (name, errors)
        assert nb["metadata"]["eas"]["profile"] == "paper"
    # the runs read the release and the checkpoint, not an analog or the embedded model
    specs = [json.loads(p.read_text()) for p in (paper_env / "data" / "results" / "runs").glob("*/spec.json")]
    assert specs and all(s["model"] == os.environ["EAS_LLAVA"] for s in specs)
    assert all(s["dataset"] == str(Path(os.environ["EAS_SCIENCEQA"]).resolve()) for s in specs)
    assert {s["method"] for s in specs} >= {"lora", "adapter", "mam", "das", "eas"}
    rows = [json.loads(p.read_text()) for p in (paper_env / "data" / "results" / "runs").glob("*/row.json")]
    assert all({"NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"} <= set(r) for r in rows)
    assert not list((paper_env / "data" / "datasets").glob("scienceqa-*")), "an analog was built"
    # the book of exactly these chapters, rendered from the executed copies
    book = paper_env / "book"
    for f in ("_config.yml", "intro.md", "architecture.md"):
        shutil.copy(io.REPO_ROOT / "book" / f, book / f)
    shutil.copy(io.REPO_ROOT / "ARCHITECTURE.md", book.parent / "ARCHITECTURE.md")  # architecture.md includes it
    toc = write_toc("paper", book / "_toc.paper.yml")  # as `make book PROFILE=paper` does
    done = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "--toc", str(toc)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pages = {p.stem for p in (book / "_build" / "html" / "notebooks").glob("*.html")}
    assert pages == set(chapters) and (book / "_build" / "html" / "architecture.html").exists()
