"""eas.study.experiments on the tiny random mini-LLaVA and a couple of dozen generated examples: complete rows,
stored rows never recomputed, resume after an interruption, baselines, determinism, clear spec errors."""

import json
import math
import os
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from eas.core import io
from eas.data.evaluate import METRIC_COLUMNS
from eas.method.skip import SkipSet
from eas.study import experiments
from eas.study.experiments import ExperimentError, ExperimentSpec, results_table, run_experiment

TINY = dict(task="scienceqa", model="tiny", sizes={"train": 24, "val": 8, "test": 8}, n_eval=8, heldout=8,
            steps=4, batch_size=4, lr=1e-2, max_new_tokens=6, eval_batch_size=8, checkpoint_every=2,
            bandit_warmup_steps=2, bandit_comparisons=2, bandit_T=2, bandit_m=2)
EAS = dict(method="eas", kind="mha", k=2, selector="bandit", pia={"skip_hidden": 8, "adapt_hidden": 4})


def spec(**kw) -> ExperimentSpec:
    return ExperimentSpec(**{**TINY, **kw})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One data root for the module: datasets are built (and image features cached) once; the tokenizer
    and vision features come from the repository's cache unless EAS_CACHE already points elsewhere."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EAS_DATA", str(tmp_path_factory.mktemp("eas-data")))
        if "EAS_CACHE" not in os.environ:
            mp.setenv("EAS_CACHE", str(io.REPO_ROOT / "data" / "cache"))
        yield io.data_root()


@pytest.fixture()
def factory(data_root, tokenizer):
    from eas.models.mini_llava import MiniLlava, tiny_language_model

    def make():
        torch.manual_seed(0)
        return MiniLlava(tiny_language_model(seed=0, layers=4), tokenizer, visual_grid=2).eval()

    return make


def metrics_of(row: dict) -> dict:
    return {c: row[c] for c in METRIC_COLUMNS[row["task"]]}


def assert_complete(row: dict, s: ExperimentSpec) -> None:
    for col in METRIC_COLUMNS[s.task]:
        assert 0.0 <= row[col] <= 100.0 or math.isnan(row[col]), col
    assert row["key"] == s.key() and ExperimentSpec.from_dict(json.loads(row["spec"])) == s
    assert row["n_eval"] == s.n_eval and row["eval_wall_s_per_sample"] > 0
    run_dir = s.run_dir()
    assert (run_dir / "row.json").exists() and (run_dir / "selection.json").exists()
    with open(run_dir / "generations.csv") as f:
        assert len(f.read().strip().splitlines()) >= s.n_eval + 1


# ----------------------------------------------------------------------------- EAS with the bandit

def test_eas_bandit_row_then_stored_row(factory, monkeypatch):
    s = spec(**EAS, study="t-eas")
    row = run_experiment(s, model_factory=factory, progress=False)
    assert_complete(row, s)
    skipped = json.loads(row["skipped"])
    assert len(skipped["mha"]) == 2 and skipped["ffn"] == [] and row["reparam"] and row["pia_setting"] == "reparam"
    assert row["train_steps"] == 4 and math.isfinite(row["final_train_loss"]) and 0 < row["updated_params_pct"] < 5
    assert row["search_comparisons"] == 2
    log = (s.run_dir() / "search" / "bandit.jsonl").read_text().splitlines()
    assert len(log) == 1 + 2  # header + one record per comparison, on the held-out batch

    # A finished spec is answered from disk: nothing is loaded, built or trained.
    def forbidden(*a, **k):
        raise AssertionError("a finished experiment was recomputed")

    for name in ("load_data", "build_model"):
        monkeypatch.setattr(experiments, name, forbidden)
    monkeypatch.setattr(experiments.trainlib, "train", forbidden)
    again = run_experiment(s.replace(study="t-other"), model_factory=factory, progress=False)
    assert {k: v for k, v in again.items() if k != "studies"} == {k: v for k, v in row.items() if k != "studies"}
    assert again["studies"] == ["t-eas", "t-other"]  # one run serves several tables
    table = results_table("t-other")
    assert list(table["key"]) == [s.key()] and set(METRIC_COLUMNS["scienceqa"]) <= set(table.columns)


def test_bandit_trajectory_and_selection_read_back(factory):
    s = spec(**EAS, study="t-eas")
    row = run_experiment(s, model_factory=factory, progress=False)
    traj = experiments.bandit_trajectory(s)
    assert sorted(traj.comparisons.unique()) == [0, 1, 2] and len(traj) == 3 * 4  # start + 2 comparisons, 4 MHAs
    assert (traj[traj.comparisons == 0].preference == 0).all() and set(traj.module) == {"mha"}
    selection = experiments.read_selection(s)
    final = traj[traj.comparisons == 2].sort_values("candidate").preference.tolist()
    assert final == pytest.approx(selection["scores"])
    assert selection["chosen"] == json.loads(row["skipped"])["mha"]
    assert experiments.accuracy(row) == row["Avg"]
    with pytest.raises(ExperimentError, match="only 'bandit' runs"):
        experiments.bandit_trajectory(s.replace(selector="last"))


def test_interrupted_run_resumes_to_the_same_row(factory):
    s = spec(**EAS, seed=1)
    whole = run_experiment(s, model_factory=factory, progress=False)
    shutil.rmtree(s.run_dir())

    def cut(step, model, loss):
        if step == 3:  # after the checkpoint at step 2
            raise RuntimeError("cut")

    with pytest.raises(RuntimeError, match="cut"):
        run_experiment(s, model_factory=factory, progress=False, on_step=cut)
    assert not (s.run_dir() / "row.json").exists() and (s.run_dir() / "train" / "checkpoint.json").exists()
    resumed = run_experiment(s, model_factory=factory, progress=False)
    done = json.loads((s.run_dir() / "train" / "done.json").read_text())
    assert done["result"]["resumed_from"] == 2
    assert metrics_of(resumed) == metrics_of(whole) and resumed["skipped"] == whole["skipped"]
    assert resumed["final_train_loss"] == whole["final_train_loss"]


# ----------------------------------------------------------------------------- other methods and selectors

@pytest.mark.parametrize("kw", [
    dict(method="lora", method_options={"r": 2}),
    dict(method="adapter", method_options={"hidden": 4}),
    dict(method="das", k=1, method_options={"layer_hidden": 8, "kept_hidden": 4}),
    dict(method="skip-only", kind="mha", k=1, selector="last"),
    dict(method="eas", kind="ffn", k=1, selector="attention_drop", pia={"skip_hidden": 8, "adapt_hidden": 4}),
    dict(task="classification", sizes={"per_class": 6}, train_fraction=0.5, method="eas", k=1,
         selector="block_influence", pia={"ablation": "frozen_bias", "skip_hidden": 8, "adapt_hidden": 4}),
], ids=["lora", "adapter", "das-bandit", "skip-only", "eas-attention-drop-ffn", "classification-eas-no-reparam"])
def test_method_rows(factory, kw):
    s = spec(**kw)
    row = run_experiment(s, model_factory=factory, progress=False)
    assert_complete(row, s)
    skipped = json.loads(row["skipped"])
    if s.method == "das":
        assert len(skipped["layer"]) == 1 and row["search_comparisons"] == 2
    if s.method == "skip-only":
        assert skipped["mha"] == [3] and row["train_steps"] == 0 and row["updated_params_pct"] == 0
    else:
        assert row["train_steps"] == 4 and row["updated_params_pct"] > 0
    if s.task == "classification":
        assert row["train_fraction"] == 0.5 and not row["reparam"] and row["pia_setting"] == "frozen_bias"
    if s.method in ("lora", "adapter"):
        assert skipped == {"mha": [], "ffn": [], "layer": []} and row["selector"] == "none"


def test_same_seed_same_metrics(factory):
    s = spec(method="lora", method_options={"r": 2}, seed=3)
    first = run_experiment(s, model_factory=factory, progress=False)
    shutil.rmtree(s.run_dir())
    second = run_experiment(s, model_factory=factory, progress=False)
    assert metrics_of(first) == metrics_of(second) and first["final_train_loss"] == second["final_train_loss"]


def test_supernet_weights_start_the_chosen_set(tokenizer):
    from eas import baselines
    from eas.models.mini_llava import MiniLlava, tiny_language_model

    model = MiniLlava(tiny_language_model(seed=0, layers=4), tokenizer, visual_grid=2).eval()
    s = spec(**EAS)
    experiments.attach_supernet(model, s)
    with torch.no_grad():
        for p in experiments.trainlib.trainable_parameters(model).values():
            p.normal_()
    weights = {k: p.detach().clone() for k, p in experiments.trainlib.trainable_parameters(model).items()}
    baselines.detach(model)
    assert all(b.ffn_adapter is None and b.attn_adapter is None for b in experiments.eas_blocks(model))
    experiments.attach_method(model, s, SkipSet(mha=(1, 2)))
    assert experiments.copy_supernet_weights(weights, model) > 0
    for name, p in experiments.trainlib.trainable_parameters(model).items():
        assert torch.equal(p, weights[name.replace(".ffn_adapter.", ".ffn_adapter.pia.")]
                           if ".ffn_adapter." in name else weights[name])


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kw, match", [
    (dict(method="eas", kind="layer", k=2), r"candidate kind for method 'eas'.*'layer'.*'mha', 'ffn', 'mha_or_ffn'"),
    (dict(method="eas", kind="mha", k=0), r"k \(modules skipped by 'eas'\) must be an integer >= 1, got 0"),
    (dict(method="eas", kind="mha_or_ffn", k=2, selector="attention_drop"), r"'attention_drop' cannot score kind"),
    (dict(method="das", kind="layer", k=1, selector="attention_drop"), r"selector for method 'das'"),
    (dict(method="lora", k=2), r"method 'lora' skips nothing"),
    (dict(method="lora", selector="bandit"), r"method 'lora' skips nothing"),
    (dict(method="skip-only", kind="mha", k=1, selector="bandit"), r"selector for method 'skip-only'"),
    (dict(method="sparse"), r"unknown method 'sparse'; expected one of 'eas'"),
    (dict(task="coco"), r"unknown task 'coco'"),
    (dict(method="eas", k=1, selector="best"), r"unknown selector .*'best'"),
    (dict(method="eas", k=1, pia={"hidden": 8}), r"unknown PIA option"),
    (dict(method="lora", method_options={"rank": 8}), r"unknown LoRAConfig option"),
    (dict(task="classification", method="lora", train_fraction=0.3), r"train_fraction 0.3"),
])
def test_bad_specs_say_what_is_allowed(kw, match):
    with pytest.raises(ValueError, match=match):
        spec(**kw)


def test_attention_drop_on_ffn_is_a_valid_spec():
    assert spec(method="eas", kind="ffn", k=2, selector="attention_drop").selector == "attention_drop"


def test_k_beyond_the_model_is_refused_before_training(factory, monkeypatch):
    monkeypatch.setattr(experiments.trainlib, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ExperimentError, match=r"k=4 is out of range for kind 'mha' on a 4-layer model: allowed 1..3"):
        run_experiment(spec(**{**EAS, "k": 4}), model_factory=factory, progress=False)


def test_key_ignores_labels_and_defaults_resolve():
    assert spec(**EAS, study="a").key() == spec(**EAS, study="b", checkpoint_every=7).key()
    assert spec(**EAS).key() != spec(**EAS, seed=1).key()
    assert spec(method="eas", k=2).kind == "mha" and spec(method="eas", k=2).selector == "bandit"
    assert spec(method="das", k=1).kind == "layer" and spec(method="lora").selector == "none"
    last = {**EAS, "selector": "last"}  # warm_start means nothing without a search: it cannot split keys
    assert spec(**last, warm_start=True).key() == spec(**last, warm_start=False).key()
    assert spec(**EAS, warm_start=True).key() != spec(**EAS, warm_start=False).key()
    named = {"ablation": "reparam", "skip_hidden": 8, "adapt_hidden": 4}  # the full design, by its Table 6 name
    assert spec(**{**EAS, "pia": named}).key() == spec(**EAS).key()
    json.dumps(spec(**EAS).to_dict())


def test_gap_se():
    assert experiments.gap_se(50.0, 50.0, 100) == pytest.approx(100 * math.sqrt(0.005))
    assert experiments.gap_se(100.0, 0.0, 10) == 0.0


def test_trained_model_rebuilds_what_was_evaluated_and_time_runs_times_it(factory):
    """`trained_model` must give back the very model a run evaluated: same greedy replies as its
    generations.csv (EAS merged after prefill, and LoRA merged); `time_runs` times them beside the base."""
    from eas.models.generate import generate_texts

    specs = {"eas": spec(**{**EAS, "selector": "last"}), "lora": spec(method="lora", method_options={"r": 2})}
    for s in specs.values():
        run_experiment(s, model_factory=factory, progress=False)
    base = factory()
    examples = experiments.load_data(specs["eas"])["test"]
    before = {k: v.clone() for k, v in base.state_dict().items()}
    for s in specs.values():
        model, hook = experiments.trained_model(s, base)
        assert (hook is not None) == (s.method == "eas")
        replies = generate_texts(model, examples, batch_size=s.eval_batch_size, max_new_tokens=s.max_new_tokens,
                                 after_prefill=hook, progress=False)
        stored = pd.read_csv(s.run_dir() / "generations.csv", keep_default_na=False, dtype={"prediction": str})
        assert list(stored.prediction) == replies
        # one set of frozen weights for every timed run: the embedding is base's own tensor; LoRA's merge wrote
        # into weights of its own
        assert model.language_model.get_input_embeddings().weight is base.language_model.get_input_embeddings().weight
        shared = {p.data_ptr() for p in base.parameters()}
        own = sum(p.numel() for p in model.parameters() if p.data_ptr() not in shared)
        assert 0 < own < sum(p.numel() for p in base.parameters()) / 4
    after = base.state_dict()  # the shared base was copied, never changed
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())

    df = experiments.time_runs(specs, batch_size=2, new_tokens=3, repeats=1, model_factory=factory)
    assert list(df.label) == ["base", "eas", "lora"]
    assert (df.decode_ms_per_token > 0).all() and df.time_vs_base.iloc[0] == 1.0
    assert df.delta_gflops.iloc[1] < 0 and df.delta_gflops.iloc[2] == 0  # EAS skips 2 MHAs; LoRA is merged
    assert df.kv_cache_bytes.iloc[1] < df.kv_cache_bytes.iloc[0]  # 2 of 4 attentions skipped: a smaller cache
    with pytest.raises(ExperimentError, match="not finished"):
        experiments.time_runs({"new": spec(**{**EAS, "selector": "last", "seed": 9})}, model_factory=factory)


def test_static_router_accuracy_of_a_finished_run(factory, monkeypatch):
    s = spec(**{**EAS, "selector": "last"})
    run_experiment(s, model_factory=factory, progress=False)
    result = experiments.evaluate_static_router(s, calibration=8, model_factory=factory)
    assert result["calibration"] == 8 and result["merged"] and 0.0 <= result["Avg"] <= 100.0
    assert 0.0 <= result["router_first_path_min"] <= result["router_first_path_max"] <= 1.0
    assert (s.run_dir() / "static_router-8.json").exists()
    monkeypatch.setattr(experiments, "generate_texts", lambda *a, **k: pytest.fail("recomputed a stored result"))
    assert experiments.evaluate_static_router(s, calibration=8, model_factory=factory) == result
    with pytest.raises(ExperimentError, match="needs an EAS run"):
        experiments.evaluate_static_router(spec(method="lora", method_options={"r": 2}), model_factory=factory)


def test_chance_check_of_a_finished_run(factory):
    from eas.study.experiments import chance_check, item_correctness

    s = spec(method="lora", method_options={"r": 2}, seed=5)
    with pytest.raises(ExperimentError, match="not finished"):
        chance_check(s)
    run_experiment(s, model_factory=factory, progress=False)
    c = chance_check(s)
    correct = item_correctness(s).set_index("uid").correct.astype(int)
    assert c["n"] == len(correct) == s.n_eval and c["accuracy"] == pytest.approx(100 * correct.mean())
    assert 0 < c["chance"] < 100 and math.isfinite(c["z"]) and c["above_chance"] == (c["z"] > 2)


def test_under_several_processes_only_the_main_one_evaluates_and_writes(factory, monkeypatch):
    """A rank other than the main one trains (its share of each batch, in the real launch), then waits for the main
    process's row instead of evaluating and writing the same files itself."""

    class OtherRank:
        is_main_process = False

        def wait_for_everyone(self):  # stands for the main process finishing the run meanwhile
            waits.append(1)
            io.write_json(s.run_dir() / experiments.ROW_FILE, {"studies": [s.study], "by": "main"})

    waits = []
    s = spec(method="lora", method_options={"r": 2}, seed=11)
    monkeypatch.setattr(experiments, "PartialState", OtherRank)
    monkeypatch.setattr(experiments, "evaluate_model", lambda *a, **k: pytest.fail("a non-main rank evaluated"))
    row = run_experiment(s, model_factory=factory, progress=False)
    assert row["by"] == "main" and waits == [1]
    written = {p.name for p in s.run_dir().iterdir()}
    assert not written & {"spec.json", "selection.json", "generations.csv"}, written


def test_models_load_on_the_process_device(monkeypatch):
    """On GPUs a LLaVA checkpoint goes to this process's device (accelerate's PartialState), not a bare "cuda"."""
    from eas.models import zoo

    seen = {}

    class Loaded:
        def requires_grad_(self, flag):
            return self

    def from_pretrained(path, dtype, device):
        seen.update(path=path, dtype=dtype, device=device)
        return Loaded()

    monkeypatch.setattr(zoo.torch.cuda, "is_available", lambda: True)
    import accelerate

    monkeypatch.setattr(accelerate, "PartialState", lambda: SimpleNamespace(device=torch.device("cuda", 1)))
    monkeypatch.setattr(zoo.LlavaTarget, "from_pretrained", staticmethod(from_pretrained))
    zoo.load_model("llava-hf/llava-1.5-7b-hf")
    assert seen["device"] == torch.device("cuda", 1) and seen["dtype"] == torch.bfloat16


def test_validation_accuracy_scores_val_items_once_and_the_choice_never_reads_test(factory, monkeypatch):
    from eas.data.evaluate import score
    from eas.models.generate import generate_texts

    s = spec(method="lora", method_options={"r": 2}, seed=6)
    with pytest.raises(ExperimentError, match="not finished"):
        experiments.validation_accuracy(s, 8, model_factory=factory)
    run_experiment(s, model_factory=factory, progress=False)
    v = experiments.validation_accuracy(s, 8, model_factory=factory)
    stored = pd.read_csv(s.run_dir() / experiments.VALIDATION_FILE, dtype={"uid": str})
    test_uids = set(experiments.item_correctness(s).uid)
    assert len(stored) == 8 and not set(stored.uid) & test_uids  # val items, none of them a test item
    # the same number by hand: the rebuilt model's greedy replies on the val items, scored as test items are
    model, _ = experiments.trained_model(s, factory())
    root = experiments.runs.prepare_task(s.task, s.sizes, seed=s.data_seed)
    val = experiments.runs.load_split(s.task, root, "val", limit=8, answer_format=s.answer_format)
    by_hand = score(s.task, val, generate_texts(model, val, batch_size=8, max_new_tokens=s.max_new_tokens,
                                                progress=False))
    assert v["val_accuracy"] == pytest.approx(100 * by_hand.correct.mean()) and v["n_val"] == 8
    monkeypatch.setattr(experiments, "generate_texts", lambda *a, **k: pytest.fail("recomputed a stored result"))
    assert experiments.validation_accuracy(s, 8, model_factory=factory) == v
    for bad, match in [(0, "positive number"), (9, "has only 8 items")]:
        with pytest.raises(ExperimentError, match=match):
            experiments.validation_accuracy(s, bad, model_factory=factory)


@pytest.mark.parametrize("accuracies, chosen", [({"lr 0.01": 50.0, "lr 0.02": 62.5}, "lr 0.02"),
                                                ({"lr 0.01": 62.5, "lr 0.02": 62.5}, "lr 0.01")])
def test_choose_by_validation_keeps_the_best_val_accuracy_and_ties_keep_the_listed_order(factory, monkeypatch,
                                                                                           accuracies, chosen):
    candidates = {label: spec(method="lora", method_options={"r": 2}, lr=float(label.split()[1]))
                  for label in accuracies}
    by_lr = {s.lr: accuracies[label] for label, s in candidates.items()}
    monkeypatch.setattr(experiments, "validation_accuracy",
                        lambda s, n, **k: {"val_accuracy": by_lr[s.lr], "n_val": n, "val_chance": 30.0})
    best, table = experiments.choose_by_validation(candidates, 8, model_factory=factory)
    assert best == chosen and table.loc[chosen, "chosen"] and table.chosen.sum() == 1
    assert list(table.index) == list(candidates) and list(table.val_accuracy) == list(accuracies.values())
    with pytest.raises(ExperimentError, match="at least one"):
        experiments.choose_by_validation({}, 8)
    with pytest.raises(ExperimentError, match=r"candidates \['vqa'\] use another model, task or data"):
        experiments.choose_by_validation({**candidates, "vqa": spec(method="lora", task="vqa")}, 8)
