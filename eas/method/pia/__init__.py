"""Propagation-of-Information Adapters (PIA), split as peft splits a tuner:

    config   PIAConfig: the options (Table 6 switches, Table 8 hidden sizes)
    context  prompt_context: which tokens are the prompt, for the forward running now
    layer    SkipPIA (Eq. 4-6, replaces a skipped MHA) and AdaptPIA (single path, before a kept MHA)
    model    attach / freeze / save / load
Merging into the base weights lives in eas.method.reparam.
"""

from eas.method.pia.config import MERGE_STRATEGIES, PIAConfig, PIAConfigError, option_names
from eas.method.pia.layer import AdaptPIA, PIAError, PromptState, SkipPIA
from eas.method.pia.model import (
    adapt_adapters,
    adapter_state_dict,
    attach_adapt_pia,
    attach_pia,
    attach_skip_pia,
    count_parameters,
    detach_pia,
    load_adapters,
    named_adapters,
    pia_config,
    randomise_adapters,
    read_adapter_config,
    reset_prompt_state,
    save_adapters,
    skip_adapters,
    trainable_parameters,
)
from eas.models.prompt import current_context, prompt_context
