"""The registry of model families, in detection order (see ``base.py``)."""

from __future__ import annotations

from .base import Family, Preset, Registry
from .flux1 import Flux1
from .flux2.family import Flux2

FAMILIES = Registry()
FAMILIES.register(Flux2())  # before FLUX.1, whose detection is the fallback
FAMILIES.register(Flux1())

__all__ = ["FAMILIES", "Family", "Preset", "Registry"]
