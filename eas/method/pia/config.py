"""PIAConfig: every design switch of the paper's PIA ablation (Table 6) and its hidden sizes (Table 8)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

MERGE_STRATEGIES = ("per_example", "two_matrix", "static_router", "low_rank")


class PIAConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PIAConfig:
    """Options of the skip-replacing PIA (Eq. 4-7) and of the adaptation PIAs in front of kept attentions.

    skip_hidden     r of the skip-replacing PIAs (Table 8 sweeps 8/16/32/64; paper: 256 LLaVA, 32 LaVIN)
    adapt_hidden    r of the single-path adaptation PIAs on kept attentions; None attaches none
                    (paper: 128 LLaVA, 8 LaVIN)
    info_exchange   second down path averaged over the prompt, f_d2 in Eq. 4 (off = Table 6 "Base")
    router          two up paths mixed by a softmax router, Eq. 5-6 (off = one up path)
    tau             router temperature; the paper gives no value, 10 is the reference code's (LaVIN) default
    frozen_bias     the prompt mean is fixed after prefill (Eq. 11). Off, each answer token uses the running
                    mean over the prompt and the answer so far, in training and decoding alike
    reparam         generation merges the PIAs into the FFN (and q/k/v) after prefill (Table 6 "+ Re-param.")
    merge_strategy  how a batch whose examples have different router weights is merged, see eas.method.reparam.
                    "static_router" (beyond the paper) fixes the router weights per task
                    (eas.method.reparam.calibrate_static_router), so one merged weight serves every prompt.
                    Default "low_rank": the merge kept factored, O(r d_ff) per prompt at any batch size;
                    in the measured runs (chapters 5 and 6) it ties "per_example" (the paper's merge) at
                    batch 1 and is the only exact one that stays faster than the base model at batch 8
    """

    skip_hidden: int = 32
    adapt_hidden: int | None = 8
    info_exchange: bool = True
    router: bool = True
    tau: float = 10.0
    frozen_bias: bool = True
    reparam: bool = True
    merge_strategy: str = "low_rank"

    def __post_init__(self):
        check_hidden("skip_hidden", self.skip_hidden)
        if self.adapt_hidden is not None:
            check_hidden("adapt_hidden", self.adapt_hidden)
        tau = self.tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise PIAConfigError(f"tau must be a finite number > 0 (the softmax temperature), got {tau!r}.")
        if self.merge_strategy not in MERGE_STRATEGIES:
            raise PIAConfigError(
                f"unknown merge_strategy {self.merge_strategy!r}; expected one of {', '.join(MERGE_STRATEGIES)}."
            )
        if self.reparam and self.uses_prompt and not self.frozen_bias:
            raise PIAConfigError(
                "reparam=True needs frozen_bias=True: a prompt mean that changes at every decoded token "
                "cannot be merged into fixed weights (Eq. 11)."
            )

    @property
    def uses_prompt(self) -> bool:
        """Whether the skip-replacing PIA depends on the prompt (and so needs the prompt mask)."""
        return self.info_exchange or self.router

    # --- construction from names (notebook parameters, saved JSON)
    @classmethod
    def from_dict(cls, options: dict) -> "PIAConfig":
        known = option_names()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise PIAConfigError(f"unknown PIA option(s) {unknown}; known options: {', '.join(known)}.")
        return cls(**options)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "PIAConfig":
        return PIAConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def preset(cls, name: str, **changes) -> "PIAConfig":
        """Hidden sizes of the paper's implementation details: 'llava' (256 / 128) or 'lavin' (32 / 8)."""
        if name not in PRESETS:
            raise PIAConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}.")
        return cls.from_dict({**PRESETS[name], **changes})

    @classmethod
    def ablation(cls, row: str, **changes) -> "PIAConfig":
        """One row of Table 6, cumulative as in the paper: base -> info_exchange -> frozen_bias -> reparam."""
        if row not in TABLE6_ROWS:
            raise PIAConfigError(f"unknown Table 6 row {row!r}; expected one of {', '.join(TABLE6_ROWS)}.")
        return cls.from_dict({**TABLE6_ROWS[row], **changes})


def check_hidden(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PIAConfigError(f"{name} must be a positive integer (a hidden size), got {value!r}.")
    return value


def option_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(PIAConfig))


PRESETS = {
    "llava": dict(skip_hidden=256, adapt_hidden=128),
    "lavin": dict(skip_hidden=32, adapt_hidden=8),
}

# "Base" keeps only f_d1 (one down path, one up path: a plain linear bottleneck, mergeable statically).
# "+ Info. Exc." adds f_d2 with its prompt average and the two routed up paths; without a frozen bias the
# average follows the decoded tokens, so it cannot be merged. "+ Frozen bias" fixes it at prefill;
# "+ Re-param." then merges after prefill.
TABLE6_ROWS = {
    "base": dict(info_exchange=False, router=False, frozen_bias=False, reparam=False),
    "info_exchange": dict(info_exchange=True, router=True, frozen_bias=False, reparam=False),
    "frozen_bias": dict(info_exchange=True, router=True, frozen_bias=True, reparam=False),
    "reparam": dict(info_exchange=True, router=True, frozen_bias=True, reparam=True),
}
