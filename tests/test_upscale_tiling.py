"""Tile planning, feathered blending, tiled == untiled, OOM retry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from upscale_common import engine_for, load_rgb, psnr

from localflux.errors import UpscaleError
from localflux.upscale import engine as engine_module
from localflux.upscale.engine import DEFAULT_OVERLAP, to_integer
from localflux.upscale.tiling import axis_weights, plan_axis, plan_tiles


def test_cores_honour_tile_size_exactly():
    spans = plan_axis(100, 32, 8)
    assert [(s.core0, s.core1) for s in spans] == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert [(s.ext0, s.ext1) for s in spans] == [(0, 40), (24, 72), (56, 100), (88, 100)]
    assert len(plan_tiles(100, 70, 32, 8)) == 4 * 3


@pytest.mark.parametrize("length, tile, overlap, scale", [(100, 32, 8, 4), (96, 48, 24, 2), (50, 40, 16, 1)])
def test_feather_weights_sum_to_one(length, tile, overlap, scale):
    # With tile >= 2 * overlap neighbouring ramps are exact complements; smaller tiles are still
    # blended correctly because the engine divides by the summed weights.
    total = np.zeros(length * scale)
    for span in plan_axis(length, tile, overlap):
        total[span.ext0 * scale : span.ext1 * scale] += axis_weights(span, length, overlap, scale)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_tiled_matches_untiled_on_real_photo():
    """x4plus-anime (RRDBNet) on a 96 px photo crop in 4 tiles of 48: >= 50 dB vs one pass.

    Overlap 16 here (default 32) so that each tile's window (48 + 2*16 = 80 px) really is smaller
    than the image; the same tiles without the blend (overlap 0) measure about 41 dB.
    """
    engine = engine_for("realesrgan-x4plus-anime")
    photo = load_rgb("astronaut-96.png")
    whole, info = engine.upscale(photo, tile=1000, progress=False)
    seen = []
    real_forward = engine._forward
    engine._forward = lambda x: (seen.append(tuple(x.shape[-2:])), real_forward(x))[1]
    tiled, tiled_info = engine.upscale(photo, tile=48, overlap=16, progress=False)
    assert (info.tiles, tiled_info.tiles, tiled_info.tile, tiled_info.overlap) == (1, 4, 48, 16)
    assert seen == [(100, 100)] * 4  # one window shape for all tiles, smaller than the 116 px padded image
    value = psnr(to_integer(tiled, 255), to_integer(whole, 255))
    print(f"tiled vs untiled: {value:.1f} dB")
    assert value >= 50.0


@pytest.mark.slow
def test_tiled_matches_untiled_x4plus_and_overlap_matters():
    engine = engine_for("realesrgan-x4plus")
    photo = load_rgb("astronaut-96.png")
    whole = to_integer(engine.upscale(photo, tile=1000, progress=False)[0], 255)
    blended = to_integer(engine.upscale(photo, tile=24, overlap=DEFAULT_OVERLAP, progress=False)[0], 255)
    hard = to_integer(engine.upscale(photo, tile=24, overlap=0, progress=False)[0], 255)
    assert psnr(blended, whole) >= 50.0
    assert psnr(hard, whole) < 50.0


def test_srvgg_tiling_odd_sizes():
    engine = engine_for("realesr-animevideov3-x4")
    image = load_rgb("astronaut-96.png")[:53, :71]
    whole, _ = engine.upscale(image, tile=1000, progress=False)
    tiled, info = engine.upscale(image, tile=20, overlap=8, progress=False)
    assert tiled.shape == whole.shape == (53 * 4, 71 * 4, 3) and info.tiles == 3 * 4
    assert psnr(to_integer(tiled, 255), to_integer(whole, 255)) >= 50.0


def test_oom_retries_with_half_tiles(caplog, monkeypatch):
    engine = engine_for("realesr-animevideov3-x4")
    image = load_rgb("astronaut-64.png")
    reference, _ = engine.upscale(image, tile=32, overlap=4, progress=False)
    real_forward = engine._forward

    def forward(x):
        if x.shape[-1] > 32 + 2 * 4 + 2 * 10:  # a 64 px tile (plus overlap and border) "does not fit"
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(x)

    monkeypatch.setattr(engine, "_forward", forward)
    with caplog.at_level("WARNING", logger="localflux"):
        out, info = engine.upscale(image, tile=64, overlap=4, progress=False)
    assert info.tile == 32
    assert "out of GPU memory; retrying with --tile 32" in caplog.text
    np.testing.assert_array_equal(out, reference)


def test_other_errors_are_not_swallowed(monkeypatch):
    engine = engine_for("realesr-animevideov3-x4")

    def broken(x):
        raise RuntimeError("some real bug")

    monkeypatch.setattr(engine, "_forward", broken)
    with pytest.raises(RuntimeError, match="some real bug"):
        engine.upscale(load_rgb("astronaut-64.png"), tile=32, progress=False)


def test_oom_at_minimum_tile_is_a_clear_error(monkeypatch):
    engine = engine_for("realesr-animevideov3-x4")

    def always_oom(x):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(engine, "_forward", always_oom)
    with pytest.raises(UpscaleError, match="out of GPU memory even with 32 px tiles"):
        engine.upscale(load_rgb("astronaut-64.png"), tile=64, progress=False)


def test_auto_tile_follows_available_memory(monkeypatch):
    engine = engine_for("realesr-animevideov3-x4")
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine_module, "available_ram", lambda: 64 * 1024**3)
    assert engine_module.auto_tile(engine.model, 4, cpu, torch.float32, 300, 200) == 300  # fits: one tile
    assert engine_module.auto_tile(engine.model, 4, cpu, torch.float32, 3000, 200) < 3000  # over the cap
    monkeypatch.setattr(engine_module, "available_ram", lambda: 256 * 1024**2)
    small = engine_module.auto_tile(engine.model, 4, cpu, torch.float32, 1000, 1000)
    assert engine_module.MIN_TILE <= small < 1000
    assert 1000 % small == 0 or -(-1000 // small) * small - 1000 < -(-1000 // small)  # balanced tiles
