"""Full-size FLUX with random weights, made where it will run.

Speed does not depend on weight values, so the benchmark builds the published architectures from
``localflux/families/flux1/configs`` on the meta device (no memory), allocates them directly on the target
device with ``to_empty`` and fills them from a seeded generator there: 24 GB of random numbers are
never made on the CPU. Weights are scaled by 1/sqrt(fan_in) so activations stay finite through all
57 blocks (NaNs would make the output-difference check meaningless).

The tokenizers are the tiny model's (no vocabulary can be downloaded here) with the real lengths:
CLIP pads to 77 tokens and T5 to ``max_sequence_length`` (512 for dev, 256 for schnell), so every
tensor the transformer sees has its real shape.
"""

from __future__ import annotations

import math

import torch

from ..families.flux1.tiny import _clip_tokenizer, _scheduler, _t5_tokenizer
from ..memory.footprint import build_on_meta, footprint_of, packaged_config_root

KNOWN_BUFFERS = {"text_encoder": {"embeddings.position_ids"}}  # everything else is a parameter


def dry_run(preset: str) -> dict:
    """Build every full-size component on the meta device; parameter counts per component."""
    models = build_on_meta(packaged_config_root(preset))
    for name, module in models.items():
        unknown = {n for n, _ in module.named_buffers()} - KNOWN_BUFFERS.get(name, set())
        if unknown:  # to_empty would leave them uninitialized: the init below must learn them first
            raise RuntimeError(f"{name} has buffers the random init does not fill: {sorted(unknown)}")
    fp = footprint_of(models["transformer"], models["text_encoder_2"], models["text_encoder"], models["vae"])
    return {"transformer": fp.transformer, "text_encoder_2": fp.t5, "text_encoder": fp.clip, "vae": fp.vae,
            "footprint": fp}


def build_fullsize_components(preset: str, device: str, dtype, seed: int = 0, park_on: str | None = None,
                              root=None) -> dict:
    """FluxPipeline components of the full-size model with seeded random weights made on ``device``.

    ``park_on="cpu"`` moves each model there right after it is made (offload benchmarks), so the
    GPU never holds more than the largest one. ``root``: another config folder (tests use the tiny one).
    """


    models = build_on_meta(root or packaged_config_root(preset))
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, module in models.items():
        module.to(dtype)  # on meta: free, and to_empty then allocates bf16 directly
        module.to_empty(device=device)
        _init_random_(module, generator)
        if name == "text_encoder":
            ids = module.embeddings.position_ids
            ids.copy_(torch.arange(ids.shape[-1], device=device).expand_as(ids))
        module.eval().requires_grad_(False)
        if park_on is not None:
            module.to(park_on)
    t5_tokenizer = _t5_tokenizer()
    t5_tokenizer.model_max_length = 512
    return {**models, "tokenizer": _clip_tokenizer(), "tokenizer_2": t5_tokenizer, "scheduler": _scheduler(preset)}


def _init_random_(module, generator) -> None:

    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 1.0 / math.sqrt(math.prod(param.shape[1:])), generator=generator)
            elif name.endswith(("weight", "scale")):  # norm scales
                param.fill_(1.0)
            else:
                param.zero_()
