"""The environment the study promises: pinned versions, and transformers' current API without deprecations."""

import re
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch

import eas
from eas.method.pia import PIAConfig, attach_pia, randomise_adapters
from eas.method.skip import SkipSet
from eas.models import generate
from eas.models.mini_llava import MiniLlava, tiny_language_model

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_lock_pins_every_direct_dependency_as_installed():
    pins = locked()
    requires = metadata.requires("eas") or []
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r}
    for name in sorted(names - {"torch"}):  # torch: the Makefile pins the CPU build, GPU machines keep theirs
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert key in pins, f"{name} is a dependency of eas but is not pinned in requirements.lock"
        assert metadata.version(name) == pins[key], f"{name} {metadata.version(name)} installed, {pins[key]} locked"


def test_conda_environment_installs_through_the_lock():
    assert "-c requirements.lock" in (ROOT / "environment.yml").read_text()


def test_deprecated_transformers_arguments_fail_the_suite():
    # pyproject.toml's filterwarnings turns this FutureWarning into an error; if it did not, the next
    # test's silence would prove nothing.
    lm = tiny_language_model(layers=2)
    with pytest.raises(FutureWarning, match="past_key_values"):
        lm(torch.tensor([[1, 2, 3]]), past_key_values=None, use_cache=True)


def test_eas_generation_raises_no_warning(tokenizer):
    model = MiniLlava(tiny_language_model(layers=4), tokenizer).eval()
    attach_pia(model, SkipSet(mha=(0, 2)), PIAConfig(skip_hidden=4, adapt_hidden=4))
    randomise_adapters(model)
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = (ids != 0).long()
    batch = eas.models.mini_llava.Batch(ids, mask, mask.bool())
    from eas.method.reparam import merge_after_prefill

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate.greedy_generate(model, batch, 4, ignore_eos=True, after_prefill=merge_after_prefill)


def test_versions_names_the_pinned_stack():
    text = eas.versions_line()
    for name in ("eas", "torch", "transformers", "peft", "accelerate", "python"):
        assert name in text
    assert metadata.version("transformers") in text
