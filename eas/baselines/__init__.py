"""The PETL / PCETL methods the paper compares EAS with (Tables 1 and 3), on the same models.

    lora     LoRA (Hu et al. 2022) from peft, on the decoder's linear layers; mergeable (base speed)
    adapter  sequential bottleneck adapter (Sung et al. 2022), one per block; not mergeable
    mam      Mix-and-Match (He et al. 2022): parallel FFN adapter + prefix tuning on attention
    das      DAS (Wu et al. 2023): whole blocks skipped, each replaced by an adapter; adapters on kept blocks
    full     full fine-tuning of everything but the vision encoder
    eas      the paper's method, eas.method.pia.attach_pia (in the registry so notebooks can loop over methods)

One module per method (lora, adapter, mam, das, full), as peft lays out its tuners; their options in
`config`, their modules in `layer`, what is attached in `state`, every method by name in `registry`, and
counting / saving / loading in `checkpoint`. This package's namespace re-exports the public names.

Every `attach_<name>(model, config)` freezes the base, adds the method's modules and returns the
trainable ones; `detach` undoes it. `count_parameters`, `save`, `load` are common to all methods:
a checkpoint is the method's name + config (JSON) and its trainable parameters (safetensors), and
`load` re-attaches the method to a fresh base model before copying the weights in.

Placements ("n" is a block's normalised input):
    adapter  n + up(relu(down(n))) on norm_a(x) in front of each attention (EASBlock.attn_adapter).
             This is the authors' own LLaVA adapter (LLaVA-DAS `adapter_adapt`, hidden 128); with one
             adapter of hidden 128 per block it reproduces the paper's 0.54 % on LLaVA-7B, and it makes
             the Adapter baseline exactly DAS with no layer skipped.
    mam      x + Attn([P_k; K], [P_v; V]) + MLP(n) + s * up(relu(down(n))): learned prefix keys/values
             (post-RoPE, so they carry no position) in front of every kept attention's cache, and a
             parallel adapter beside each MLP (a forward hook on the MLP adds it to its output).
    das      skipped block: x + up(relu(down(norm_a(x)))) (EASBlock.layer_adapter, the block's own
             frozen input norm as "LN"); kept blocks: the sequential adapter above (attn_adapter),
             as in the reference LLaVA-DAS code (dim_replace 256, dim_adapt 128).
Up-projections start at zero, so every untrained adapter is the identity (an untrained DAS is a plain
layer skip). Prefixes cannot start neutral (any prefix takes attention mass); a prefix of length 0 is
exactly the base model.
"""

from eas.baselines.adapter import attach_adapter, clear_slots, sequential_adapters  # noqa: F401
from eas.baselines.checkpoint import (
    # noqa: F401     CONFIG_KEYS,
    count_parameters,
    load,
    randomise,
    read_config,
    save,
    trainable_parameters,
)
from eas.baselines.config import (
    # noqa: F401     FORMAT_VERSION,
    LORA_ADAPTER_NAME,
    AdapterConfig,
    BaselineError,
    DASConfig,
    EASConfig,
    FullConfig,
    LoRAConfig,
    MAMConfig,
)
from eas.baselines.das import attach_das, check_das_k, das_bandit_config  # noqa: F401
from eas.baselines.full import attach_eas, attach_full_finetune  # noqa: F401
from eas.baselines.layer import Bottleneck, Prefix  # noqa: F401
from eas.baselines.lora import attach_lora, lora_layers, merge_lora, unmerge_lora  # noqa: F401
from eas.baselines.mam import attach_mam  # noqa: F401
from eas.baselines.registry import METHODS, Method, attach, get_method, make_config  # noqa: F401
from eas.baselines.state import Attached, attached, begin, check_config, detach, factory_kwargs, finish  # noqa: F401
