"""The output is streamed in horizontal bands, and equals the former whole-image float buffer bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from upscale_common import engine_for, load_rgb

from localflux.upscale.engine import BORDER, Engine, to_integer
from localflux.upscale.images import LUMA, Picture, resize, target_size
from localflux.upscale.stage import Upscaler
from localflux.upscale.tiling import axis_weights, plan_tiles

STEM = "realesr-animevideov3-x4"  # small SRVGG: seconds on one thread


def whole_buffer(engine: Engine, rgb: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """The former algorithm: every tile blended into one full-size float buffer, normalised at the end."""
    height, width = rgb.shape[:2]
    s = engine.scale
    padded = np.pad(rgb, ((BORDER, BORDER), (BORDER, BORDER), (0, 0)), mode="reflect")
    source = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None]
    acc = torch.zeros((3, height * s, width * s))
    row_sum, col_sum = torch.zeros(height * s), torch.zeros(width * s)
    rows_seen, cols_seen = set(), set()
    win_y, win_x = min(height, tile + 2 * overlap), min(width, tile + 2 * overlap)
    with torch.inference_mode():
        for t in plan_tiles(height, width, tile, overlap):
            y0, x0 = max(0, min(t.y.ext0, height - win_y)), max(0, min(t.x.ext0, width - win_x))
            out = engine._forward(source[:, :, y0 : y0 + win_y + 2 * BORDER, x0 : x0 + win_x + 2 * BORDER])
            top, left = (t.y.ext0 - y0 + BORDER) * s, (t.x.ext0 - x0 + BORDER) * s
            out = out[0, :, top : top + (t.y.ext1 - t.y.ext0) * s, left : left + (t.x.ext1 - t.x.ext0) * s]
            wy = torch.from_numpy(axis_weights(t.y, height, overlap, s))
            wx = torch.from_numpy(axis_weights(t.x, width, overlap, s))
            ys, xs = slice(t.y.ext0 * s, t.y.ext1 * s), slice(t.x.ext0 * s, t.x.ext1 * s)
            acc[:, ys, xs] += out * (wy[:, None] * wx[None, :])
            if t.y not in rows_seen:
                rows_seen.add(t.y)
                row_sum[ys] += wy
            if t.x not in cols_seen:
                cols_seen.add(t.x)
                col_sum[xs] += wx
    acc /= row_sum[None, :, None]
    acc /= col_sum[None, None, :]
    return acc.permute(1, 2, 0).numpy()


def former_samples(color: np.ndarray, size: tuple[int, int], gray: bool, max_value: int) -> np.ndarray:
    """The former conversion: Lanczos of the whole float image, then plane by plane to integers."""
    color = resize(color, size)
    planes = [color @ LUMA] if gray else [color[:, :, c] for c in range(3)]
    return np.stack([to_integer(p, max_value) for p in planes], axis=2)


@pytest.fixture(scope="module")
def engine():
    return engine_for(STEM)


def photo(height: int, width: int) -> np.ndarray:
    return np.ascontiguousarray(np.tile(load_rgb("astronaut-96.png"), (2, 2, 1))[:height, :width])


@pytest.mark.parametrize("tile, overlap", [(16, 8), (10, 12)])  # 12 > tile/2: three tile rows share output rows
def test_bands_arrive_in_order_and_equal_the_whole_buffer(engine, tile, overlap):
    rgb = photo(61, 45)
    seen = []

    def sink(y0, band):
        seen.append((y0, band.shape[1]))
        got[:, y0 : y0 + band.shape[1]] = band

    got = torch.full((3, 61 * 4, 45 * 4), float("nan"))
    info = engine.stream(rgb, sink, tile=tile, overlap=overlap, progress=False)
    assert info.tiles > 4 and len(seen) > 2
    starts = [0] + [y0 + n for y0, n in seen[:-1]]
    assert [y0 for y0, _ in seen] == starts and sum(n for _, n in seen) == 61 * 4  # every row once, top to bottom
    expected = whole_buffer(engine, rgb, tile, overlap)
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("scale", [4, 3, 2.5])
@pytest.mark.parametrize("gray, bits", [(False, 8), (True, 8), (False, 16)])
def test_streamed_samples_equal_the_former_whole_image_path(engine, scale, gray, bits):
    rgb = photo(53, 37)
    if gray:
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    picture = Picture(rgb, None, gray, bits)
    upscaler = Upscaler(_Loaded(), engine)
    samples, record = upscaler.run(picture, scale, tile=16, overlap=8, progress=False)
    assert record["tiles"] == 12
    expected = former_samples(whole_buffer(engine, rgb, 16, 8), target_size((37, 53), scale), gray, picture.max_value)
    np.testing.assert_array_equal(samples, expected)


def test_lanczos_per_band_then_vertical_is_pillows_resize():
    """Why the non-native path can stream: Pillow's horizontal pass treats rows independently."""
    values = np.random.default_rng(1).random((97, 83), dtype=np.float32)
    whole = np.asarray(Image.fromarray(values).resize((61, 71), Image.Resampling.LANCZOS))
    rows = np.concatenate([resize(np.ascontiguousarray(values[y : y + 13]), (61, len(values[y : y + 13]))) for y in range(0, 97, 13)])
    np.testing.assert_array_equal(resize(rows, (61, 71)), whole)


class _Loaded:
    """Just what Upscaler.run reads from a loaded model."""

    class spec:
        scale, arch = 4, "SRVGGNetCompact"

    name, path, sha256 = STEM, "-", "-"
