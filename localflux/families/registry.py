"""The registry of model families, in detection order (see ``base.py``).

Importing it imports every family's heavy parts (diffusers, torch); ``catalog.py`` has the names alone.
"""

from __future__ import annotations

from . import catalog
from .base import Registry
from .flux1.family import Flux1
from .flux2.family import Flux2

FAMILIES = Registry()
FAMILIES.register(Flux2())  # before FLUX.1, whose detection is the fallback
FAMILIES.register(Flux1())

_PRESETS = [name for family in FAMILIES for name in family.presets]
if list(FAMILIES.builtin_names()) != catalog.builtin_names() or catalog.preset_names() != _PRESETS + [
        name for family in FAMILIES for name in family.sized_models() if name not in _PRESETS]:
    raise RuntimeError("families/catalog.py disagrees with the registered families: list each family's presets module")

__all__ = ["FAMILIES"]
