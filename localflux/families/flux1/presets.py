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
}

# Hard limits of the text encoders: CLIP-L reads 77 tokens; FluxPipeline refuses T5 > 512.
CLIP_MAX_TOKENS = 77
T5_MAX_TOKENS = 512


def config_root(preset: str) -> Path:
    """The packaged published config folder of a FLUX.1 preset (the one preset -> folder mapping)."""
    return CONFIGS / ("FLUX.1-dev" if preset != "schnell" else "FLUX.1-schnell")
