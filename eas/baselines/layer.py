"""The baselines' own modules: a bottleneck adapter and learned attention prefixes."""

from __future__ import annotations

import torch
from torch import nn

from eas.method.pia.layer import zero_linear


class Bottleneck(nn.Module):
    """scale * up(relu(down(norm(x)))), a delta. Up starts at zero: an untrained adapter adds nothing.

    `norm` (DAS's skip adapter) is the block's own frozen input norm; it is kept outside the
    registered modules so the adapter's parameters and checkpoint are its own weights only."""

    def __init__(self, d: int, hidden: int, scale: float = 1.0, norm: nn.Module | None = None, **kw):
        super().__init__()
        self.down = nn.Linear(d, hidden, **kw)
        self.up = zero_linear(hidden, d, **kw)
        self.scale = scale
        self._norm = (norm,)  # a tuple hides it from nn.Module's registration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self._norm[0]
        n = norm(x) if norm is not None else x
        # fp32 beside a 16-bit base (eas.models.arch.adapter_factory_kwargs): computed in its own dtype, returned in x's
        h = self.up(torch.relu(self.down(n.to(self.down.weight.dtype)))).to(x.dtype)
        return h if self.scale == 1.0 else self.scale * h

    def extra_repr(self) -> str:
        return f"scale={self.scale}, norm={'block input norm' if self._norm[0] is not None else None}"


class Prefix(nn.Module):
    """Learned keys and values (kv_heads, length, head_dim) put in front of one attention's cache."""

    def __init__(self, kv_heads: int, length: int, head_dim: int, **kw):
        super().__init__()
        # Small random init: equal (e.g. zero) keys would give every prefix slot the same attention
        # weight and the same gradient, and a zero prefix is not neutral anyway (it takes softmax mass).
        self.keys = nn.Parameter(torch.randn(kv_heads, length, head_dim, **kw) * 0.02)
        self.values = nn.Parameter(torch.randn(kv_heads, length, head_dim, **kw) * 0.02)

    def expanded(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[None].expand(batch, -1, -1, -1), self.values[None].expand(batch, -1, -1, -1)
