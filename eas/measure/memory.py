"""How much accelerator memory a fine-tuning run needs, estimated from shapes before anything is loaded.

A 7B run that does not fit fails after minutes of loading, or hours into training when the longest batch
arrives; the chapters print this estimate first (eas.study.experiments.memory_estimate builds it for a spec):

    estimate = training_memory(text_config, trainable=4.2e6, micro_batch=4, seq_len=768, weight_bytes=2)
    estimate.total_gb, estimate.describe()

Terms (bytes):
    weights      every parameter of the frozen model (language model, plus `extra_params`: a vision tower and
                 projector) at `weight_bytes` each (2 for bf16/fp16, 4 for fp32)
    trainable    the trained parameters in fp32 with their gradient and AdamW's two moments: 16 bytes each
    activations  what backward keeps per decoder layer: ~34 bytes per token per hidden unit in 16-bit
                 (Korthikanti et al. 2022, attention scores not kept: PyTorch's SDPA recomputes them), times 2 in
                 fp32; the adapters sit in every layer, so backward runs through all of them. With gradient
                 checkpointing each layer keeps only its input (one activation), and one layer at a time is
                 recomputed in full
    logits       the LM head's output for the answer tokens only (the study's loss), fp32
This is an estimate for planning (allocator slack, CUDA context and fragmentation add 1-3 GB), not a bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from eas.measure.shapes import param_count

GB = 1024**3
ACTIVATION_BYTES_PER_UNIT_16BIT = 34


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    trainable: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits

    @property
    def total_gb(self) -> float:
        return self.total / GB

    def describe(self, budget_gb: float | None = None) -> str:
        parts = ", ".join(f"{name} {getattr(self, name) / GB:.1f} GB"
                          for name in ("weights", "trainable", "activations", "logits"))
        line = f"estimated peak memory {self.total_gb:.1f} GB ({parts})"
        if budget_gb is not None:
            line += (f": fits one {budget_gb:.0f} GB device" if self.total_gb <= budget_gb else
                     f": does NOT fit one {budget_gb:.0f} GB device (turn on gradient_checkpointing, lower "
                     "batch_size and raise grad_accum, or train fewer parameters)")
        return line


def training_memory(config, *, trainable: int, micro_batch: int, seq_len: int, answer_tokens: int = 0,
                    weight_bytes: int = 2, extra_params: int = 0, checkpointing: bool = False) -> MemoryEstimate:
    """The estimate for a LLaMA-shaped decoder with `config` (an HF config or eas.measure.shapes config)."""
    for name, value in (("trainable", trainable), ("micro_batch", micro_batch), ("seq_len", seq_len),
                        ("answer_tokens", answer_tokens), ("extra_params", extra_params)):
        if value < 0 or (name in ("micro_batch", "seq_len") and value < 1):
            raise ValueError(f"{name} must be {'>= 1' if name in ('micro_batch', 'seq_len') else '>= 0'}, "
                             f"got {value!r}.")
    if weight_bytes not in (2, 4):
        raise ValueError(f"weight_bytes must be 2 (bf16/fp16) or 4 (fp32), got {weight_bytes!r}.")
    tokens = micro_batch * seq_len
    per_layer = ACTIVATION_BYTES_PER_UNIT_16BIT * (weight_bytes // 2) * tokens * config.hidden_size
    kept_input = weight_bytes * tokens * config.hidden_size
    activations = (kept_input * config.num_hidden_layers + per_layer if checkpointing
                   else per_layer * config.num_hidden_layers)
    return MemoryEstimate(
        weights=float((param_count(config) + extra_params) * weight_bytes),
        trainable=float(16 * trainable),
        activations=float(activations),
        logits=float(4 * micro_batch * max(answer_tokens, 1) * config.vocab_size),
    )
