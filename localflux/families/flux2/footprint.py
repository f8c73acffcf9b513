"""How big each FLUX.2 component is: parameter counts from configs, built on the meta device.

The memory plan's ``Footprint`` has FLUX.1-shaped fields (``t5``, ``clip``). FLUX.2 has one text encoder
(Qwen3 for klein, Mistral Small for dev), and it goes into the big-text-encoder slot: ``t5`` /
``t5_block`` / ``t5_fp8_skipped`` / ``t5_width`` describe it, ``clip`` is 0. So ``memory.t5`` and the plan
table's "T5" column mean FLUX.2's text encoder. Checked sizes (NOTES-diffusers.md): klein-4B transformer
3.88 B, Qwen3-4B 4.02 B; klein-9B 9.08 B, Qwen3-8B 8.19 B; the 32-channel VAE 84 M.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
from transformers import AutoConfig, AutoModel, Mistral3ForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM

from ...geometry import vae_scale_factor_of_config
from ...memory.footprint import T5_SKIP_PATTERNS, Footprint, castable_params, transformer_counts
from .presets import CONFIGS, SIZED_MODELS

PARTS = ("transformer", "text_encoder", "vae")
# FLUX.2 [dev]'s Mistral-Small-3.x encoder (~23.3 B, NOTES-diffusers.md; 40 decoder layers): no config is
# packaged for it, so its size is this published figure.
MISTRAL_PARAMS, MISTRAL_LAYERS, MISTRAL_WIDTH = 23_300_000_000, 40, 5120


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _decoder_layers(text_encoder):

    lists = [m for m in text_encoder.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    return max(lists, key=len)  # the decoder's layers (the vision tower's list is shorter)


def footprint_of_parts(transformer, text_encoder, vae) -> Footprint:
    """Count built modules (meta or real): the text encoder in the big-text-encoder slot."""

    layers = _decoder_layers(text_encoder)
    config = text_encoder.config
    width = getattr(getattr(config, "text_config", None), "hidden_size", None) or config.hidden_size
    return Footprint(
        **transformer_counts(transformer),
        t5=_count(text_encoder),
        t5_block=max(_count(layer) for layer in layers),
        t5_fp8_skipped=_count(text_encoder) - castable_params(text_encoder, T5_SKIP_PATTERNS),
        clip=0,
        vae=_count(vae),
        t5_width=width,
        vae_channels=vae.config.block_out_channels[0],
        vae_scale_factor=vae_scale_factor_of_config(dict(vae.config)),
    )


def footprint_of_pipe(pipe) -> Footprint:

    return dataclasses.replace(footprint_of_parts(pipe.transformer, pipe.text_encoder, pipe.vae), text_cpu_bytes=2)


def has_configs(root: Path | None) -> bool:
    return root is not None and all((root / part / "config.json").is_file() for part in PARTS)


@lru_cache(maxsize=8)
def footprint_from_configs(root: str, transformer_root: str | None = None, text_root: str | None = None) -> Footprint:
    """Parts built on the meta device from ``root``'s configs (each part may come from another folder)."""


    def read(folder, part):
        return json.loads((Path(folder) / part / "config.json").read_text())

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel.from_config(read(transformer_root or root, "transformer"))
        vae = AutoencoderKLFlux2.from_config(read(root, "vae"))
        text_folder = Path(text_root or root)
        if (text_folder / "text_encoder" / "config.json").is_file():
            text_encoder = _text_encoder_on_meta(read(text_folder, "text_encoder"))
        else:
            text_encoder = None
    if text_encoder is not None:
        return dataclasses.replace(footprint_of_parts(transformer, text_encoder, vae), text_cpu_bytes=2)
    # FLUX.2 [dev] without a local folder: Mistral's published size
    stand_in = footprint_of_parts(transformer, _tiny_stand_in(), vae)
    return dataclasses.replace(stand_in, text_cpu_bytes=2, t5=MISTRAL_PARAMS, t5_block=MISTRAL_PARAMS // MISTRAL_LAYERS,
                               t5_fp8_skipped=MISTRAL_PARAMS // 100, t5_width=MISTRAL_WIDTH)


def sized_footprint(name: str) -> Footprint:
    """A ``SIZED_MODELS`` entry's footprint: its transformer and text encoder configs, klein-4B's VAE and
    text encoder where its own folder has none (klein-base-4B shares klein-4B's Qwen3-4B)."""

    _preset, folder = SIZED_MODELS[name]
    own = CONFIGS / folder
    vae_root = own if (own / "vae" / "config.json").is_file() else CONFIGS / "FLUX.2-klein-4B"
    if (own / "text_encoder" / "config.json").is_file() or folder == "FLUX.2-dev":
        text_root = own  # dev: no packaged Mistral config -> the published size (MISTRAL_PARAMS)
    else:
        text_root = CONFIGS / "FLUX.2-klein-4B"
    return footprint_from_configs(str(vae_root), str(own), str(text_root))


def _text_encoder_on_meta(config: dict):

    model_type = config.get("model_type", "qwen3")
    text_config = AutoConfig.for_model(model_type, **{k: v for k, v in config.items() if k != "model_type"})
    if model_type == "qwen3":

        return Qwen3ForCausalLM(text_config)
    if model_type == "mistral3":

        return Mistral3ForConditionalGeneration(text_config)
    return AutoModel.from_config(text_config)


def _tiny_stand_in():

    return Qwen3ForCausalLM(Qwen3Config(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                                        num_key_value_heads=1, head_dim=8, vocab_size=8))
