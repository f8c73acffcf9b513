"""Alpha channels: through the network as grey ("model", Real-ESRGAN's default) or Lanczos ("resize")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from upscale_common import DATA

from localflux import cli
from localflux.config import config_from_dict
from localflux.errors import ConfigError, LocalFluxError
from localflux.replay import apply_upscale_steps, check_upscale_steps
from localflux.upscale import pngio
from localflux.upscale.engine import to_integer
from localflux.upscale.images import LUMA, Picture, picture_from_pil, resize, target_size
from localflux.upscale.stage import Upscaler, upscale_file, upscale_pil

MODEL = "realesr-animevideov3"  # small SRVGG; the rule is the same for every model
ANIME = "realesrgan-x4plus-anime"  # its output on white is 0.9965: what an opaque alpha must not become
EXTRA_MODELS = (ANIME,)


@pytest.fixture(autouse=True)
def _weights_env(weights_dir, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))


def alpha_plane(height=17, width=23) -> np.ndarray:
    """A soft disc with a hard-edged hole: edges, ramps, fully opaque and fully clear parts."""
    y, x = np.mgrid[:height, :width]
    disc = np.clip(1.5 - np.hypot(y - height / 2, x - width / 2) / 5, 0, 1)
    disc[3:6, 3:7] = 0.0
    return disc.astype(np.float32)


def rgba_image() -> Image.Image:
    rgb = Image.open(DATA / "astronaut-64.png").convert("RGB").crop((5, 9, 28, 26))
    rgb.putalpha(Image.fromarray(np.round(alpha_plane() * 255).astype(np.uint8)))
    return rgb


@pytest.mark.parametrize("scale", [4, 3])
def test_model_alpha_is_the_alpha_plane_upscaled_as_grey_with_the_same_tiles(upscaler, scale):
    picture = picture_from_pil(rgba_image())
    samples, record = upscaler.run(picture, scale, tile=8, overlap=4, alpha="model", progress=False)
    assert record["alpha"] == "model" and record["tiles"] == 9
    # independently: the engine on the alpha plane as three equal channels, 601 luma, Lanczos, ncnn rounding
    grey = np.repeat(picture.alpha[:, :, None], 3, axis=2)
    native, info = upscaler.engine.upscale(grey, tile=8, overlap=4, progress=False)
    assert info.tiles == 9
    size = target_size(picture.size, scale)
    if scale == 4:
        expected = to_integer(native @ LUMA, 255)
    else:
        expected = to_integer(np.stack([resize(native[:, :, c], size) for c in range(3)], axis=2) @ LUMA, 255)
    np.testing.assert_array_equal(samples[:, :, 3], expected)
    # the colour does not depend on alpha, and the network's alpha is not the Lanczos one
    rgb, _ = upscaler.run(Picture(picture.color, None, False, 8), scale, tile=8, overlap=4, progress=False)
    np.testing.assert_array_equal(samples[:, :, :3], rgb)
    resized = to_integer(resize(picture.alpha, size), 255)
    assert np.abs(samples[:, :, 3].astype(int) - resized).max() > 10


@pytest.mark.parametrize("mode", ["model", "resize"])
@pytest.mark.parametrize("channels", [4, 2])
def test_16_bit_rgba_and_grey_alpha(tmp_path, upscaler, mode, channels):
    rgb = np.asarray(rgba_image().convert("RGB"), dtype=np.uint16) * 257 + 77
    alpha16 = np.round(alpha_plane() * 65535).astype(np.uint16)
    alpha16[alpha16 == 65535] -= 3  # real 16-bit values, not 8-bit ones scaled
    color = rgb if channels == 4 else rgb[:, :, :1]
    source = tmp_path / "in16.png"
    source.write_bytes(pngio.encode_png16(np.dstack([color, alpha16]), {}))
    data, record = upscale_file(source, upscaler, 2, tile=8, overlap=4, alpha=mode, progress=False)
    (tmp_path / "out.png").write_bytes(data)
    out = pngio.read_png16(tmp_path / "out.png")
    assert out.shape == (34, 46, channels) and record["alpha"] == mode
    plane = alpha16.astype(np.float32) / np.float32(65535)
    if mode == "resize":
        expected = to_integer(resize(plane, (46, 34)), 65535)
    else:
        grey = Picture(np.repeat(plane[:, :, None], 3, axis=2), None, True, 16)
        expected = upscaler.run(grey, 2, tile=8, overlap=4, progress=False)[0][:, :, 0]
    np.testing.assert_array_equal(out[:, :, -1], expected)
    assert np.any(out[:, :, -1] % 257 != 0)


@pytest.mark.parametrize("mode", ["model", "resize"])
@pytest.mark.parametrize("model", [MODEL, ANIME])
def test_fully_opaque_alpha_stays_fully_opaque(upscaler, mode, model):
    rgb = Image.open(DATA / "astronaut-64.png").convert("RGB").crop((0, 0, 12, 10))
    out8, _ = upscale_pil(rgb.convert("RGBA"), model=model, scale=4, device="cpu", alpha=mode, progress=False)
    assert np.all(np.asarray(out8)[:, :, 3] == 255)
    picture = picture_from_pil(rgb.convert("RGBA"))
    picture.bits = 16
    samples, _ = Upscaler.load(model, device="cpu").run(picture, 3, tile=8, alpha=mode, progress=False)
    assert samples.dtype == np.uint16 and np.all(samples[:, :, 3] == 65535)


def test_why_opaque_needs_care_the_anime_model_darkens_white():
    white = Picture(np.ones((10, 12, 3), np.float32), None, True, 8)
    grey, _ = Upscaler.load(ANIME, device="cpu").run(white, 4, progress=False)
    assert grey.max() < 255  # as the alpha of an opaque picture, this would let the background show through


def test_replay_redoes_each_mode_and_old_records_mean_resize():
    image = rgba_image()
    for mode in ("model", "resize"):
        result, record = upscale_pil(image, model=MODEL, scale=2.5, device="cpu", tile=8, alpha=mode, progress=False)
        step = json.loads(json.dumps(record))  # as read back from the PNG
        check_upscale_steps([step])
        again = apply_upscale_steps(image, [step], device="cpu", progress=False)
        np.testing.assert_array_equal(np.asarray(again), np.asarray(result))
        if mode == "resize":
            del step["alpha"]  # recipes written before the option existed
            old = apply_upscale_steps(image, [step], device="cpu", progress=False)
            np.testing.assert_array_equal(np.asarray(old), np.asarray(result))
    with pytest.raises(ConfigError, match="alpha"):
        check_upscale_steps([dict(step, alpha="bicubic")])


def test_cli_flag_and_config_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["upscale", "weights"])
    rgba_image().save(tmp_path / "sticker.png")
    code = cli.main(["upscale", str(tmp_path / "sticker.png"), "--model", MODEL, "--alpha", "resize",
                     "--out", str(tmp_path / "big"), "--no-progress"])
    out = capsys.readouterr().out.strip()
    assert code == 0
    with Image.open(out) as image:
        assert json.loads(image.text["localflux-upscale"])["upscale_steps"][0]["alpha"] == "resize"
    assert config_from_dict({"upscale": {"alpha": "resize"}}).upscale.alpha == "resize"
    assert config_from_dict({}).upscale.alpha == "model"
    with pytest.raises(LocalFluxError, match="alpha"):
        config_from_dict({"upscale": {"alpha": "bicubic"}})
