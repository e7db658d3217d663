"""EAS: Effective Attention Skipping for multimodal LLMs, as a small library.

The library is in layers; each imports only from the layers below it (tests/test_layers.py checks):

    core      io (paths, atomic writes), results (tables keyed by their parameters)
    data      the tasks in their real file formats (scienceqa, vqa, classification), answer parsing and
              the metric columns of the paper's tables (evaluate)
    models    arch (the one module that knows model internals), mini_llava, llava, zoo (models by name),
              align, generate (batched greedy decoding with a KV cache), train (Accelerate)
    method    EAS itself: skip, pia (config / context / layer / model), reparam (the merge after prefill),
              bandit (the redundancy search), selectors, probe
    baselines LoRA (peft), Adapter, MAM, DAS, full fine-tuning
    export    EAS models as transformers directories with generate(); an lm-evaluation-harness model
    measure   cost (time, FLOPs, memory), latency (every method side by side), workload, shapes
    study     experiments, runs, stats, profiles, notebooks (runner), cli (`python -m eas`), bench

ARCHITECTURE.md at the repository's root says why, and how to add a baseline, a model family or a chapter.
"""

import warnings

from eas import _legacy

# Libraries import tqdm.auto, which warns in Jupyter without ipywidgets; eas uses plain text bars.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

_legacy.install()

# What a result depends on; printed by every notebook (eas.study.profiles.notebook_params) and kept in the
# executed copies' metadata (eas.study.notebooks), so a figure can be traced to the stack that made it.
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
