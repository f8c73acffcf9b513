"""Model families (see ``base.py``): ``registry.FAMILIES`` holds them in detection order; ``catalog`` has their
names alone, for code that must stay light (``--help``, config parsing).
"""

from __future__ import annotations

from .base import Family, Preset, Registry

__all__ = ["Family", "Preset", "Registry"]
