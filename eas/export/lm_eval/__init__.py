"""lm-evaluation-harness for EAS models: the `eas` model type (an lm_eval HFLM that tells PIA its prompt).

    python -m eas.export.lm_eval --model eas --model_args pretrained=DIR --tasks ... --batch_size 8

(lm_eval's own command line, with this module imported first so that `--model eas` exists; lm_eval finds no
models outside its own package by itself.) From Python, `import eas.export.lm_eval` and then
`lm_eval.simple_evaluate(model="eas", model_args="pretrained=DIR", ...)`.

Why not `--model hf`: a skip-replacing PIA with info exchange or a router averages its input over the
prompt's tokens (eas.method.pia.SkipPIA), and lm-eval's `hf` loglikelihood runs `model(input_ids)` on one
right-padded batch of context + continuation, with no attention mask. The exported model then counts
every column as prompt, so the padding (which depends on the other requests in the batch) and the
continuation being scored both enter the prompt mean: scores change with the batch size and differ
from the study's convention. `EasLM` scores each (context, continuation) as the study and generate()
do: the context is the prompt (PIA averages over its tokens only, padding masked out), and the
continuation is teacher-forced after it, which equals a prefill of the context followed by cached
scoring of the continuation. One forward per batch with a prompt mask computes exactly that, and a
request's score does not depend on what else is in its batch.

Conventions: when lm-eval truncates context + continuation from the left to the model's maximum length,
the prompt is what is left of the context; a rolling loglikelihood (perplexity) window's prompt is its
context part (the prefix token for the first window). generate_until is HFLM's own: it left-pads with an
attention mask, which the exported model already takes as the prompt mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator
from tqdm import tqdm

from eas.models.prompt import prompt_context

__all__ = ["EasLM", "score_windows", "main"]


def score_windows(context: list[int], continuation: list[int], max_length: int) -> tuple[list[int], int]:
    """(input ids, prompt length) for one request: lm-eval's causal window (context + continuation,
    truncated from the left to max_length + 1 tokens, the last one dropped) and how many of its leading
    tokens are context, i.e. PIA's prompt (at least 1, since lm-eval keeps continuations <= max_length)."""
    if not context or not continuation:
        raise ValueError("a loglikelihood request needs a non-empty context and continuation "
                         f"(got {len(context)} and {len(continuation)} tokens).")
    if len(continuation) > max_length:
        raise ValueError(f"the continuation has {len(continuation)} tokens, more than the model's "
                         f"maximum length {max_length}.")
    ids = (context + continuation)[-(max_length + 1):][:-1]
    return ids, len(ids) - len(continuation) + 1


@register_model("eas")
class EasLM(HFLM):
    """HFLM whose loglikelihoods take the context as PIA's prompt (see the module docstring).

    Model args are HFLM's; `trust_remote_code` defaults to True (an EAS export's config.json maps the
    auto classes to its modeling_eas.py, which runs the installed `eas` library)."""

    def __init__(self, pretrained, **kwargs):
        kwargs.setdefault("trust_remote_code", True)
        super().__init__(pretrained, **kwargs)
        if self.backend != "causal":
            raise ValueError(f"the `eas` lm-eval model scores causal LMs; {pretrained!r} loaded as {self.backend}.")

    def _eas_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        with (
            torch.no_grad(),
            torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                           enabled=self.mixed_precision_dtype is not None),
            prompt_context(prompt_mask, attention_mask),
        ):
            return self.model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """(sum of the continuation's log-probabilities, whether it is the greedy continuation) per
        request, in the order given: HFLM's batching (sorted by length, `batch_size` or auto), with an
        attention mask and a prompt mask instead of HFLM's unmasked right-padded forward."""
        re_ord = Collator(requests, sort_fn=lambda req: (-len(req[1] + req[2]), tuple(req[1] + req[2])))
        n = len(re_ord)
        auto = self.batch_size == "auto"
        batch_size = (override_bs or 0) if auto else self.batch_size
        batch_fn = self._batch_scheduler if auto and n > 0 and not override_bs else None
        if batch_fn is not None:
            self.batch_sizes = {}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        res = []
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or (self.rank != 0)),
                    desc="Running loglikelihood requests (eas)")
        for chunk in re_ord.get_batched(n=batch_size, batch_fn=batch_fn):
            windows = [score_windows(ctx, cont, self.max_length) for _, ctx, cont in chunk]
            width = max(len(ids) for ids, _ in windows)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            prompt = torch.zeros(len(chunk), width, dtype=torch.bool)
            for b, (row, n_prompt) in enumerate(windows):
                ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
                mask[b, :len(row)] = 1  # right padding, masked: real tokens never see it
                prompt[b, :n_prompt] = True
            ids, mask, prompt = ids.to(self.device), mask.to(self.device), prompt.to(self.device)
            logprobs = F.log_softmax(self._eas_logits(ids, mask, prompt), dim=-1, dtype=self.softmax_dtype)
            for (key, _, cont), (row, _), lp in zip(chunk, windows, logprobs, strict=True):
                # position t predicts token t + 1: the continuation's tokens are predicted by the last len(cont)
                lp = lp[len(row) - len(cont):len(row)]
                target = torch.tensor(cont, dtype=torch.long, device=lp.device)
                answer = (float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
                res.append(answer)
                if key is not None:  # rolling windows carry no key; loglikelihood_rolling records their sum
                    self.cache_hook.add_partial("loglikelihood", key, answer)
                pbar.update(1)
        pbar.close()
        return re_ord.get_original(res)


def main(argv: list[str] | None = None) -> None:
    """lm_eval's command line (`lm-eval run ...`, or the legacy form without `run`) with `--model eas` registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()
