"""Every inference entry point moves its batch to the model's device (issue 21: a CUDA model was given CPU
batches). Checked without a GPU: a model on the `meta` device computes shapes only, and any CPU tensor that
reaches it raises, so these runs pass only if nothing stays behind on the CPU."""

import pytest
import torch

from eas.models.generate import greedy_generate, prefill
from eas.models.mini_llava import Batch
from eas.study import latency


class MetaTarget(torch.nn.Module):
    """The study's target interface (input ids, mask, image features, cache -> hidden, cache) on the meta device,
    failing on any input that is not there. transformers' own mask code reads values (.item()), so a real model
    cannot run on meta: this stands in for "a model on another device than the batch"."""

    eos_token_id = 1

    def __init__(self):
        super().__init__()
        self.lm_head = torch.nn.Linear(8, 64, device="meta")
        self.seen = []

    def forward(self, input_ids, attention_mask, image_features=None, cache=None, use_cache=False):
        for t in (input_ids, attention_mask):
            assert t.device.type == "meta", f"a {t.device.type} tensor reached a model on meta"
        self.seen.append(tuple(input_ids.shape))
        return torch.zeros(*input_ids.shape, 8, device="meta"), cache


def _meta_target():
    return MetaTarget()


def _cpu_batch():
    ids = torch.randint(2, 64, (2, 5))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    return Batch(ids, mask, mask.bool())


def test_batch_to_moves_every_tensor_and_is_a_no_op_in_place():
    batch = _cpu_batch()
    assert batch.to("cpu") is batch
    moved = batch.to("meta")
    assert {t.device.type for t in (moved.input_ids, moved.attention_mask, moved.prompt_mask)} == {"meta"}


def test_generation_and_timing_run_on_the_models_device():
    target = _meta_target()
    token, _ = prefill(target, _cpu_batch())
    assert token.device.type == "meta"
    for use_cache in (True, False):
        out = greedy_generate(target, _cpu_batch(), 3, ignore_eos=True, use_cache=use_cache)
        assert out.tokens.device.type == "meta" and out.tokens.shape == (2, 3)
    assert target.seen[1:4] == [(2, 5), (2, 1), (2, 1)]  # greedy_generate: prefill, then decode steps


def test_the_timed_model_is_the_named_one(tmp_path):
    """latency.timing_model (05, make bench) times the model its name says; a name it does not know is an error,
    never a silent SmolLM2 (issue 21: every name but "tiny" used to time SmolLM2 on the CPU)."""
    assert type(latency.timing_model("tiny")).__name__ == "MiniLlava"
    with pytest.raises(ValueError, match="unknown model 'llava-13b'"):
        latency.timing_model("llava-13b")
    with pytest.raises(ValueError, match="unknown model|model folder .* has no config.json"):
        latency.timing_model(str(tmp_path))  # a folder that is no LLaVA checkpoint
