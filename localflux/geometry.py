"""A model's image geometry, read from its own configs before any weight is loaded.

FLUX's VAE downsamples by 8 and the transformer packs 2x2 latent patches, so image sides are
multiples of 16 and a W x H image is (W/16)(H/16) tokens. Those numbers belong to the VAE, not to
FLUX: diffusers' ``FluxPipeline`` uses ``2 ** (len(vae.block_out_channels) - 1)`` as the factor and
``2 x factor`` as the side multiple, so a model with another VAE accepts other sizes and has other
token counts (which shift the dev schedule). Everything that sizes images or counts tokens asks here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelSourceError

FLUX_VAE_SCALE_FACTOR = 8  # FLUX.1's VAE (and the built-in tiny model's): four blocks, three downsamplings
PATCH = 2  # FluxPipeline packs 2x2 latent patches into one transformer token
MLP_RATIO = 4  # diffusers' FLUX blocks: the MLP is 4 x the width, so BFL's single-block linear1 is 7 widths


def vae_scale_factor_of_config(vae_config: dict) -> int:
    """diffusers' rule (``FluxPipeline.vae_scale_factor``)."""
    return 2 ** (len(vae_config.get("block_out_channels", (0,) * 4)) - 1)


def model_root(source) -> Path | None:
    """The folder holding the VAE of a ``loader.Source`` (a single file's base), when it is on disk."""
    if source is None:
        return None
    if source.kind == "single_file":
        return model_root(source.base)
    return source.path if source.kind in ("folder", "hub") else None


def vae_scale_factor_of_model(source, default: int) -> int:
    """The source's VAE factor from its vae/config.json; ``default`` (the family's) when not on disk."""
    root = model_root(source)
    config = root / "vae" / "config.json" if root is not None else None
    if config is not None and config.is_file():
        try:
            return vae_scale_factor_of_config(json.loads(config.read_text()))
        except (ValueError, OSError, TypeError, AttributeError):
            raise ModelSourceError(f"the model's vae/config.json ({str(config)!r}) is not readable JSON; "
                                   "the file is truncated or corrupt: download the model again") from None
    return default


def image_tokens(width: int, height: int, vae_factor: int = FLUX_VAE_SCALE_FACTOR) -> int:
    """Transformer image tokens of a ``width`` x ``height`` render: latent cells packed 2x2."""
    step = PATCH * vae_factor
    return (height // step) * (width // step)
