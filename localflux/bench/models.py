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

import json
import math
from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Pipeline, Flux2Transformer2DModel
from transformers import Mistral3Config, Mistral3ForConditionalGeneration

from ..families.flux1.tiny import _clip_tokenizer, _scheduler, _t5_tokenizer
from ..families.flux2.footprint import _text_encoder_on_meta
from ..families.flux2.presets import CONFIGS, SIZED_MODELS
from ..families.flux2.tiny import _scheduler as _flux2_scheduler
from ..families.flux2.tiny import mistral_tokenizer, qwen_tokenizer
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


# ---------------------------------------------------------------- FLUX.2

# bench --tiny --model NAME: the built-in miniature with the same pipeline class and preset kind
FLUX2_TINY = {"klein-4b": "tiny-flux2", "klein-9b": "tiny-flux2", "klein-base-4b": "tiny-flux2-base",
              "klein-base-9b": "tiny-flux2-base", "flux2-dev": "tiny-flux2-dev"}
# FLUX.2 [dev]'s text encoder, Mistral-Small-3.1-24B's published config (no config is packaged: footprint.py)
MISTRAL_TEXT = dict(model_type="mistral", vocab_size=131072, hidden_size=5120, intermediate_size=32768,
                    num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                    max_position_embeddings=131072, rope_theta=1_000_000_000.0, rms_norm_eps=1e-5,
                    bos_token_id=1, eos_token_id=2, pad_token_id=11)
MISTRAL_VISION = dict(model_type="pixtral", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, head_dim=64, patch_size=14, image_size=1540)


def flux2_pipeline_class(name: str):
    return Flux2Pipeline if name == "flux2-dev" else Flux2KleinPipeline


def build_fullsize_flux2(name: str, device: str, dtype, seed: int = 0, park_on: str | None = None,
                         root=None) -> dict:
    """Flux2KleinPipeline / Flux2Pipeline components of a full-size FLUX.2 model (``footprint.SIZED_MODELS``)
    with seeded random weights made on ``device``.

    The transformer and VAE are built on the meta device from the packaged configs and filled on ``device``
    (as for FLUX.1); the text encoder (Qwen3 for klein, Mistral 3 for dev) is built directly on ``device`` in
    ``dtype`` by transformers, which computes its rotary buffers and initialises its weights. The tokenizers
    are the miniature's (no vocabulary can be downloaded) with the real padded length, 512 tokens.
    ``root``: a diffusers folder whose configs replace the packaged ones (tests use a saved miniature).
    """
    preset, folder = SIZED_MODELS[name]
    own = Path(root) if root is not None else CONFIGS / folder
    klein4 = Path(root) if root is not None else CONFIGS / "FLUX.2-klein-4B"

    def read(where, part):
        return json.loads((where / part / "config.json").read_text())

    dev = name == "flux2-dev"
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        transformer = Flux2Transformer2DModel.from_config(read(own, "transformer"))
        vae_root = own if (own / "vae" / "config.json").is_file() else klein4
        vae = AutoencoderKLFlux2.from_config(read(vae_root, "vae"))
    models = {"transformer": transformer, "vae": vae}
    for module in models.values():
        module.to(dtype)
        module.to_empty(device=device)
        _init_random_(module, generator)
    with torch.no_grad():  # the VAE's latent batch-norm statistics (buffers): identity
        vae.bn.running_mean.zero_()
        vae.bn.running_var.fill_(1.0)
        vae.bn.num_batches_tracked.zero_()
    if park_on is not None:
        for module in models.values():
            module.to(park_on)

    fork_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=fork_devices), torch.device(device):
        torch.manual_seed(seed)
        if dev and not (own / "text_encoder" / "config.json").is_file():

            config = Mistral3Config(text_config=MISTRAL_TEXT, vision_config=MISTRAL_VISION, image_token_index=10,
                                    spatial_merge_size=2, projector_hidden_act="gelu")
            text_encoder = Mistral3ForConditionalGeneration._from_config(config, dtype=dtype)
        else:
            text_root = own if (own / "text_encoder" / "config.json").is_file() else klein4
            meta = _text_encoder_on_meta(read(text_root, "text_encoder"))  # only for its config class
            text_encoder = type(meta)._from_config(meta.config, dtype=dtype)
    text_encoder.eval().requires_grad_(False)
    if park_on is not None:
        text_encoder.to(park_on)
    for module in models.values():
        module.eval().requires_grad_(False)
    components = {**models, "text_encoder": text_encoder,
                  "tokenizer": mistral_tokenizer() if dev else qwen_tokenizer(),
                  "scheduler": _flux2_scheduler("FLUX.2-dev" if dev else "FLUX.2-klein-4B")}
    if not dev:
        components["is_distilled"] = preset == "klein"
    return components
