"""Where the tiles go and how their outputs are blended (pure arithmetic, no torch).

Along each axis the image is cut into cores of exactly ``tile`` input pixels (the last one may be
shorter).  Each core is extended by ``overlap`` pixels into its neighbours (never past the image
border); the model sees that extended span plus the 10 px border context the engine adds.  In the
2*overlap band where two neighbours both have output, their weights ramp linearly from one to the
other so they sum to 1: no seam, and far from the band each tile's own result is used unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in input pixels: the core it owns and the extended span it computes."""

    core0: int
    core1: int
    ext0: int
    ext1: int


@dataclass(frozen=True)
class Tile:
    y: Span
    x: Span


def plan_axis(length: int, tile: int, overlap: int) -> list[Span]:
    if length <= 0 or tile <= 0 or overlap < 0:
        raise ValueError(f"bad tiling: length={length} tile={tile} overlap={overlap}")
    spans = []
    for core0 in range(0, length, tile):
        core1 = min(core0 + tile, length)
        spans.append(Span(core0, core1, max(core0 - overlap, 0), min(core1 + overlap, length)))
    return spans


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """All tiles, row by row."""
    return [Tile(y, x) for y in plan_axis(height, tile, overlap) for x in plan_axis(width, tile, overlap)]


def axis_weights(span: Span, length: int, overlap: int, scale: int) -> np.ndarray:
    """Feather weights for one span's output pixels (``(ext1 - ext0) * scale`` values).

    The ramp covers ``[core0 - overlap, core0 + overlap)`` on the left (and mirrored on the right),
    measured at pixel centres, unless that side is the image border.  Neighbouring ramps are exact
    complements, so after normalising by the summed weights the blend is a partition of unity.
    """
    n = (span.ext1 - span.ext0) * scale
    centres = span.ext0 + (np.arange(n, dtype=np.float64) + 0.5) / scale  # in input pixel units
    weights = np.ones(n, dtype=np.float64)
    if overlap > 0 and span.core0 > 0:
        start = span.core0 - overlap
        weights = np.minimum(weights, np.clip((centres - start) / (2 * overlap), 0.0, 1.0))
    if overlap > 0 and span.core1 < length:
        end = span.core1 + overlap
        weights = np.minimum(weights, np.clip((end - centres) / (2 * overlap), 0.0, 1.0))
    return weights.astype(np.float32)
