"""The baselines' options: one frozen dataclass per method, validated, JSON round-trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from eas.method.pia import PIAConfig
from eas.method.pia.config import check_hidden
from eas.models import arch

FORMAT_VERSION = 1
LORA_ADAPTER_NAME = "default"


class BaselineError(ValueError):
    pass


class _Config:
    """JSON round trip shared by the method configs (tuples come back from JSON as lists)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BaselineError(f"unknown {cls.__name__} option(s) {unknown}; known: {', '.join(sorted(known))}.")
        return cls(**options)

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})


def _check_hidden(name: str, value) -> int:
    try:
        return check_hidden(name, value)
    except ValueError as err:
        raise BaselineError(str(err)) from None


@dataclass(frozen=True)
class LoRAConfig(_Config):
    """r 16 on every linear layer of the decoder gives the paper's ~0.6 % on LLaVA-7B (Table 1: 0.62 %)."""

    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = arch.ATTENTION_LINEARS + arch.MLP_LINEARS
    dropout: float = 0.0

    def __post_init__(self):
        _check_hidden("r (the LoRA rank)", self.r)
        object.__setattr__(self, "targets", tuple(self.targets))
        allowed = arch.ATTENTION_LINEARS + arch.MLP_LINEARS
        bad = [t for t in self.targets if t not in allowed]
        if not self.targets or bad:
            raise BaselineError(f"LoRA targets {list(self.targets)} must be a non-empty subset of {list(allowed)}.")
        if not 0 <= self.dropout < 1:
            raise BaselineError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")


@dataclass(frozen=True)
class AdapterConfig(_Config):
    hidden: int = 128  # the paper's LLaVA adapters (and LLaVA-DAS dim_adapt)

    def __post_init__(self):
        _check_hidden("hidden (the adapter bottleneck)", self.hidden)


@dataclass(frozen=True)
class MAMConfig(_Config):
    """He et al.'s MAM uses a scale of 4 on the parallel adapter. The paper reports MAM with the same
    updated-parameter share as Adapter (0.54 %), which a hidden size of 128 and a short prefix match."""

    hidden: int = 128
    scale: float = 4.0
    prefix_len: int = 10

    def __post_init__(self):
        _check_hidden("hidden (the parallel adapter bottleneck)", self.hidden)
        p = self.prefix_len
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise BaselineError(f"prefix_len must be an integer >= 0 (prefix tokens per attention), got {p!r}.")


@dataclass(frozen=True)
class DASConfig(_Config):
    """layers: the skipped blocks (chosen by the bandit, kind "layer", or a selector).
    all_layers: put both adapters in every block, so that any block can be skipped while training
    with random / sampled skip sets (DAS's warm-up and search); attach again with all_layers=False
    for the final fine-tuning of the chosen set."""

    layers: tuple[int, ...] = ()
    layer_hidden: int = 256  # LLaVA-DAS dim_replace
    kept_hidden: int | None = 128  # LLaVA-DAS dim_adapt; None: no adapters on kept blocks
    all_layers: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(sorted(int(i) for i in self.layers)))
        _check_hidden("layer_hidden (the skip adapter bottleneck)", self.layer_hidden)
        if self.kept_hidden is not None:
            _check_hidden("kept_hidden (the kept-block adapter bottleneck)", self.kept_hidden)


@dataclass(frozen=True)
class FullConfig(_Config):
    pass


@dataclass(frozen=True)
class EASConfig(_Config):
    """EAS as a registry entry: the skipped MHAs and the PIA options."""

    mha: tuple[int, ...] = ()
    pia: PIAConfig = field(default_factory=lambda: PIAConfig.preset("llava"))

    def __post_init__(self):
        object.__setattr__(self, "mha", tuple(sorted(int(i) for i in self.mha)))
        if isinstance(self.pia, dict):
            object.__setattr__(self, "pia", PIAConfig.from_dict(self.pia))
