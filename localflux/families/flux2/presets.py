"""FLUX.2's presets: what each variant expects when a config does not say, and its published configs.

Presets fill defaults only; config files, flags and ``--set`` override them. The noise schedule is
diffusers' empirical one (``facts.expected_sigmas``), not the scheduler config's shift values.
"""

from __future__ import annotations

from pathlib import Path

from ..base import Preset

CONFIGS = Path(__file__).parent / "configs"  # see configs/SOURCES.md (published + marked derived files)

# Flux2KleinPipeline / Flux2Pipeline: max_sequence_length=512 for every variant (call signature defaults).
MAX_SEQUENCE_LENGTH = 512

PRESETS = {
    # FLUX.2 [klein] distilled (4B: Apache-2.0; 9B: FLUX non-commercial): step-distilled, no CFG. BFL's model
    # card and diffusers' docstring example: 4 steps; guidance_scale is ignored by a distilled pipeline
    # (diffusers logs "Guidance scale ... is ignored"), so 1.0 = off.
    "klein": Preset("klein", steps=4, guidance=1.0, max_sequence_length=MAX_SEQUENCE_LENGTH,
                    hub_id="black-forest-labs/FLUX.2-klein-4B"),
    # FLUX.2 [klein] base (undistilled, for fine-tuning and LoRA training): real CFG against the empty prompt
    # (or a negative prompt's embeddings). Flux2KleinPipeline's defaults: 50 steps, guidance_scale 4.0.
    "klein-base": Preset("klein-base", steps=50, guidance=4.0, max_sequence_length=MAX_SEQUENCE_LENGTH,
                         hub_id="black-forest-labs/FLUX.2-klein-base-4B"),
    # FLUX.2 [dev] (32 B, Mistral Small 3.x text encoder): embedded guidance, no negative prompt.
    # Flux2Pipeline's defaults: 50 steps, guidance_scale 4.0 (issue #17 builds the rest).
    "flux2-dev": Preset("flux2-dev", steps=50, guidance=4.0, max_sequence_length=MAX_SEQUENCE_LENGTH,
                        hub_id="black-forest-labs/FLUX.2-dev"),
}

# BFL's guidance for multi-reference editing: klein takes up to 4 references, FLUX.2 [dev] up to 6 (model
# cards). Above it localflux warns; above the hard cap it refuses (each reference adds ~4096 tokens at 1 MP,
# so 10 references make the transformer's sequence 11x an image's: memory and time grow with it).
RECOMMENDED_REFERENCES = {"klein": 4, "klein-base": 4, "flux2-dev": 6}
MAX_REFERENCES = 10


def config_root(preset: str) -> Path:
    """The packaged config folder of a FLUX.2 preset (transformer, VAE, scheduler, text-encoder shape)."""
    return CONFIGS / ("FLUX.2-dev" if preset == "flux2-dev" else "FLUX.2-klein-4B")

# The built-in miniatures (tiny.py builds them): name -> preset
BUILTIN = {"tiny-flux2": "klein", "tiny-flux2-base": "klein-base", "tiny-flux2-dev": "flux2-dev"}

# The full-size FLUX.2 models sized from the packaged configs (doctor --model, bench --model): name -> (preset,
# the config folder of its transformer and text encoder; the VAE is the one 32-channel FLUX.2 VAE).
SIZED_MODELS = {
    "klein-4b": ("klein", "FLUX.2-klein-4B"),
    "klein-base-4b": ("klein-base", "FLUX.2-klein-base-4B"),
    "klein-9b": ("klein", "FLUX.2-klein-9B"),
    "klein-base-9b": ("klein-base", "FLUX.2-klein-9B"),  # the same shapes as klein-9B (configs/SOURCES.md)
    "flux2-dev": ("flux2-dev", "FLUX.2-dev"),
}
