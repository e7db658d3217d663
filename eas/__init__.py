"""EAS: Effective Attention Skipping for multimodal LLMs, as a small library.

Modules, each doing one thing:
    io          where data and caches live; atomic writes
    arch        the one place that knows model internals (layers, attention, MLP, norms)
    mini_llava  the embedded default model: SmolLM2-135M + EfficientNet-Lite0 + an MLP projector
    llava       LLaVA-1.5 (transformers) behind the same interface
    models      building the study's models by name; the projector's stage-1 alignment (align)
    data        the three downstream tasks in their real file formats
    generate    batched greedy generation with a KV cache
    evaluate    answer parsing and the metric columns of the paper's tables
    runs        datasets prepared by their parameters; a model scored on a task
    skip        skipping MHAs, FFNs or whole layers
    pia         Propagation-of-Information Adapters (config / context / layer / model)
    reparam     merging PIAs into the FFN (and q/k/v) after prefill
    export      EAS models as transformers directories (save_pretrained / from_pretrained, generate)
    hf          the transformers classes behind them (modeling_eas.py, copied into each export)
    baselines   LoRA (peft), Adapter, MAM, DAS, full fine-tuning
    train       parameter-efficient training on Accelerate, with checkpoints and resume
    bandit      the k-armed bandit redundancy search
    selectors   which modules to skip: random, last-k, attention drop, block influence, greedy removal, bandit
    experiments one fine-tuning experiment -> one tidy results row (resumable, never repeated)
    stats       paired comparisons of two methods on the same items, over seeds; verdicts
    probe       training-free removal probe of single modules
    measure     latency (prefill / merge / decode), FLOPs, memory; shapes: true-scale random models
    latency     the latency suite: every method side by side, at several scales
    bench       `make bench`
    results     result tables keyed by their parameters
    profiles    papermill parameters per profile (smoke / cpu / cpu-full / gpu), validated
    cli         `python -m eas search | finetune | evaluate | export`
"""

import warnings

# Libraries import tqdm.auto, which warns in Jupyter without ipywidgets; eas uses plain text bars.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

# What a result depends on; printed by every notebook (eas.profiles.notebook_params) and kept in the
# executed copies' metadata (eas.notebooks), so a figure can be traced to the stack that made it.
STACK = ("torch", "transformers", "peft", "accelerate", "safetensors", "numpy", "pandas", "papermill")


def versions() -> dict[str, str]:
    """Versions of eas, Python and the libraries in STACK, and the device torch computes on."""
    import platform
    from importlib import metadata

    out = {"eas": __version__, "python": platform.python_version()}
    for name in STACK:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    import torch

    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return out


def versions_line() -> str:
    return " | ".join(f"{k} {v}" for k, v in versions().items())
