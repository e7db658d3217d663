"""Layer 4b, EAS models as transformers models:

    pretrained   save_pretrained / load_pretrained: a model with its skips, PIAs and merge strategy as a
                 transformers directory that AutoModelForCausalLM (or ...ImageTextToText) loads and generates with
    config       the `eas` section of config.json: fields, validation, the checkpoint's file names
    checkpoint   a checkpoint directory's files checked against its config before loading
    modeling_eas the model classes; copied into each checkpoint, loaded with trust_remote_code=True
    lm_eval      an lm-evaluation-harness model that scores an export as the study does (python -m eas.export.lm_eval)

The package's namespace re-exports `pretrained`'s public functions: `eas.export.save_pretrained(...)`.
"""

from eas.export.pretrained import (  # noqa: F401
    FoldError,
    check_foldable,
    export_adapters,
    load_mini_llava,
    load_pretrained,
    model_class,
    read_config,
    save_pretrained,
)
