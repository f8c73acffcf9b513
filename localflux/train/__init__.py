"""Subject-LoRA training: config, dataset, cache, trainer, checkpoints, previews (``localflux train-lora``)."""
