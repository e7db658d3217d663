"""The PIA modules. Both are linear in their input, which is what lets eas.method.reparam merge them.

Conventions: inputs are (B, T, d); an adapter returns the delta, used by EASBlock as n + adapter(n).
Weights follow nn.Linear, (out, in); the paper's W_d1 (d x r) is `down1.weight.T`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eas.method.pia.config import PIAConfig, check_hidden
from eas.models.prompt import current_context


class PIAError(RuntimeError):
    pass


def zero_linear(fan_in: int, fan_out: int, **kw) -> nn.Linear:
    # Zero up-projections make an untrained adapter return exactly 0: the model starts as the plain skip.
    lin = nn.Linear(fan_in, fan_out, **kw)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


@dataclass
class PromptState:
    """What a PIA keeps per example from the last full forward, for cached decoding."""

    total: torch.Tensor  # (B, d) sum of n over the tokens the mean covers
    count: torch.Tensor  # (B, 1) how many tokens that is

    def mean(self) -> torch.Tensor:
        return self.total / self.count


class AdaptPIA(nn.Module):
    """Single-path adaptation PIA in front of a kept attention: n -> up(down1(n)) (f_d1 only)."""

    def __init__(self, d: int, hidden: int, **kw):
        super().__init__()
        check_hidden("adapt_hidden", hidden)
        self.down1 = nn.Linear(d, hidden, **kw)
        self.up1 = zero_linear(hidden, d, **kw)

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        return self.up1(self.down1(n))

    def linear_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Wd (d, r), Wu (r, d), bp (d,)) with adapter(n) = n @ Wd @ Wu + bp."""
        bp = self.up1(self.down1.bias)
        return self.down1.weight.T, self.up1.weight.T, bp


class SkipPIA(nn.Module):
    """Skip-replacing PIA (Eq. 4-6) on the FFN's normalised input n = norm_f(x):

        m      = mean of n over the prompt's tokens                            (B, 1, d)
        h      = down1(n) + down2(m)                                           (B, T, r)
        alpha  = softmax(router(m) / tau)                                      (B, 1, 2)
        pia(n) = alpha1 up1(h) + alpha2 up2(h)

    The router reads the prompt mean of n rather than of the raw residual x: n is what this adapter
    sees (the n -> delta contract), it is scale-normalised so the router logits do not grow with
    depth, and m is the same vector down2 averages, so one per-example state serves both.
    Averaging n before down2 equals averaging down2(n) (down2 is affine), and is cheaper.
    """

    def __init__(self, d: int, config: PIAConfig, **kw):
        super().__init__()
        r = config.skip_hidden
        self.config = config
        self.down1 = nn.Linear(d, r, **kw)
        self.down2 = nn.Linear(d, r, **kw) if config.info_exchange else None
        self.up1 = zero_linear(r, d, **kw)
        self.up2 = zero_linear(r, d, **kw) if config.router else None
        # The router keeps nn.Linear's random init: with zero up-paths and equal weights alpha1 = alpha2,
        # up1 and up2 would get equal gradients forever and never differ.
        self.router = nn.Linear(d, 2, **kw) if config.router else None
        # A task-level router (merge_strategy "static_router"): fixed (2,) weights once calibrated.
        # A buffer, so it is saved and loaded with the adapter.
        self.register_buffer("static_alpha", None)
        self.state: PromptState | None = None

    # --- the function
    def forward(self, n: torch.Tensor) -> torch.Tensor:
        m = self.prompt_mean(n) if self.config.uses_prompt else None
        h = self.down1(n)
        if self.down2 is not None:
            h = h + self.down2(m)
        if self.router is None:
            return self.up1(h)
        alpha = self.route(m)
        # alpha1 up1(h) + alpha2 up2(h) as one product, [a1 h, a2 h, a1, a2] @ [Wu1; Wu2; bu1; bu2]:
        # each up path writes a (B, T, d) tensor, so two of them plus the scaling and the sum cost
        # ~8% of a 1B prefill at batch 8 on CPU, about as much as the skipped MHAs save.
        x = torch.cat([alpha[..., :1] * h, alpha[..., 1:] * h, alpha.expand(*h.shape[:-1], 2)], dim=-1)
        return F.linear(x, self.up_weight())

    def up_weight(self) -> torch.Tensor:
        """(d, 2r + 2): both up paths and their biases side by side, as forward's one product uses them."""
        return torch.cat([self.up1.weight, self.up2.weight, self.up1.bias[:, None], self.up2.bias[:, None]], dim=1)

    def route(self, m: torch.Tensor) -> torch.Tensor:
        if self.static_alpha is not None:
            return self.static_alpha.to(m.dtype).expand(*m.shape[:-1], 2)
        return F.softmax(self.router(m) / self.config.tau, dim=-1)

    def hidden_bias(self) -> torch.Tensor:
        """h0 = bd1 + down2(prompt mean), (B, r): the per-example part of the merged bias."""
        rows = self.state.total.shape[0] if self.state is not None else 1
        h0 = self.down1.bias.expand(rows, -1)
        if self.down2 is not None:
            h0 = h0 + self.down2(self.state.mean())
        return h0

    # --- the prompt mean
    def prompt_mean(self, n: torch.Tensor) -> torch.Tensor:
        """(B, 1, d) with a frozen bias, else (B, T, d) running means. Records state for decoding."""
        ctx = current_context()
        if ctx is not None and ctx.prompt_mask.shape == n.shape[:2]:
            return self._mean_full(n, ctx)
        return self._mean_incremental(n)

    def _mean_full(self, n, ctx) -> torch.Tensor:
        prompt = ctx.prompt_mask[..., None].to(device=n.device, dtype=n.dtype)
        count = prompt.sum(1)  # (B, 1)
        if (count == 0).any():
            rows = (count[:, 0] == 0).nonzero().flatten().tolist()
            raise PIAError(f"rows {rows} have no prompt tokens: the prompt mean is undefined.")
        total = torch.bmm(prompt.transpose(1, 2), n)[:, 0]  # (B, d), without a (B, T, d) temporary
        if self.config.frozen_bias:
            self.state = PromptState(total.detach(), count)
            return (total / count)[:, None]
        # Running mean: each answer token adds itself; prompt and padding positions see the prompt mean.
        answer = ctx.answer_mask[..., None].to(device=n.device, dtype=n.dtype)
        totals = total[:, None] + (n * answer).cumsum(1)
        counts = count[:, None] + answer.cumsum(1)
        self.state = PromptState(totals[:, -1].detach(), counts[:, -1])
        return totals / counts

    def _mean_incremental(self, n) -> torch.Tensor:
        if self.state is None:
            raise PIAError(
                "PIA needs the prompt mask: run full-sequence forwards inside "
                "eas.method.pia.prompt_context(batch.prompt_mask, batch.attention_mask) "
                "(answer_loss, generate.prefill and MiniLlava(..., prompt_mask=...) do this); "
                "cached decode steps then reuse the prompt mean kept from prefill."
            )
        if self.state.total.shape[0] != n.shape[0]:
            raise PIAError(
                f"decode batch has {n.shape[0]} rows but the last prefill had {self.state.total.shape[0]}; "
                "run the prompt through the model (inside prompt_context) first."
            )
        if self.config.frozen_bias:
            return self.state.mean()[:, None]
        steps = torch.arange(1, n.shape[1] + 1, dtype=n.dtype, device=n.device)
        totals = self.state.total[:, None] + n.cumsum(1)
        counts = self.state.count[:, None] + steps[None, :, None]
        self.state = PromptState(totals[:, -1].detach(), counts[:, -1])
        return totals / counts

    # --- the linear form after prefill (Eq. 8-13), per example
    def linear_form(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(alpha1 (B,) or None without router, bp (B, d)) with pia(n) = n @ Wd1 @ Wu(alpha) + bp."""
        self._check_mergeable()
        h0 = self.hidden_bias()
        m = self.state.mean() if self.state is not None else None
        if self.router is None:
            return None, self.up1(h0)
        alpha = self.route(m)
        bp = alpha[:, :1] * self.up1(h0) + alpha[:, 1:] * self.up2(h0)
        return alpha[:, 0], bp

    def merge_inputs(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(alpha1 (B,) or None without router, h0 (B, r)): all the factored merge needs from the prompt,
        without linear_form's (B, d) bias."""
        self._check_mergeable()
        alpha1 = None if self.router is None else self.route(self.state.mean())[:, 0]
        return alpha1, self.hidden_bias()

    def _check_mergeable(self) -> None:
        if self.config.uses_prompt and not self.config.frozen_bias:
            raise PIAError("a PIA without a frozen bias (Eq. 11) cannot be re-parameterised.")
        if self.config.uses_prompt and self.state is None:
            raise PIAError("no prefill state to merge: run the prompt (inside prompt_context) first.")

    def reset_state(self) -> None:
        self.state = None
