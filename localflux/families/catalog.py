"""The names every family answers to, without importing any family's heavy parts (the ``--help`` path).

Each family's ``presets.py`` holds its light spec (presets, built-in miniatures, sized models) and imports nothing
heavy; ``registry.py`` checks at import that this catalog agrees with the registered families.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .flux1 import presets as flux1
from .flux2 import presets as flux2

SPECS = (flux2, flux1)  # detection order, as in registry.py


def builtin_names() -> list[str]:
    """Every built-in miniature's name (``tiny``, ``tiny-dev``, ``tiny-flux2`` ...): they win over paths."""
    return [name for spec in SPECS for name in spec.BUILTIN]


def preset_names() -> list[str]:
    """Every family's presets, then its full-size model names (FLUX.2: klein-4b, klein-9b, flux2-dev ...)."""
    names = [name for spec in SPECS for name in spec.PRESETS]
    return names + [name for spec in SPECS for name in getattr(spec, "SIZED_MODELS", {}) if name not in names]


def config_root(preset: str) -> Path:
    """The packaged published config folder of any family's preset (each family's ``presets.config_root``)."""
    for spec in SPECS:
        if preset in spec.PRESETS:
            return spec.config_root(preset)
    raise ConfigError(f"model.preset {preset!r} is not known; use auto or one of {', '.join(preset_names())}")
