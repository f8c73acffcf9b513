"""The chained [upscale] stage: generate -> Real-ESRGAN -> PNG whose recipe replays the upscaled pixels."""

import numpy as np

from localflux import generate
from localflux.recipe import read_recipe
from localflux.replay import replay

from conftest import pixels

MODEL = "realesr-animevideov3"  # the small SRVGGNetCompact: keeps CPU tests fast; x4plus works the same way


def config(**upscale):
    return {"model": {"source": "tiny"}, "prompt": {"subject": "a red fox"}, "size": {"width": 64, "height": 48},
            "sampling": {"seed": 3, "steps": 2},
            "upscale": {"enabled": True, "model": MODEL, "scale": 2.0, **upscale}}


def test_saved_png_is_the_upscaled_one_and_replays(tmp_path, run_cli):
    from localflux.upscale import upscale_pil

    result = generate(config(keep_original=True), out_dir=tmp_path, progress=False)[0]
    assert result.path.name == "0001-s3.png" and result.image.size == (128, 96)
    base = tmp_path / "0001-s3-base.png"
    assert base.is_file() and pixels(base).shape == (48, 64, 3)
    step = read_recipe(result.path)["upscale_steps"][0]
    assert step["model"] == MODEL and len(step["sha256"]) == 64 and step["scale"] == 2.0
    assert step["tile"] > 0 and step["overlap"] >= 0 and step["output_size"] == [128, 96]
    assert read_recipe(base)["upscale_steps"] == []
    again, _ = upscale_pil(result.base_image, model=MODEL, scale=2.0, progress=False)
    assert np.array_equal(pixels(again), pixels(result.path))
    for path in (result.path, base):
        code, out, err = run_cli("replay", path, "--verify", "--no-progress")
        assert code == 0 and "identical" in err, err


def test_tiles_given_in_config_are_used_and_recorded(tmp_path):
    result = generate(config(tile=32), out_dir=tmp_path, progress=False)[0]
    step = result.recipe["upscale_steps"][0]
    assert step["tile"] == 32 and step["tiles"] == 4  # 64x48 input in 32 px tiles: 2 x 2
    assert replay(result.path, progress=False).identical


def test_standalone_upscale_of_a_render_keeps_the_recipe_and_replays(tmp_path, run_cli):
    path = generate({**config(), "upscale": {"enabled": False}}, out_dir=tmp_path / "r", progress=False)[0].path
    code, out, err = run_cli("upscale", path, "--model", MODEL, "--scale", "1.5", "--out", tmp_path / "big", "--no-progress")
    assert code == 0, err
    upscaled = out.strip()
    recipe = read_recipe(upscaled)
    assert recipe["seed"] == 3 and recipe["upscale_steps"][0]["scale"] == 1.5
    assert pixels(upscaled).shape == (72, 96, 3)
    code, out, err = run_cli("replay", upscaled, "--verify", "--no-progress")
    assert code == 0 and "identical" in err, err


def test_replay_refuses_a_changed_upscaler(tmp_path, run_cli):
    result = generate(config(), out_dir=tmp_path, progress=False)[0]
    weights = result.recipe["upscale_steps"][0]["path"]
    data = bytearray(open(weights, "rb").read())
    data[-1] ^= 0x01
    open(weights, "wb").write(bytes(data))
    try:
        code, out, err = run_cli("replay", result.path, "--verify")
        assert code == 2 and "upscaler" in err and weights in err and "sha256" in err
    finally:
        data[-1] ^= 0x01
        open(weights, "wb").write(bytes(data))
