"""EAS: Effective Attention Skipping for multimodal LLMs, as a small library.

Modules, each doing one thing:
    io          where data and caches live; atomic writes
    arch        the one place that knows model internals (layers, attention, MLP, norms)
    mini_llava  the embedded default model: SmolLM2-135M + EfficientNet-Lite0 + an MLP projector
    data        the three downstream tasks in their real file formats
    generate    batched greedy generation with a KV cache
    evaluate    answer parsing and the metric columns of the paper's tables
    skip        skipping MHAs, FFNs or whole layers
    probe       training-free removal probe of single modules
    profiles    papermill parameters per profile (smoke / cpu / gpu), validated
"""

import warnings

# Libraries import tqdm.auto, which warns in Jupyter without ipywidgets; eas uses plain text bars.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
