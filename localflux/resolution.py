"""Image size arithmetic: width x height, or megapixels x aspect ratio, snapped to the model's multiple.

FLUX packs 2x2 patches of the 8x-downsampled latent, so both sides must be multiples of 16
(diffusers would silently floor them; localflux snaps to the nearest and says so). A model with
another VAE has another multiple (``geometry.size_multiple``); 16 is FLUX.1's.
1 MP means 1024 x 1024 = 1,048,576 pixels, as in FLUX's own resolution talk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

MULTIPLE = 16
MEGAPIXEL = 1024 * 1024
MIN_SIDE = 16
MAX_SIDE = 8192


@dataclass(frozen=True)
class Size:
    width: int
    height: int
    requested: tuple[float, float]  # what the user asked for before snapping
    multiple: int = MULTIPLE  # the side multiple the model needs

    @property
    def snapped(self) -> bool:
        return (self.width, self.height) != self.requested


def snap(value: float, multiple: int = MULTIPLE) -> int:
    """Nearest multiple of ``multiple`` (halves round up), never below one multiple."""
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


def parse_aspect(text: str) -> tuple[float, float]:
    """``"3:4"`` -> (3.0, 4.0); also accepts ``"16x9"`` and a plain ratio such as ``"1.5"``."""
    cleaned = str(text).strip().lower().replace("x", ":")
    try:
        if ":" in cleaned:
            w_text, h_text = cleaned.split(":", 1)
            w, h = float(w_text), float(h_text)
        else:
            w, h = float(cleaned), 1.0
    except ValueError:
        raise ConfigError(f"aspect {text!r} is not a ratio; write it as W:H, e.g. 3:4 or 16:9") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise ConfigError(f"aspect {text!r} must have two positive numbers, e.g. 3:4")
    return w, h


def resolve_size(width: int | None, height: int | None, megapixels: float | None, aspect: str | None,
                 multiple: int = MULTIPLE) -> Size:
    """Width/height win when both are given; else megapixels x aspect (default 1 MP, 1:1); sides snap to ``multiple``."""
    if width is not None and height is not None:
        requested = (float(width), float(height))
    else:
        mp = 1.0 if megapixels is None else float(megapixels)
        aw, ah = parse_aspect(aspect or "1:1")
        pixels = mp * MEGAPIXEL
        if width is not None:
            requested = (float(width), float(width) * ah / aw)
        elif height is not None:
            requested = (float(height) * aw / ah, float(height))
        else:
            requested = (math.sqrt(pixels * aw / ah), math.sqrt(pixels * ah / aw))
    w, h = snap(requested[0], multiple), snap(requested[1], multiple)
    for side, value in (("width", w), ("height", h)):
        if value > MAX_SIDE:
            raise ConfigError(f"{side} {value} is larger than {MAX_SIDE} pixels; ask for fewer megapixels or a smaller size")
    if requested[0] == int(requested[0]) and requested[1] == int(requested[1]):
        requested = (int(requested[0]), int(requested[1]))
    return Size(w, h, requested, multiple)
