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
    baselines   LoRA (peft), Adapter, MAM, DAS, full fine-tuning
    train       parameter-efficient training on Accelerate, with checkpoints and resume
    bandit      the k-armed bandit redundancy search
    selectors   which modules to skip: random, last-k, attention drop, block influence, bandit
    experiments one fine-tuning experiment -> one tidy results row (resumable, never repeated)
    probe       training-free removal probe of single modules
    measure     latency (prefill / merge / decode), FLOPs, memory; shapes: true-scale random models
    latency     the latency suite: every method side by side, at several scales
    bench       `make bench`
    results     result tables keyed by their parameters
    profiles    papermill parameters per profile (smoke / cpu / gpu), validated
"""

import warnings

# Libraries import tqdm.auto, which warns in Jupyter without ipywidgets; eas uses plain text bars.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
