"""Real photographs as training data: phone orientation, colour profiles, odd modes, camera folders
(upper-case names, macOS debris, captions from other editors), and the clear errors before training."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms
from photo_files import UPRIGHT, corners, p3_profile, pattern, save_phone_jpeg, srgb_profile

from localflux.errors import DatasetError
from localflux.train.config import load_train_config
from localflux.train.dataset import load_image, pixels_for_bucket, scan_dataset

from _train_helpers import make_subject, write_config
from test_train_dataset import _fails_before_training


def _scan(tmp_path, data):
    return scan_dataset(load_train_config(write_config(tmp_path, folder=data)).dataset)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_phone_portrait_is_bucketed_and_cropped_upright(tmp_path, orientation):
    data = make_subject(tmp_path / "data")
    save_phone_jpeg(data / "IMG_0001.JPG", orientation, pattern(64, 96))  # a portrait, stored sideways
    sample = next(s for s in _scan(tmp_path, data).samples if s.path.name == "IMG_0001.JPG")
    assert (sample.width, sample.height) == (64, 96)
    pixels = pixels_for_bucket(sample.path, (48, 80))  # the portrait bucket at resolution 64
    trained = Image.fromarray(((pixels.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
    assert trained.size == (48, 80) and corners(trained) == UPRIGHT


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.asarray(pattern().convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "scan16.png")
    assert Image.open(tmp_path / "scan16.png").mode == "I;16"
    loaded = np.asarray(load_image(tmp_path / "scan16.png"), dtype=int)
    assert np.abs(loaded - grey[:, :, None]).max() <= 1  # Pillow's own convert("RGB") gives all 255 here
    Image.fromarray(np.zeros((16, 24), np.float32)).save(tmp_path / "depth.tif")
    with pytest.raises(DatasetError, match=r"depth\.tif.*32-bit float"):
        load_image(tmp_path / "depth.tif")


def _see_through_grey(tmp_path):
    """The pattern with its grey field transparent, in the ways files express transparency."""
    image = pattern()
    rgba = image.convert("RGBA")
    alpha = np.where(np.all(np.asarray(image) == (128, 128, 128), axis=2), 0, 255).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "rgba.png")
    image.save(tmp_path / "colour-key.png", transparency=(128, 128, 128))
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    grey_index = palette.getpixel((23, 15))
    palette.save(tmp_path / "palette.png", transparency=grey_index)
    la = image.convert("LA")
    la.putalpha(Image.fromarray(alpha))
    la.save(tmp_path / "grey-alpha.png")
    return ["rgba.png", "colour-key.png", "palette.png", "grey-alpha.png"]


def test_transparency_of_every_kind_is_composited_on_white(tmp_path):
    for name in _see_through_grey(tmp_path):
        loaded = load_image(tmp_path / name)
        assert loaded.mode == "RGB"
        assert loaded.getpixel((23, 15)) == (255, 255, 255), name
        assert loaded.getpixel((0, 15)) != (255, 255, 255), name  # the opaque blue (or its grey) is kept


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    pattern().convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    assert Image.open(tmp_path / "print.jpg").mode == "CMYK"
    assert corners(load_image(tmp_path / "print.jpg")) == UPRIGHT


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_wide_gamut_profile_is_converted_to_srgb(tmp_path, fmt):
    colours = np.array([[[200, 100, 100], [60, 170, 80], [90, 90, 200], [128, 128, 128]]], np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    raw = Image.fromarray(colours)
    raw.save(tmp_path / "p3.img", format=fmt, icc_profile=p3_profile(), quality=100)
    raw.save(tmp_path / "srgb.img", format=fmt, icc_profile=srgb_profile(), quality=100)
    stored = np.asarray(Image.open(tmp_path / "p3.img").convert("RGB"), dtype=int)
    loaded = np.asarray(load_image(tmp_path / "p3.img"), dtype=int)
    expected = np.asarray(ImageCms.profileToProfile(Image.open(tmp_path / "p3.img"), io.BytesIO(p3_profile()),
                                                    ImageCms.createProfile("sRGB"), outputMode="RGB"), dtype=int)
    assert np.abs(loaded - expected).max() <= 1
    assert np.abs(loaded - stored).max() >= 15  # P3 numbers taken as sRGB would look visibly duller
    # a P3 red is more saturated than the same numbers in sRGB
    assert loaded[4, 4, 0] - loaded[4, 4, 1] > stored[4, 4, 0] - stored[4, 4, 1]
    # an sRGB-tagged file stays as it is
    srgb = np.asarray(Image.open(tmp_path / "srgb.img").convert("RGB"), dtype=int)
    assert np.abs(np.asarray(load_image(tmp_path / "srgb.img"), dtype=int) - srgb).max() <= 1


def test_camera_folder(tmp_path):
    data = make_subject(tmp_path / "data")
    save_phone_jpeg(data / "IMG_0001.JPG", 6, pattern(64, 96))  # a portrait, stored sideways
    pattern(96, 64).save(data / "DSC_0002.JPEG")
    (data / "img_0001.txt").write_bytes(b"\xef\xbb\xbf[trigger] at the beach  \r\n\r\n")  # BOM, CRLF, blanks
    (data / "DSC_0002.TXT").write_bytes("portrait of [trigger],\r\n\tsmiling\r\n".encode("utf-16"))  # Notepad
    (data / ".DS_Store").write_bytes(b"\0\0\0\1Bud1\0")
    (data / "._IMG_0001.JPG").write_bytes(b"\0\5\x16\x07\0\2\0\0Mac OS X")
    (data / "originals").mkdir()
    Image.new("RGB", (8, 8)).save(data / "originals" / "tiny.png")
    samples = {s.path.name: s for s in _scan(tmp_path, data).samples}
    assert sorted(samples) == ["DSC_0002.JPEG", "IMG_0001.JPG", "img0.png", "img1.png", "img2.png", "img3.png"]
    assert samples["IMG_0001.JPG"].caption == "zqx at the beach"
    assert samples["DSC_0002.JPEG"].caption == "portrait of zqx, smiling"
    assert (samples["IMG_0001.JPG"].width, samples["IMG_0001.JPG"].height) == (64, 96)


def test_caption_line_endings_do_not_change_the_dataset_hash(tmp_path):
    data = make_subject(tmp_path / "data")
    (data / "img0.txt").write_text("[trigger] on a table\n")
    first = _scan(tmp_path, data).sha256
    (data / "img0.txt").write_bytes(b"[trigger] on a table \r\n")
    assert _scan(tmp_path, data).sha256 == first


def _duplicate_stems(data):
    Image.new("RGB", (64, 64), "red").save(data / "img1.jpg")  # next to img1.png


def _duplicate_captions(data):
    (data / "img1.txt").write_text("photo of [trigger]")
    (data / "IMG1.TXT").write_text("[trigger] again")


def _tiny(data):
    Image.new("RGB", (17, 13), "red").save(data / "thumb.png")


def _truncated_jpeg(data):
    save_phone_jpeg(data / "IMG_0009.JPG", 6, pattern(96, 64))
    raw = (data / "IMG_0009.JPG").read_bytes()
    (data / "IMG_0009.JPG").write_bytes(raw[: len(raw) * 2 // 3])


def _heic(data):
    (data / "IMG_0010.HEIC").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))


def _only_in_subfolder(data):
    (data / "photos").mkdir()
    for path in list(data.glob("img*.png")):
        path.rename(data / "photos" / path.name)


def _png_named_jpg_is_fine_but_text_named_jpg_is_not(data):
    Image.new("RGB", (64, 64), "red").save(data / "red.jpg", format="PNG")
    (data / "notes.jpg").write_text("shopping list")


BAD = {
    "a.jpg next to a.png": (_duplicate_stems, ["img1.jpg", "img1.png", "two images for the name"]),
    "captions differing in case": (_duplicate_captions, ["IMG1.TXT", "img1.txt", "two captions"]),
    "tiny image": (_tiny, ["thumb.png", "17x13", "too small for resolution 64"]),
    "truncated phone jpeg": (_truncated_jpeg, ["IMG_0009.JPG", "not a readable image"]),
    "heic": (_heic, ["IMG_0010.HEIC", "export it as JPEG"]),
    "images only in a sub-folder": (_only_in_subfolder, ["has no images", "'photos' holds images"]),
    "text file named .jpg": (_png_named_jpg_is_fine_but_text_named_jpg_is_not, ["notes.jpg", "not a readable image"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_photo_folders_fail_before_training(run_cli, tmp_path, case):
    make, words = BAD[case]
    data = make_subject(tmp_path / "data")
    make(data)
    line = _fails_before_training(run_cli, tmp_path, write_config(tmp_path, folder=data), match=words[0])
    for word in words[1:]:
        assert word in line, line
