"""eas.export.lm_eval: lm-evaluation-harness scores an exported EAS model as the study does, at any batch size.

A tiny random LLaMA with two MHAs skipped and random non-zero PIAs (info exchange and router on, so PIA
depends on the prompt), exported with eas.export.pretrained, scored by lm-eval itself (lm_eval.simple_evaluate) on
a multiple-choice and a generate_until task written here as JSONL files (dataset_path: json), offline.
float64 throughout, so "equal" means equal up to summation order.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

lm_eval = pytest.importorskip("lm_eval")  # the dev extra

from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import eas.export.lm_eval  # noqa: E402,F401  registers --model eas
from eas.export import pretrained as export  # noqa: E402
from eas.export.lm_eval import EasLM, score_windows  # noqa: E402
from eas.method import pia  # noqa: E402
from eas.method.skip import SkipSet  # noqa: E402

MC, GEN = "eas_test_mc", "eas_test_gen"
QUESTIONS = ["Which animal says meow?", "Name a pet.", "Which one barks loudly at night when it hears a noise?",
             "Farm?", "What flies over the old red barn every morning in spring?", "And this one?"]
CHOICES = ["cat", "dog", "a small red bird that sings", "cow"]


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    """(the study's model, its export directory)."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.25, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(cfg).double().eval()
    config = pia.PIAConfig(skip_hidden=8, adapt_hidden=4)
    assert config.info_exchange and config.router  # the prompt-dependent path
    pia.attach_pia(model, SkipSet(mha=(0, 2)), config)
    pia.randomise_adapters(model, scale=0.3, seed=1)
    path = export.save_pretrained(model, tmp_path_factory.mktemp("lm_eval") / "ckpt", tokenizer=tokenizer)
    return model, path


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A TaskManager that knows the two local tasks (and the YAML folder, for the CLI)."""
    root = tmp_path_factory.mktemp("tasks")
    mc = [{"question": q, "choices": CHOICES, "answer": i % 4} for i, q in enumerate(QUESTIONS)]
    gen = [{"q": q, "a": "cat"} for q in QUESTIONS[:4]]
    for name, rows in (("mc", mc), ("gen", gen)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = lambda name: (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {root / name}.jsonl\n"  # noqa: E731
                         f"  cache_dir: {root / 'hf_datasets'}\ntest_split: test\n")
    (root / "mc.yaml").write_text(
        f"task: {MC}\n{data('mc')}output_type: multiple_choice\ndoc_to_text: \"{{{{question}}}} Answer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    (root / "gen.yaml").write_text(
        f"task: {GEN}\n{data('gen')}output_type: generate_until\ndoc_to_text: \"{{{{q}}}}\"\ndoc_to_target: a\n"
        "generation_kwargs:\n  until: [\"\\n\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    # include_defaults=False: indexing lm-eval's thousands of built-in task files takes ~10 s
    return TaskManager(include_path=str(root), include_defaults=False), root


@pytest.fixture(scope="module")
def evaluate(exported, tasks):
    """evaluate(model_name, batch_size) -> lm-eval's per-document samples of both tasks, memoised."""
    _, path = exported
    runs = {}

    def run(name: str, batch_size: int) -> dict:
        if (name, batch_size) not in runs:
            out = lm_eval.simple_evaluate(
                model=name, model_args=f"pretrained={path},trust_remote_code=True,dtype=float64,device=cpu",
                tasks=[MC, GEN], task_manager=tasks[0], batch_size=batch_size, log_samples=True,
                verbosity="WARNING")
            runs[name, batch_size] = {t: sorted(s, key=lambda s: s["doc_id"]) for t, s in out["samples"].items()}
        return runs[name, batch_size]

    return run


def loglikelihoods(samples) -> torch.Tensor:
    return torch.tensor([r[0][0] for s in samples[MC] for r in s["resps"]], dtype=torch.float64)


def generations(samples) -> list[str]:
    return [s["resps"][0][0] for s in samples[GEN]]


@torch.no_grad()
def prefill_then_score(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """The study's convention, as its generation runs it (eas.models.generate.prefill, then cached steps): prefill
    the context inside prompt_context (PIA keeps the prompt's mean), then feed the continuation through the
    cache, where each PIA reuses that mean. The bare decoder, as eas's CausalLMTarget calls it."""
    decoder = model.model
    ids = torch.tensor([context])
    mask = torch.ones_like(ids)
    with pia.prompt_context(mask.bool(), mask):
        out = decoder(input_ids=ids, attention_mask=mask, position_ids=torch.arange(len(context))[None],
                      use_cache=True)
    hidden = [out.last_hidden_state[:, -1:]]
    if len(continuation) > 1:
        n = len(context) + len(continuation) - 1
        step = decoder(input_ids=torch.tensor([continuation[:-1]]), attention_mask=torch.ones(1, n, dtype=torch.long),
                       position_ids=torch.arange(len(context), n)[None], cache=out.cache, use_cache=True)
        hidden.append(step.last_hidden_state)
    logprobs = torch.log_softmax(model.lm_head(torch.cat(hidden, 1))[0].double(), -1)
    want = torch.tensor(continuation)
    return float(logprobs.gather(-1, want[:, None]).sum()), bool((logprobs.argmax(-1) == want).all())


def test_eas_scores_do_not_depend_on_the_batch_size(evaluate):
    one, eight = evaluate("eas", 1), evaluate("eas", 8)
    a, b = loglikelihoods(one), loglikelihoods(eight)
    assert len(a) == len(QUESTIONS) * len(CHOICES)
    assert (a - b).abs().max() < 1e-5
    assert generations(one) == generations(eight)
    assert len(set(generations(one))) > 1  # the random model's generations vary: the comparison means something


def test_eas_scores_equal_prefill_then_score(exported, evaluate):
    model, path = exported
    samples = evaluate("eas", 8)
    lm = get_model("eas")(pretrained=str(path), dtype="float64", device="cpu")  # only its tokenisation is used
    assert isinstance(lm, EasLM)
    for s in samples[MC]:
        for (context, continuation), resp in zip(s["arguments"], s["resps"], strict=True):
            ctx, cont = lm._encode_pair(context, continuation)
            ll, greedy = prefill_then_score(model, ctx, cont)
            assert resp[0][0] == pytest.approx(ll, abs=1e-8)
            assert resp[0][1] == greedy


def test_plain_hf_scores_depend_on_the_batch_size(evaluate):
    """What `--model hf` gives for prompt-dependent PIAs (README): it runs context + continuation as one
    unmasked right-padded forward, so padding and the continuation enter PIA's prompt mean."""
    hf1, hf8, eas1 = (loglikelihoods(evaluate("hf", 1)), loglikelihoods(evaluate("hf", 8)),
                      loglikelihoods(evaluate("eas", 1)))
    assert (hf1 - hf8).abs().max() > 1e-2  # padding (other requests' lengths) changes the scores
    assert (hf1 - eas1).abs().max() > 1e-3  # without padding too: the continuation is in its own prompt mean
    assert generations(evaluate("hf", 1)) == generations(evaluate("eas", 1))  # generate() masks: the same


def test_command_line(exported, tasks, capsys, monkeypatch):
    """lm_eval's own CLI (what `python -m eas.export.lm_eval ...` runs) finds `--model eas`."""
    _, path = exported
    import lm_eval.tasks

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", functools.partial(TaskManager, include_defaults=False))
    eas.export.lm_eval.main(["run", "--model", "eas", "--model_args", f"pretrained={path},dtype=float64",
                      "--include_path", str(tasks[1]), "--tasks", MC, "--batch_size", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert MC in out and "acc" in out


def test_score_windows_keep_the_context_as_prompt():
    assert score_windows([1, 2, 3], [4, 5], max_length=16) == ([1, 2, 3, 4], 3)
    # truncated from the left to max_length: the prompt is what remains of the context
    assert score_windows([1, 2, 3, 4, 5], [6, 7, 8], max_length=4) == ([4, 5, 6, 7], 2)
    assert score_windows([1, 2], [3, 4, 5], max_length=3) == ([2, 3, 4], 1)
    with pytest.raises(ValueError, match="maximum length"):
        score_windows([1], [2, 3, 4], max_length=2)
