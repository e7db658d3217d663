"""Notebook parameters: profiles load, bad values fail with a message naming what was wrong."""

from pathlib import Path

import pytest

from eas.study.notebooks import notebook_names, run_notebook
from eas.study.profiles import PROFILES, ParameterError, notebook_params, profile_values


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_for_every_notebook(profile, monkeypatch):
    if profile == "paper":  # it reads the official release's folder from EAS_SCIENCEQA (tests/test_paper_profile.py)
        monkeypatch.setenv("EAS_SCIENCEQA", str(Path(__file__).parent / "fixtures" / "scienceqa"))
    for name in notebook_names():
        values = profile_values(profile, name)
        params = notebook_params(name, values)
        assert params.profile == profile


@pytest.mark.parametrize("override, message", [
    ({"n_eval": 0}, "n_eval=0 must be a positive integer"),
    ({"n_eval": "10"}, "n_eval='10' has type str; expected <class 'int'>"),
    ({"profile": "laptop"}, "profile='laptop' is unknown"),
    ({"model": "gpt2"}, "unknown model 'gpt2'; expected one of mini-llava, tiny, or the path"),
    ({"probe_task": "imagenet"}, "probe_task='imagenet'"),
    ({"dataset_sizes": {"sciqa": {"train": 1}}}, "unknown task 'sciqa'"),
    ({"dataset_sizes": {"vqa": {"train": -3}}}, r"dataset_sizes\['vqa'\]"),
    ({"max_new_tokens": {"vqa": 0}}, r"max_new_tokens\['vqa'\]=0"),
    ({"visual_grid": True}, "visual_grid=True has type bool"),
])
def test_bad_parameters_are_named(override, message):
    values = {**profile_values("smoke", "01_base_model"), **override}
    with pytest.raises(ParameterError, match=message):
        notebook_params("01_base_model", values)


@pytest.mark.parametrize("scales, message", [
    ({}, "strategy_scales={}; expected a non-empty mapping"),
    ({"llama-1b": {"batches": [8], "batch": 8}}, r"strategy_scales\['llama-1b'\]=.*keys among"),
    ({"llama-1b": {"k": 12}}, r"strategy_scales\['llama-1b'\]=.*a dict with `batches`"),
    ({"llama-1b": {"batches": [1], "strategies": ["fused"]}}, r"unknown strategies \['fused'\]"),
])
def test_bad_strategy_scales_are_named(scales, message):
    values = {**profile_values("smoke", "bench"), "strategy_scales": scales}
    with pytest.raises(ParameterError, match=message):
        notebook_params("bench", values)


def test_unknown_profile_and_notebook():
    with pytest.raises(ParameterError, match="unknown profile 'fast'"):
        profile_values("fast", "01_base_model")
    with pytest.raises(ParameterError, match="no notebook '99_nothing'"):
        run_notebook("99_nothing", "smoke")


@pytest.mark.parametrize("notebook, override, message", [
    ("02_redundancy", {"warmup_steps": 3}, r"warmup_steps=3 must be an integer in 0..steps-1 \(steps=3\)"),
    ("03_skip_ablation", {"timing_tokens": 1}, "timing_tokens=1 must be an integer >= 2"),
    ("04_pia_ablation", {"hidden_sizes": [8, 0]}, "hidden_sizes=.*positive integers"),
    ("07_methods", {"methods": ["lora", "prompt-tuning"]}, "methods has 'prompt-tuning'; expected values from"),
    ("07_methods", {"eas_ks": []}, "eas_ks=.*non-empty list"),
    ("07_methods", {"lora_r": 0}, "lora_r=0 must be a positive integer"),
])
def test_bad_fine_tuning_parameters_are_named(notebook, override, message):
    values = {**profile_values("smoke", notebook), **override}
    with pytest.raises(ParameterError, match=message):
        notebook_params(notebook, values)


def test_cpu_full_extends_cpu():
    for name in ("02_redundancy", "03_skip_ablation", "04_pia_ablation", "07_methods"):
        cpu, full = profile_values("cpu", name), profile_values("cpu-full", name)
        assert full["profile"] == "cpu-full" and len(full["seeds"]) == 3 and full["n_eval"] > cpu["n_eval"]
        differ = ("profile", "seeds", "n_eval", "sizes", "transfer_tasks", "transfer_fractions", "transfer_steps",
                  "method_lr", "lr_grid", "n_val")  # cpu-full chooses 07's rates on the val split itself
        assert {k: v for k, v in full.items() if k not in differ} == {k: v for k, v in cpu.items() if k not in differ}
        params = notebook_params(name, full)
        assert params.headline_seeds()[0] == params.seed
    assert profile_values("cpu-full", "06_latency") == {**profile_values("cpu", "06_latency"), "profile": "cpu-full"}


@pytest.mark.parametrize("override, message", [
    ({"seeds": []}, "seeds=.*non-empty list of distinct integers"),
    ({"seeds": [0, 0]}, "seeds=.*distinct"),
    ({"seeds": [-1]}, "seeds=.*>= 0"),
    ({"parity_margin": -1.0}, "parity_margin=-1.0 must be a number of points"),
])
def test_bad_seed_parameters_are_named(override, message):
    values = {**profile_values("smoke", "02_redundancy"), **override}
    with pytest.raises(ParameterError, match=message):
        notebook_params("02_redundancy", values)


def test_table3_and_scienceqa_check_specs():
    P = notebook_params("07_methods", profile_values("cpu", "07_methods"))
    assert P.transfer_specs() == {}  # cpu: Table 3 is left out for time
    # cpu's Table 1 is ScienceQA with the option's words, each method at the rate chosen on the val split
    table1 = {label: P.method_spec(method, k) for label, (method, k) in P.row_methods().items()}
    assert {(s.task, s.answer_format, s.max_new_tokens) for s in table1.values()} == {("scienceqa", "QCM-A-text", 16)}
    assert {label: s.lr for label, s in table1.items()} == {"LoRA": 0.001, "Adapter": 0.002, "MAM": 0.002,
                                                             "DAS_4": 0.002, "EAS_12": 0.002}
    assert P.scienceqa_specs() == {}  # nothing to check: Table 1 is ScienceQA
    F = notebook_params("07_methods", profile_values("cpu-full", "07_methods"))
    columns = F.transfer_specs()
    assert list(columns) == ["Slake", "AID 20%", "AID 50%"] and F.transfer_steps > P.steps
    for name, fraction in (("AID 20%", 0.2), ("AID 50%", 0.5)):
        specs = columns[name]
        assert list(specs) == ["LoRA", "Adapter", "MAM", "DAS_4", "EAS_12"]
        assert {(s.task, s.train_fraction, s.steps, s.sizes["per_class"]) for s in specs.values()} == \
            {("classification", fraction, F.transfer_steps, 100)}
    assert {s.lr for column in columns.values() for s in column.values()} == {F.lr}  # method_lr is Table 1's
    # lr_grid: each listed method's row is one candidate per rate, the other rows as before
    grid = notebook_params("07_methods", {**profile_values("cpu", "07_methods"), "method_lr": {},
                                          "lr_grid": {"lora": [0.001, 0.002], "eas": [0.001, 0.002]}})
    candidates = grid.rate_candidates()
    assert list(candidates) == ["LoRA", "EAS_12"] and list(candidates["LoRA"]) == ["lr 0.001", "lr 0.002"]
    assert candidates["EAS_12"]["lr 0.002"] == grid.method_spec("eas", 12, lr=0.002)
    assert P.rate_candidates() == {}
    # cpu-full chooses every Table 1 rate itself, from the two rates cpu's were chosen from
    assert {label: list(c) for label, c in F.rate_candidates().items()} == {
        label: ["lr 0.001", "lr 0.002"] for label in ("LoRA", "Adapter", "MAM", "DAS_4", "EAS_12")}
    # smoke runs another task, so the ScienceQA check runs its budget on ScienceQA, scoring the answer only
    S = notebook_params("07_methods", profile_values("smoke", "07_methods"))
    (label, spec), = S.scienceqa_specs().items()
    assert (label == "LoRA" and spec.method == "lora" and spec.task == "scienceqa" and spec.steps == S.steps
            and spec.max_new_tokens == S.scienceqa_answer_tokens and spec.lr == S.lr)
    # on ScienceQA (gpu) the Slake column is there, and its EAS row is chapter 2's kind of run (same fields)
    G = notebook_params("07_methods", profile_values("gpu", "07_methods"))
    assert "Slake" in G.transfer_specs() and G.transfer_specs()["Slake"]["LoRA"].task == "vqa"


@pytest.mark.parametrize("override, message", [
    ({"transfer_tasks": ["slake"]}, "transfer_tasks"),
    ({"transfer_fractions": [0.3]}, "train_fraction 0.3"),
    ({"transfer_fractions": []}, "transfer_fractions"),
    ({"transfer_steps": -1}, "transfer_steps"),
    ({"scienceqa_check": ["prompt_tuning"]}, "scienceqa_check"),
    ({"method_lr": {"eas": 0}}, "method_lr=.*positive learning rates"),
    ({"method_lr": {"prefix": 0.01}}, "method_lr=.*expected a mapping from methods"),
    ({"method_lr": [0.01]}, "method_lr"),
    ({"lr_grid": {"lora": []}}, "lr_grid=.*lists of distinct positive"),
    ({"lr_grid": {"lora": [0.001, 0.001]}}, "lr_grid=.*distinct"),
    ({"lr_grid": {"prefix": [0.001]}}, "lr_grid=.*expected a mapping from methods"),
    ({"lr_grid": {"lora": 0.001}}, "lr_grid"),
    ({"lr_grid": {"eas": [0.001, 0.002]}, "method_lr": {"eas": 0.002}}, r"\['eas'\] are in both lr_grid and method_lr"),
    ({"n_val": 0}, "n_val"),
    ({"n_val": 301}, "n_val=301 is more than the val split's 300 items"),
])
def test_bad_table3_parameters_are_named(override, message):
    values = {**profile_values("cpu-full", "07_methods"), **override}  # cpu-full runs Table 3's AID columns
    with pytest.raises(ParameterError, match=message):
        notebook_params("07_methods", values)


# ----------------------------------------------------------------------------- misspelt keys (issue 20.3)

def profile_copy(tmp_path, **edits):
    """The real profile files in a temporary directory; `edits` maps a profile to (old, new) replacements."""
    import shutil

    from eas.study.profiles import PROFILE_DIR

    folder = tmp_path / "profiles"
    shutil.copytree(PROFILE_DIR, folder)
    for profile, (old, new) in edits.items():
        path = folder / f"{profile.replace('_', '-')}.yaml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
    return folder


def test_a_profile_directory_gives_the_same_values(tmp_path, monkeypatch):
    monkeypatch.setenv("EAS_SCIENCEQA", str(tmp_path))  # the paper profile's release folder (any value)
    folder = profile_copy(tmp_path)
    from eas.study.notebooks import notebook_names

    for profile in PROFILES:
        for name in [*notebook_names(), "bench", "latency"]:
            assert profile_values(profile, name, folder) == profile_values(profile, name)


@pytest.mark.parametrize("profile, old, new, bad", [
    ("smoke", "\n01_base_model:", "\n01_base_modle:", "01_base_modle"),
    ("cpu_full", "\nextends: cpu", "\nextend: cpu", "extend"),
    ("gpu", "\n07_methods:", "\nmethods:", "methods"),
])
def test_unknown_top_level_keys_are_errors(tmp_path, profile, old, new, bad):
    """A misspelt section ran its chapter on defaults; `extend:` dropped every inherited key."""
    folder = profile_copy(tmp_path, **{profile: (old, new)})
    path = folder / f"{profile.replace('_', '-')}.yaml"
    for notebook in ("01_base_model", "02_redundancy"):  # whichever section is asked for
        with pytest.raises(ParameterError, match=f"unknown top-level key '{bad}'") as err:
            profile_values(profile.replace("_", "-"), notebook, folder)
        message = str(err.value)
        assert str(path) in message and "`extends`" in message
        assert all(s in message for s in ("01_base_model", "07_methods", "bench", "latency"))


def test_a_misspelt_section_suggests_the_right_one(tmp_path):
    folder = profile_copy(tmp_path, smoke=("\n01_base_model:", "\n01_base_modle:"))
    with pytest.raises(ParameterError, match="did you mean '01_base_model'"):
        profile_values("smoke", "01_base_model", folder)
    folder = profile_copy(tmp_path / "b", cpu_full=("\nextends: cpu", "\nextend: cpu"))
    with pytest.raises(ParameterError, match="did you mean 'extends'"):
        profile_values("cpu-full", "02_redundancy", folder)


def test_a_section_must_be_a_mapping(tmp_path):
    folder = profile_copy(tmp_path, smoke=("\n01_base_model:", "\n01_base_model: 3\nold_01:"))
    with pytest.raises(ParameterError, match="section '01_base_model' holds 3; expected a mapping"):
        profile_values("smoke", "01_base_model", folder)


def test_one_source_of_defaults_the_dataclasses_are_the_cpu_profile():
    """A notebook's parameters cell holds only `profile`: every value comes from its dataclass, overridden by the
    profile file. The dataclass defaults are the cpu profile, so the two can never disagree."""
    import dataclasses
    import json

    from eas.study.profiles import NOTEBOOK_PARAMS, SOURCE_DIR

    for name in notebook_names():
        defaults = dataclasses.asdict(NOTEBOOK_PARAMS[name]())
        cpu = profile_values("cpu", name)
        assert {k: defaults[k] for k in cpu} == cpu, name
        cell = json.loads((SOURCE_DIR / f"{name}.ipynb").read_text())["cells"][1]
        assert "parameters" in cell["metadata"]["tags"]
        code = [line for line in "".join(cell["source"]).splitlines() if line and not line.startswith("#")]
        assert code == ['profile = "cpu"'], name


def test_parameters_resolve_default_then_profile_then_notebook():
    from eas.study.profiles import parameter_table, resolve_params

    values, source = resolve_params("02_redundancy", {"profile": "smoke", "k": 1})
    assert values["model"] == profile_values("smoke", "02_redundancy")["model"] == "tiny"
    assert source["model"] == "smoke.yaml" and source["k"] == "set in the notebook" and values["k"] == 1
    assert source["parity_margin"] == "default"
    table = parameter_table("02_redundancy", {"profile": "smoke", "k": 1})
    assert table.loc["k", "value"] == "1" and table.loc["k", "from"] == "set in the notebook"
    with pytest.raises(ParameterError, match="k='2' has type str"):
        notebook_params("02_redundancy", {"profile": "smoke", "k": "2"})


def test_rendered_pages_fold_code_and_drop_the_parameter_cells():
    import nbformat

    from eas.study.notebooks import tag_for_reading

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# q"),
        nbformat.v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("show()", metadata={"tags": ["remove-input"]}),
    ])
    tag_for_reading(nb)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags == [[], ["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], ["hide-input"],
                    ["remove-input"]]
