"""Scales, sizes, modes, bit depths, the 16-bit PNG codec and the recipe chunk."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from upscale_common import DATA

from localflux.errors import UpscaleError
from localflux.upscale import pngio
from localflux.upscale.images import read_picture
from localflux.upscale.stage import Upscaler, upscale_file, upscale_pil

MODEL = "realesr-animevideov3"  # small SRVGG: keeps these tests fast; conventions are shared by all models


@pytest.fixture(autouse=True)
def _weights_env(weights_dir, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))


def photo(size=(23, 17)) -> Image.Image:
    return Image.open(DATA / "astronaut-64.png").convert("RGB").crop((5, 9, 5 + size[0], 9 + size[1]))


@pytest.mark.parametrize("scale", [1.5, 2, 2.5, 3, 4, 5.3, 8])
@pytest.mark.parametrize("size", [(23, 17), (16, 16), (31, 7)])
def test_exact_output_size(scale, size):
    out, record = upscale_pil(photo(size), model=MODEL, scale=scale, device="cpu", progress=False)
    assert out.size == (round(size[0] * scale), round(size[1] * scale))
    assert out.mode == "RGB"
    assert record["scale"] == scale and record["native_scale"] == 4 and record["output_size"] == list(out.size)


def test_scale_4_is_the_network_output_and_lanczos_downscale_follows_it():
    image = photo()
    x4, _ = upscale_pil(image, model=MODEL, scale=4, device="cpu", progress=False)
    x2, _ = upscale_pil(image, model=MODEL, scale=2, device="cpu", progress=False)
    expected = x4.resize(x2.size, Image.Resampling.LANCZOS)  # 8-bit resize of the 8-bit x4: close, not equal
    assert np.abs(np.asarray(x2, dtype=int) - np.asarray(expected, dtype=int)).max() <= 2


@pytest.mark.parametrize("scale", [1.0, 0.5, 8.01, float("nan")])
def test_scale_out_of_range(scale):
    with pytest.raises(UpscaleError, match="out of range"):
        upscale_pil(photo(), model=MODEL, scale=scale, device="cpu")


def test_rgba_alpha_resize_mode_is_lanczos_to_the_final_size():
    rgb = photo()
    alpha = Image.linear_gradient("L").resize(rgb.size)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    out_rgba, record = upscale_pil(rgba, model=MODEL, scale=3, device="cpu", alpha="resize", progress=False)
    assert record["alpha"] == "resize"
    out_rgb, _ = upscale_pil(rgb, model=MODEL, scale=3, device="cpu", progress=False)
    assert out_rgba.mode == "RGBA"
    # colour does not depend on alpha; alpha is a Lanczos resize of the input alpha
    np.testing.assert_array_equal(np.asarray(out_rgba)[:, :, :3], np.asarray(out_rgb))
    lanczos = np.asarray(Image.fromarray(np.asarray(alpha, dtype=np.float32) / 255).resize(out_rgba.size, Image.Resampling.LANCZOS))
    expected = np.clip(lanczos * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(out_rgba)[:, :, 3], expected)


def test_grey_and_grey_alpha_keep_their_mode():
    grey = photo().convert("L")
    out, _ = upscale_pil(grey, model=MODEL, scale=2, device="cpu", progress=False)
    assert out.mode == "L" and out.size == (46, 34)
    reference = np.asarray(upscale_pil(grey.convert("RGB"), model=MODEL, scale=2, device="cpu", progress=False)[0].convert("L"), dtype=int)
    assert np.abs(np.asarray(out, dtype=int) - reference).max() <= 1
    la = grey.copy().convert("LA")
    assert upscale_pil(la, model=MODEL, scale=2, device="cpu", progress=False)[0].mode == "LA"


def test_16_bit_grey_in_16_bit_out():
    grey8 = np.asarray(photo().convert("L"), dtype=np.uint16)
    grey16 = Image.fromarray(grey8 * 257 + 100)  # low byte carries information too
    assert grey16.mode == "I;16"
    out, _ = upscale_pil(grey16, model=MODEL, scale=2, device="cpu", progress=False)
    values = np.asarray(out)
    assert out.mode == "I;16" and out.size == (46, 34)
    assert values.max() > 255 and np.any(values % 257 != 0)  # real 16-bit values, not 8-bit scaled
    out8 = np.asarray(upscale_pil(photo().convert("L"), model=MODEL, scale=2, device="cpu", progress=False)[0], dtype=float)
    assert np.abs(values / 257.0 - out8).mean() < 1.5


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16_bit_colour_png_round_trip(tmp_path, channels):
    rgb = np.asarray(photo(), dtype=np.uint16) * 257 + 77
    planes = {3: rgb, 4: np.dstack([rgb, np.full(rgb.shape[:2], 40000, np.uint16)]), 2: np.dstack([rgb[:, :, :1], rgb[:, :, 1:2]])}[channels]
    source = tmp_path / "in16.png"
    source.write_bytes(pngio.encode_png16(planes, {"Comment": "sixteen"}))
    picture = read_picture(source)
    assert picture.bits == 16 and (picture.alpha is not None) == (channels in (2, 4))
    upscaler = Upscaler.load(MODEL, device="cpu")
    data, _ = upscale_file(source, upscaler, 2, progress=False)
    (tmp_path / "out.png").write_bytes(data)
    header = pngio.png_header(tmp_path / "out.png")
    assert header[2] == 16 and header[3] == {3: 2, 4: 6, 2: 4}[channels]
    back = pngio.read_png16(tmp_path / "out.png")
    assert back.shape == (34, 46, channels) and back.dtype == np.uint16
    if channels == 4:
        assert np.all(np.abs(back[:, :, 3].astype(int) - 40000) <= 1)  # constant alpha stays constant
    with Image.open(tmp_path / "out.png") as pil:  # other software can read it
        assert pil.size == (46, 34) and pil.text["Comment"] == "sixteen"


def _reference_png16(pixels: np.ndarray, filters: list[int]) -> bytes:
    """Independent little encoder using the given per-row filter types (to test all decoders)."""
    h, w, c = pixels.shape
    rows = pixels.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(int)
    bpp = 2 * c
    out = bytearray()
    for y in range(h):
        kind = filters[y % len(filters)]
        prev = rows[y - 1] if y else np.zeros_like(rows[0])
        line = []
        for i, value in enumerate(rows[y]):
            a = rows[y][i - bpp] if i >= bpp else 0
            b = prev[i]
            c_ = prev[i - bpp] if i >= bpp else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c_
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c_)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c_)
            line.append((value - pred) % 256)
        out += bytes([kind]) + bytes(line)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return pngio.SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")


def test_png16_reader_handles_every_filter(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(10, 7, 3), dtype=np.uint16)
    path = tmp_path / "f.png"
    path.write_bytes(_reference_png16(pixels, [0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(pngio.read_png16(path), pixels)
    path.write_bytes(pngio.encode_png16(pixels))
    np.testing.assert_array_equal(pngio.read_png16(path), pixels)


def _png_with_recipe(path, recipe: dict, parameters: str):
    info = PngImagePlugin.PngInfo()
    info.add_text("localflux", json.dumps(recipe))
    info.add_text("parameters", parameters)
    photo().save(path, pnginfo=info)


def test_recipe_and_parameters_chunks_are_kept_and_step_added(tmp_path):
    recipe = {"version": 1, "seed": 42, "prompt": "a café at night ☕", "steps": 4}
    parameters = "a café at night\nSteps: 4, Seed: 42"
    source = tmp_path / "render.png"
    _png_with_recipe(source, recipe, parameters)
    upscaler = Upscaler.load(MODEL, device="cpu")
    data, record = upscale_file(source, upscaler, 2, tile=16, overlap=4, progress=False)
    with Image.open(io.BytesIO(data)) as out:
        text = dict(out.text)
    assert text["parameters"] == parameters
    updated = json.loads(text["localflux"])
    assert {k: updated[k] for k in recipe} == recipe
    assert updated["upscale_steps"] == [record]
    assert record["model"] == MODEL and len(record["sha256"]) == 64
    assert (record["tile"], record["overlap"], record["tiles"], record["device"], record["dtype"]) == (16, 4, 4, "cpu", "float32")

    again = tmp_path / "again.png"
    again.write_bytes(data)
    data2, record2 = upscale_file(again, upscaler, 1.5, progress=False)
    with Image.open(io.BytesIO(data2)) as out:
        steps = json.loads(out.text["localflux"])["upscale_steps"]
    assert steps == [record, record2] and record2["input_size"] == [46, 34]


def test_image_without_recipe_gets_none_invented(tmp_path):
    source = tmp_path / "plain.png"
    photo().save(source)
    data, _ = upscale_file(source, Upscaler.load(MODEL, device="cpu"), 2, progress=False)
    with Image.open(io.BytesIO(data)) as out:
        assert "localflux" not in out.text
