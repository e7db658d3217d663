"""Randomly initialised language models at true scale, for latency and FLOP measurements.

A matmul costs the same whatever numbers are in it, so a LLaMA with random weights times exactly like
the trained one of the same shape. That lets the speed-up of skipping be measured at the scale the
paper reports (LLaVA-1.5-7B's language model) without a model hub:

    model = random_llama("llava-1.5-7b", torch.bfloat16, "cuda")      # GPU only: 13.5 GB of bf16
    batch = llava_prompt(model.config.vocab_size, batch=1, device="cuda")
    time_generation(CausalLMTarget(model), batch, new_tokens=64)      # eas.measure.cost

Shapes (all LLaMA blocks, no biases, SiLU-gated MLP):

    llama-1b        = tinyllama-1.1b (the default CPU-scale model; chosen over LLaMA-3.2-1B because it
                      keeps LLaMA-2's 32k vocabulary, so the LM head's share of decode time resembles
                      LLaVA-1.5-7B's rather than being dominated by a 128k-row head)
    tinyllama-1.1b  22 layers, d=2048, d_ff=5632, 32 heads / 4 KV heads, vocab 32000, untied  -> 1.100 B
    llama-3.2-1b    16 layers, d=2048, d_ff=8192, 32 heads / 8 KV heads, vocab 128256, tied -> 1.236 B
    llava-1.5-7b    the LLaMA-2-7B / Vicuna LM of LLaVA-1.5: 32 layers, d=4096, d_ff=11008,
                    32 heads / 32 KV heads, vocab 32064, untied                              -> 6.740 B

Only the language model is built. LLaVA-1.5's vision tower (CLIP ViT-L/14-336) and projector run once
per image, identically in every EAS variant; they add a constant to prefill and are left out here.
"""

from __future__ import annotations

import contextlib

import torch

from eas.models.mini_llava import Batch

SHAPES: dict[str, dict] = {
    "tiny-llama": dict(  # seconds: for tests and the smoke profile
        num_hidden_layers=6, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True, rope_theta=10000.0,
        max_position_embeddings=4096, rms_norm_eps=1e-5,
    ),
    "smollm2-135m": dict(  # the embedded mini-LLaVA's language model
        num_hidden_layers=30, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
        max_position_embeddings=8192, rms_norm_eps=1e-5,
    ),
    "tinyllama-1.1b": dict(
        num_hidden_layers=22, hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0,
        max_position_embeddings=2048, rms_norm_eps=1e-5,
    ),
    "llama-3.2-1b": dict(
        num_hidden_layers=16, hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
        max_position_embeddings=8192, rms_norm_eps=1e-5,
    ),
    "llava-1.5-7b": dict(
        num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32064, tie_word_embeddings=False, rope_theta=10000.0,
        max_position_embeddings=4096, rms_norm_eps=1e-5,
    ),
}
ALIASES = {"llama-1b": "tinyllama-1.1b", "llama-7b": "llava-1.5-7b"}

# LLaVA-1.5's prompt: 576 visual tokens (24x24 CLIP-336 patches) plus a ScienceQA-style question.
LLAVA_VISUAL_TOKENS = 576
LLAVA_TEXT_TOKENS = 60


def shape_names() -> tuple[str, ...]:
    return tuple(SHAPES) + tuple(ALIASES)


def shape_config(shape: str, **overrides):
    """The LlamaConfig of a named shape; `overrides` scale it down (tests) or change it."""
    from transformers import LlamaConfig

    name = ALIASES.get(shape, shape)
    if name not in SHAPES:
        raise KeyError(f"unknown shape {shape!r}; expected one of {', '.join(shape_names())}.")
    kw = dict(SHAPES[name], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kw.update(overrides)
    return LlamaConfig(**kw)


def param_count(config) -> int:
    """Parameters of a LLaMA decoder with `config`, counted from the shape (embeddings included)."""
    d, f, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d  # q,k,v,o + gate,up,down + two RMSNorms
    head = 0 if config.tie_word_embeddings else V * d
    return V * d + head + L * per_layer + d


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@torch.no_grad()
def random_llama(shape: str, dtype: torch.dtype = torch.float32, device="cpu", seed: int = 0, std: float = 0.02,
                 **overrides):
    """A LlamaForCausalLM of the named shape with N(0, std) weights (norms at 1), built cheaply.

    The default init (kaiming on ~1e9 numbers, then the model's own _init_weights) takes minutes on a
    CPU; here the parameters are allocated directly in `dtype` on `device` with every init function
    patched out (transformers' no_init_weights), then filled once with normal_ on the device."""
    from transformers import LlamaForCausalLM
    from transformers.initialization import no_init_weights

    config = shape_config(shape, **overrides)
    device = torch.device(device)
    with torch.device(device), _default_dtype(dtype), no_init_weights():
        model = LlamaForCausalLM(config)
    # no_init_weights also patches out init_weights, which is where the LM head gets tied to the
    # embeddings; without this a tied shape (LLaMA-3.2-1B) would carry a second 128k x d matrix.
    if config.tie_word_embeddings:
        model.tie_weights()
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1:  # RMSNorm gains: 1, as after real training they are O(1)
            p.fill_(1.0)
        else:
            p.normal_(0.0, std, generator=gen)
    return model.eval().requires_grad_(False)


def llava_prompt(vocab_size: int, batch: int = 1, visual_tokens: int = LLAVA_VISUAL_TOKENS,
                 text_tokens: int = LLAVA_TEXT_TOKENS, seed: int = 0, device="cpu") -> Batch:
    """A batch of random token ids as long as a LLaVA-1.5 prompt (576 visual + ~60 text tokens).

    The visual tokens are plain ids here: in LLaVA their embeddings come from the projector instead of
    the embedding table, which changes nothing in the language model's cost."""
    gen = torch.Generator().manual_seed(seed)
    T = visual_tokens + text_tokens
    ids = torch.randint(3, vocab_size, (batch, T), generator=gen).to(device)
    mask = torch.ones(batch, T, dtype=torch.long, device=device)
    return Batch(ids, mask, mask.bool())


# ----------------------------------------------------------------------------- roofline bounds

def module_params(config) -> dict[str, int]:
    """Weights per decoder layer (attention q,k,v,o; MLP gate,up,down) and of the LM head."""
    d, f = config.hidden_size, config.intermediate_size
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    return {"attn": 2 * d * q + 2 * d * kv, "mlp": 3 * d * f, "head": config.vocab_size * d}


def decode_bound(config, k: int, context: int = LLAVA_VISUAL_TOKENS + LLAVA_TEXT_TOKENS, batch: int = 1,
                 bytes_per: int = 2) -> dict:
    """The decode speed-up skipping k MHAs can give where decoding is bound by memory traffic.

    At small batch one decode step reads every weight once (the embedding table: one row per token,
    left out) and each kept attention's KV cache, while its arithmetic is a few FLOPs per byte, far under
    a GPU's (or a CPU's) balance point. Time is then proportional to bytes read, and skipping k MHAs
    removes k layers' attention weights and KV caches: bound = bytes / (bytes - removed)."""
    m, L = module_params(config), config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_layer = 2 * context * batch * config.num_key_value_heads * hd
    weights = L * (m["attn"] + m["mlp"]) + m["head"]
    total = (weights + L * kv_layer) * bytes_per
    removed = k * (m["attn"] + kv_layer) * bytes_per
    return {"weight_bytes": weights * bytes_per, "attn_weight_share": L * m["attn"] / weights,
            "kv_bytes": L * kv_layer * bytes_per, "removed_bytes": removed, "bound": total / (total - removed)}


def prefill_bound(config, k: int, prompt_len: int = LLAVA_VISUAL_TOKENS + LLAVA_TEXT_TOKENS) -> dict:
    """The prefill speed-up skipping k MHAs can give where prefill is bound by arithmetic: FLOPs / (FLOPs -
    removed), per prompt token (the T x T attention square as SDPA computes it; the LM head runs once)."""
    m, L = module_params(config), config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn = 2 * m["attn"] + 4 * prompt_len * config.num_attention_heads * hd  # per token: projections + scores
    total = L * (attn + 2 * m["mlp"])
    return {"attn_flop_share": L * attn / total, "bound": total / (total - k * attn)}


def speedups_vs_bound(speedups: dict, shape: str = "llava-1.5-7b", k: int = 12, bytes_per: int = 2):
    """Each measured speed-up of `speedups` ({claim: (speed-up, what it compares)}, e.g. the paper's, from
    eas.study.paper.shapes_speedups) beside the roofline bound of skipping k MHAs (decode and prefill, the
    larger of the two binds a whole sample): `excess` > 1 is speed-up that skipping alone cannot give,
    so the comparison must also remove something else (unmerged adapter branches, other overheads)."""
    import pandas as pd

    config = shape_config(shape)
    dec, pre = decode_bound(config, k, bytes_per=bytes_per), prefill_bound(config, k)
    bound = max(dec["bound"], pre["bound"])
    rows = [{"claim": name, "speedup": x, "compares": what, "decode_bound": dec["bound"], "prefill_bound": pre["bound"],
             "fits": x <= bound * 1.01, "excess": x / bound} for name, (x, what) in speedups.items()]
    return pd.DataFrame(rows).set_index("claim")
