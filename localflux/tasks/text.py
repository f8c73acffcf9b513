"""Text-to-image: conditioned on the prompt alone (every family runs it)."""

from __future__ import annotations

from .base import Task


class TextToImage(Task):
    name = "text"

    def select(self, config, family, preset) -> bool:
        return True  # the fallback: asked last, when no task with image inputs applies
