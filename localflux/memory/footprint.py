"""How big each FLUX component is: parameter counts from the model's configs, built on the meta device.

Building on the meta device allocates nothing, so the full-size FLUX.1-dev (11.9 B transformer
parameters) is measured in under a second, and the counts are exact for whatever config a model
folder carries instead of a hand-maintained table.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from ..families import catalog
from ..geometry import vae_scale_factor_of_config


@dataclass(frozen=True)
class Footprint:
    """Parameter counts (not bytes) and the shapes that size activations."""

    transformer: int
    transformer_block: int  # the largest repeated block: what group offload keeps on the GPU at once
    transformer_fp8_skipped: int  # kept in full precision by fp8 storage (norms, AdaLN modulation, embeddings)
    t5: int
    t5_block: int
    t5_fp8_skipped: int
    clip: int
    vae: int
    hidden: int  # transformer width (heads x head dim)
    t5_width: int
    vae_channels: int  # the VAE decoder's widest full-resolution feature map has this many channels
    vae_scale_factor: int = 8  # image pixels per latent cell along a side (tokens = latent cells / 4)
    text_cpu_bytes: int = 4  # bytes per big-text-encoder parameter when it encodes on the CPU (FLUX.1's T5: float32)

    def to_dict(self) -> dict:
        return asdict(self)


def packaged_config_root(preset: str) -> Path:
    """The published diffusers configs shipped with localflux (no weights)."""

    return catalog.config_root(preset)


def build_on_meta(root: str | Path) -> dict:
    """The four FLUX models of a config folder, built on the meta device (no memory, no weights)."""

    root = Path(root)

    def read(part):
        return json.loads((root / part / "config.json").read_text())

    with torch.device("meta"):
        return {
            "transformer": FluxTransformer2DModel.from_config(read("transformer")),
            "text_encoder_2": T5EncoderModel(T5Config.from_dict(read("text_encoder_2"))),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(read("text_encoder"))),
            "vae": AutoencoderKL.from_config(read("vae")),
        }


# What diffusers' layerwise casting leaves in full precision: FluxTransformer2DModel's
# ``_skip_layerwise_casting_patterns`` and the library default that ``apply_layerwise_casting`` uses
# for other modules (the T5 encoder). Counting them matters: FLUX's AdaLN modulation linears sit
# under ``norm`` and hold about a quarter of the transformer's parameters.
TRANSFORMER_SKIP_PATTERNS = ("pos_embed", "norm")
# T5's feed-forward casts its input to ``wo``'s weight dtype before calling it (transformers keeps
# ``wo`` in fp32 for fp16 runs), so an fp8-stored ``wo`` would get fp8 activations: keep it full.
T5_SKIP_PATTERNS = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$", r"\.wo$")


def castable_params(module, skip_patterns) -> int:
    """Parameters that fp8 storage would store in fp8: supported layers whose name matches no pattern."""


    seen = {}  # tied weights (T5's shared embedding) are one tensor under two names
    for name, sub in module.named_modules():
        if isinstance(sub, _GO_LC_SUPPORTED_PYTORCH_LAYERS) and not any(re.search(p, name) for p in skip_patterns):
            seen.update({id(p): p.numel() for p in sub.parameters(recurse=False)})
    return sum(seen.values())


def footprint_of(transformer, text_encoder_2, text_encoder, vae) -> Footprint:
    """Count the parameters of built modules (meta or real)."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    t5_blocks = list(text_encoder_2.encoder.block)

    return Footprint(
        **transformer_counts(transformer),
        t5=count(text_encoder_2),
        t5_block=max(count(b) for b in t5_blocks),
        t5_fp8_skipped=count(text_encoder_2) - castable_params(text_encoder_2, T5_SKIP_PATTERNS),
        clip=count(text_encoder),
        vae=count(vae),
        t5_width=text_encoder_2.config.d_model,
        vae_channels=vae.config.block_out_channels[0],
        vae_scale_factor=vae_scale_factor_of_config(dict(vae.config)),
    )


def transformer_counts(transformer) -> dict:
    """The Footprint fields that belong to the transformer."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    blocks = list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)
    config = transformer.config
    return {
        "transformer": count(transformer),
        "transformer_block": max(count(b) for b in blocks),
        "transformer_fp8_skipped": count(transformer) - castable_params(transformer, TRANSFORMER_SKIP_PATTERNS),
        "hidden": config.num_attention_heads * config.attention_head_dim,
    }


def with_transformer_config(fp: Footprint, config: dict) -> Footprint:
    """``fp`` with its transformer fields counted from ``config`` (a single file's own shape), on the meta device."""


    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(config)
    return dataclasses.replace(fp, **transformer_counts(transformer))


@lru_cache(maxsize=8)
def footprint_from_configs(root: str) -> Footprint:
    models = build_on_meta(root)
    return footprint_of(models["transformer"], models["text_encoder_2"], models["text_encoder"], models["vae"])


def footprint_of_pipe(pipe) -> Footprint:
    return footprint_of(pipe.transformer, pipe.text_encoder_2, pipe.text_encoder, pipe.vae)
