"""Notebook parameters: profiles load, bad values fail with a message naming what was wrong."""

import pytest

from eas.notebooks import notebook_names, run_notebook
from eas.profiles import PROFILES, ParameterError, notebook_params, profile_values


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_for_every_notebook(profile):
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


def test_unknown_profile_and_notebook():
    with pytest.raises(ParameterError, match="unknown profile 'fast'"):
        profile_values("fast", "01_base_model")
    with pytest.raises(ParameterError, match="no notebook '99_nothing'"):
        run_notebook("99_nothing", "smoke")
