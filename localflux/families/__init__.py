"""The registry of model families, in detection order (see ``base.py``)."""

from __future__ import annotations

from .base import Family, Preset, Registry
from .flux1 import Flux1

FAMILIES = Registry()
FAMILIES.register(Flux1())

__all__ = ["FAMILIES", "Family", "Preset", "Registry"]
