"""EAS models as transformers models (what eas.export writes and loads):

    config       the `eas` section of config.json: fields, validation, the checkpoint's file names
    checkpoint   a checkpoint directory's files checked against its config before loading
    modeling_eas the model classes; copied into each checkpoint, loaded with trust_remote_code=True
"""
