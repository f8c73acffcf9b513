"""Text to image: no input images (``FluxPipeline``)."""

from __future__ import annotations

from .base import Prepared, Task


class TextTask(Task):
    name = "text"
    role = "text"

    def select(self, config, family, preset) -> bool:
        return True  # the last in the registry: what remains when no input is given

    def prepare(self, config, family, preset, size) -> Prepared:
        return Prepared(self.name, role=self.role, size=size)
