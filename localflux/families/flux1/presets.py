"""FLUX.1's presets: what each variant expects when a config does not say, and its published configs.

Presets fill defaults only; config files, flags and ``--set`` override them. The noise schedule
is not here: it comes from the model folder's ``scheduler/scheduler_config.json``, as in diffusers.
"""

from __future__ import annotations

from pathlib import Path

from ..base import Preset

CONFIGS = Path(__file__).parent / "configs"  # FLUX.1's published configs (see configs/SOURCES.md)


PRESETS = {
    # FLUX.1 [schnell]: timestep-distilled for 1-4 steps, no guidance embedding, and trained
    # with T5 sequences of 256 tokens (model card; diffusers' FluxPipeline example).
    "schnell": Preset("schnell", steps=4, guidance=0.0, max_sequence_length=256, hub_id="black-forest-labs/FLUX.1-schnell"),
    # FLUX.1 [dev]: guidance-distilled; the model card recommends ~28-50 steps at guidance 3.5
    # and 512 T5 tokens (diffusers' FluxPipeline defaults: 28 steps, 3.5, 512).
    "dev": Preset("dev", steps=28, guidance=3.5, max_sequence_length=512, hub_id="black-forest-labs/FLUX.1-dev"),
    # FLUX.1 Fill [dev]: inpainting/outpainting model (384 input channels); diffusers' FluxFillPipeline
    # defaults and BFL's model card: 50 steps at guidance 30, 512 T5 tokens.
    "fill": Preset("fill", steps=50, guidance=30.0, max_sequence_length=512, hub_id="black-forest-labs/FLUX.1-Fill-dev"),
    # FLUX.1 Kontext [dev]: edits from a reference image; FluxKontextPipeline's defaults: 28 steps, 3.5, 512.
    "kontext": Preset("kontext", steps=28, guidance=3.5, max_sequence_length=512,
                      hub_id="black-forest-labs/FLUX.1-Kontext-dev"),
    # FLUX.1 Canny/Depth [dev]: structural control (128 input channels: noisy + control-image latents).
    # FluxControlPipeline's defaults (28 steps, guidance 3.5, 512 tokens); BFL's model cards suggest 50 steps
    # at guidance 30 (Canny) or 10 (Depth): a Canny and a Depth transformer have the same shape, so the
    # preset cannot tell them apart (docs/images.md says which to set).
    "control": Preset("control", steps=28, guidance=3.5, max_sequence_length=512,
                      hub_id="black-forest-labs/FLUX.1-Canny-dev"),
}

# Hard limits of the text encoders: CLIP-L reads 77 tokens; FluxPipeline refuses T5 > 512.
CLIP_MAX_TOKENS = 77
T5_MAX_TOKENS = 512


# Fill and Kontext are FLUX.1 [dev] derivatives: same text encoders, VAE and (dynamic) scheduler,
# their own transformer configs.
_PUBLISHED = {"schnell": "FLUX.1-schnell", "dev": "FLUX.1-dev", "fill": "FLUX.1-dev", "kontext": "FLUX.1-dev",
              "control": "FLUX.1-dev"}
_OWN_TRANSFORMER = {"fill": "FLUX.1-Fill-dev", "kontext": "FLUX.1-Kontext-dev", "control": "FLUX.1-Canny-dev"}


def config_root(preset: str, component: str = "") -> Path:
    """The packaged published config folder of a FLUX.1 preset (the one preset -> folder mapping).

    ``component="transformer"`` gives the folder whose ``transformer/config.json`` is that preset's own.
    """
    if component == "transformer" and preset in _OWN_TRANSFORMER:
        return CONFIGS / _OWN_TRANSFORMER[preset]
    return CONFIGS / _PUBLISHED.get(preset, "FLUX.1-schnell")

# The built-in miniatures (tiny.py builds them): name -> preset
BUILTIN = {"tiny": "schnell", "tiny-schnell": "schnell", "tiny-dev": "dev", "tiny-fill": "fill",
           "tiny-kontext": "kontext", "tiny-control": "control"}
