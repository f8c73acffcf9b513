"""Real photographs as upscale inputs: phone orientation, ICC profiles, CMYK, colour keys, odd modes,
folders of camera files, and bad files among good ones (nothing written)."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from photo_files import UPRIGHT, corners, oriented, p3_profile, pattern, save_phone_jpeg, srgb_profile

from localflux import cli, photos
from localflux.errors import UpscaleError
from localflux.upscale import pngio
from localflux.upscale.images import read_picture
from localflux.upscale.stage import upscale_file, upscale_pil

MODEL = "realesr-animevideov3"  # the smallest shipped model: conventions are shared by all


@pytest.fixture(autouse=True)
def _weights_env(weights_dir, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))


def _out(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_phone_jpeg_comes_out_upright(tmp_path, upscaler, orientation):
    source = save_phone_jpeg(tmp_path / "IMG_0001.JPG", orientation)
    out = _out(upscale_file(source, upscaler, 2, progress=False)[0])
    assert out.size == (48, 32)  # the upright 24x16, doubled
    assert corners(out) == UPRIGHT
    assert photos.orientation(out) == 1  # no tag left for a viewer to apply a second time


def test_library_call_honours_orientation():
    stored, exif = oriented(6)
    stored.save(buffer := io.BytesIO(), format="JPEG", quality=95, exif=exif)
    out, record = upscale_pil(Image.open(buffer), model=MODEL, scale=2, device="cpu", progress=False)
    assert out.size == (48, 32) and corners(out) == UPRIGHT and record["input_size"] == [24, 16]


def test_orientation_in_png_text_chunks_is_not_carried_over(tmp_path, upscaler):
    stored, exif = oriented(8)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="8" xmp:Rating="3"/></x:xmpmeta>')
    stored.save(tmp_path / "shot.png", exif=exif, pnginfo=info)
    out = _out(upscale_file(tmp_path / "shot.png", upscaler, 2, progress=False)[0])
    assert corners(out) == UPRIGHT
    xmp = out.text["XML:com.adobe.xmp"]
    assert "tiff:Orientation" not in xmp and 'xmp:Rating="3"' in xmp  # the rest of the XMP is kept


@pytest.mark.parametrize("value", range(1, 9))
def test_orient_array_matches_pillow(value):
    stored = np.arange(5 * 7 * 2, dtype=np.uint16).reshape(5, 7, 2)
    expected = np.asarray(photos.upright(Image.open(_png_with_exif(stored[:, :, 0], value))))
    np.testing.assert_array_equal(photos.orient_array(stored, value)[:, :, 0], expected)


def _png_with_exif(plane: np.ndarray, value: int) -> io.BytesIO:
    exif = Image.Exif()
    exif[0x0112] = value
    buffer = io.BytesIO()
    Image.fromarray(plane.astype(np.uint8)).save(buffer, format="PNG", exif=exif)
    buffer.seek(0)
    return buffer


def test_16_bit_colour_png_with_orientation_and_profile(tmp_path, upscaler):
    """48-bit PNGs go through localflux's own reader: orientation and the ICC profile still apply."""
    stored, _ = oriented(6)
    samples = np.asarray(stored, dtype=np.uint16) * 257
    data = pngio.encode_png16(samples, icc=p3_profile())
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()[6:]  # eXIf holds the TIFF structure without the "Exif\0\0" header
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body + zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    end = data.rindex(b"IEND") - 4
    (tmp_path / "deep.png").write_bytes(data[:end] + chunk + data[end:])
    out_bytes, _ = upscale_file(tmp_path / "deep.png", upscaler, 2, progress=False)
    (tmp_path / "out.png").write_bytes(out_bytes)
    back = pngio.read_png16(tmp_path / "out.png")
    assert back.shape == (32, 48, 3)
    assert corners(Image.fromarray((back // 257).astype(np.uint8))) == UPRIGHT
    assert _out(out_bytes).info["icc_profile"] == p3_profile()


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff"])
def test_icc_profile_is_kept_unchanged(tmp_path, upscaler, fmt):
    profile = p3_profile()
    source = tmp_path / f"p3.{fmt}"
    pattern().save(source, format=fmt.upper(), icc_profile=profile)
    out = _out(upscale_file(source, upscaler, 2, progress=False)[0])
    assert out.info.get("icc_profile") == profile
    # the numbers are not converted: the picture stays in its own colour space, labelled by its profile
    assert corners(out) == UPRIGHT


def test_profile_of_another_colour_model_is_dropped(tmp_path, upscaler):
    pattern().convert("L").save(tmp_path / "grey.jpg", icc_profile=srgb_profile())  # RGB profile on grey pixels
    out = _out(upscale_file(tmp_path / "grey.jpg", upscaler, 2, progress=False)[0])
    assert out.mode == "L" and "icc_profile" not in out.info
    out, _ = upscale_pil(Image.open(tmp_path / "grey.jpg"), model=MODEL, scale=2, device="cpu", progress=False)
    assert out.mode == "L" and "icc_profile" not in out.info


def test_cmyk_jpeg_becomes_rgb_without_its_profile(tmp_path, upscaler):
    pattern().convert("CMYK").save(tmp_path / "print.jpg", quality=95, icc_profile=srgb_profile())
    assert Image.open(tmp_path / "print.jpg").mode == "CMYK"
    out = _out(upscale_file(tmp_path / "print.jpg", upscaler, 2, progress=False)[0])
    assert out.mode == "RGB" and corners(out) == UPRIGHT and "icc_profile" not in out.info


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_transparency_becomes_alpha(tmp_path, upscaler, mode):
    image = pattern().convert(mode)
    key = (128, 128, 128) if mode == "RGB" else 128  # the grey field
    image.save(tmp_path / "key.png", transparency=key)
    out = _out(upscale_file(tmp_path / "key.png", upscaler, 2, progress=False)[0])
    assert out.mode == mode + "A"
    alpha = np.asarray(out.getchannel("A"))
    assert alpha[-3, -3] == 0 and alpha[2, 2] == 255  # the grey field is see-through, red is not


def test_odd_sizes_scale_exactly(tmp_path, upscaler):
    save_phone_jpeg(tmp_path / "odd.jpg", 6, pattern(17, 13))
    for scale, size in ((3, (51, 39)), (2.5, (42, 32)), (1.7, (29, 22))):
        out = _out(upscale_file(tmp_path / "odd.jpg", upscaler, scale, progress=False)[0])
        assert out.size == size


def test_photo_gets_its_steps_recorded_without_an_invented_recipe(tmp_path, upscaler):
    save_phone_jpeg(tmp_path / "a.jpg", 1)
    data, record = upscale_file(tmp_path / "a.jpg", upscaler, 2, progress=False)
    out = _out(data)
    assert "localflux" not in out.text
    assert json.loads(out.text["localflux-upscale"]) == {"upscale_steps": [record]}
    (tmp_path / "b.png").write_bytes(data)
    again = _out(upscale_file(tmp_path / "b.png", upscaler, 1.5, progress=False)[0])
    assert len(json.loads(again.text["localflux-upscale"])["upscale_steps"]) == 2


def test_out_of_range_integer_and_float_images_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "deep.tif")
    with pytest.raises(UpscaleError, match=r"deep\.tif.*outside 0\.\.65535"):
        read_picture(tmp_path / "deep.tif")
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(UpscaleError, match=r"float\.tif.*32-bit float"):
        read_picture(tmp_path / "float.tif")


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["upscale", "weights"])
    monkeypatch.chdir(tmp_path)


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_of_camera_files(capsys, tmp_path, cli_env):
    folder = tmp_path / "DCIM"
    folder.mkdir()
    save_phone_jpeg(folder / "IMG_0002.JPG", 6)
    pattern().save(folder / "IMG_0001.jpeg")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1\0")
    (folder / "._IMG_0002.JPG").write_bytes(b"\0\5\x16\x07\0\2\0\0Mac OS X")  # AppleDouble resource fork
    (folder / "notes.txt").write_text("holiday")
    (folder / "edited").mkdir()
    pattern().save(folder / "edited" / "IMG_0001.png")
    code, out, err = _run(capsys, "upscale", folder, "--model", MODEL, "--device", "cpu", "--out", "big")
    assert code == 0, err
    assert out.split() == ["big/IMG_0001-x2.png", "big/IMG_0002-x2.png"]
    assert corners(Image.open(tmp_path / "big" / "IMG_0002-x2.png")) == UPRIGHT


def test_folder_without_images(capsys, tmp_path, cli_env):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"\0")
    code, out, err = _run(capsys, "upscale", tmp_path / "empty", "--model", MODEL, "--device", "cpu")
    assert code == 2 and out == "" and "has no images" in err and len(err.strip().splitlines()) == 1


def _truncated_jpeg(path):
    save_phone_jpeg(path, 1, pattern(64, 48))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


BAD_FILES = {
    "truncated jpeg": ("cut.jpg", _truncated_jpeg, "not a readable image"),
    "heic": ("IMG_0003.HEIC", lambda p: p.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)), "not an image Pillow can read"),
    "float tiff": ("depth.tif", lambda p: Image.fromarray(np.zeros((8, 8), np.float32)).save(p), "32-bit float"),
    "text named .png": ("notes.png", lambda p: p.write_text("not a picture"), "not an image Pillow can read"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_after_a_good_one_writes_nothing(capsys, tmp_path, cli_env, case):
    name, make, message = BAD_FILES[case]
    save_phone_jpeg(tmp_path / "good.jpg", 6)
    make(tmp_path / name)
    code, out, err = _run(capsys, "upscale", "good.jpg", name, "--model", MODEL, "--device", "cpu", "--out", "big")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and name in lines[0] and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "big").exists()


def test_wrong_extension_is_read_by_content(capsys, tmp_path, cli_env):
    pattern().save(tmp_path / "actually-png.jpg", format="PNG")
    code, out, _ = _run(capsys, "upscale", "actually-png.jpg", "--model", MODEL, "--device", "cpu")
    assert code == 0 and out.strip() == "upscaled/actually-png-x2.png"
    assert corners(Image.open(tmp_path / out.strip())) == UPRIGHT
