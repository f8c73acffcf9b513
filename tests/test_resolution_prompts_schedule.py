import logging

import pytest

from localflux import generate
from localflux.errors import ConfigError
from localflux.prompts import join_prompt
from localflux.resolution import parse_aspect, resolve_size, snap
from localflux.schedule import flux_sigmas


@pytest.mark.parametrize("mp,aspect,expected", [
    (1, "1:1", (1024, 1024)),
    (1, "3:4", (880, 1184)),     # sqrt(2^20 * 3/4) = 886.8 -> 880; sqrt(2^20 * 4/3) = 1182.4 -> 1184
    (2, "3:4", (1248, 1680)),    # 1254.1 -> 1248, 1672.2 -> 1680
    (2, "2:3", (1184, 1776)),    # 1182.4 -> 1184, 1773.6 -> 1776
    (4, "16:9", (2736, 1536)),   # 2730.7 -> 2736, 1536 -> 1536
    (0.25, "1:1", (512, 512)),
])
def test_megapixels_and_aspect(mp, aspect, expected):
    size = resolve_size(None, None, mp, aspect)
    assert (size.width, size.height) == expected
    assert abs(size.width * size.height / (mp * 2**20) - 1) < 0.02


def test_width_height_snap_to_nearest_multiple_of_16():
    size = resolve_size(1000, 770, None, None)
    assert (size.width, size.height) == (1008, 768) and size.snapped and size.requested == (1000, 770)
    assert not resolve_size(512, 768, None, None).snapped
    assert snap(8) == 16 and snap(24) == 32 and snap(23) == 16
    one_side = resolve_size(1024, None, None, "16:9")
    assert (one_side.width, one_side.height) == (1024, 576)


def test_bad_aspect_and_too_large():
    with pytest.raises(ConfigError, match="'wide' is not a ratio"):
        parse_aspect("wide")
    with pytest.raises(ConfigError, match="two positive numbers"):
        parse_aspect("0:1")
    with pytest.raises(ConfigError, match="larger than 8192"):
        resolve_size(None, None, 16, "8:1")


def test_final_size_is_said(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="localflux"):
        result = generate({"model": {"source": "tiny"}, "prompt": {"subject": "x"},
                           "size": {"width": 70, "height": 50}, "sampling": {"seed": 1, "steps": 1}},
                          save=False, progress=False)[0]
    assert result.image.size == (64, 48)
    assert "size 64x48 (asked for 70x50" in caplog.text  # logged by the library ...
    assert "size 64x48" not in capsys.readouterr().err  # ... and not printed: a script's stderr stays its own


def test_cli_prints_library_status_lines(run_cli, tmp_path):
    code, _, err = run_cli("generate", "--model", "tiny", "--prompt", "x", "--width", "70", "--height", "50",
                           "--steps", "1", "--seed", "1", "--out", tmp_path)
    assert code == 0, err
    assert "localflux: size 64x48 (asked for 70x50" in err
    assert logging.getLogger("localflux").handlers == []  # the command's handler is removed afterwards


def test_prompt_template_joins_parts_in_fixed_order():
    text = join_prompt({"lighting": "rembrandt", "subject": "portrait of a fisherman", "styling": ["tri-x", "wool hat"],
                        "background": "", "quality": "sharp", "lens": "85MM"})
    assert text == ("portrait of a fisherman, shot on Kodak Tri-X 400, black and white film, rich contrast, visible grain, "
                    "wool hat, 85mm portrait lens at f/1.8, shallow depth of field, creamy bokeh, "
                    "Rembrandt lighting, a triangle of light on the shadowed cheek, sharp")


def test_recipe_keeps_parts_and_final_text():
    result = generate({"model": {"source": "tiny"}, "size": {"width": 32, "height": 32}, "sampling": {"seed": 1, "steps": 1},
                       "prompt": {"subject": "a fisherman", "lighting": "window", "negative": "blur"}},
                      save=False, progress=False)[0]
    prompt = result.recipe["prompt"]
    assert prompt["parts"]["lighting"] == "window" and prompt["parts"]["subject"] == "a fisherman"
    assert prompt["final"] == "a fisherman, soft window light from the side" == prompt["clip"] == prompt["t5"]
    assert prompt["negative"] == "blur"


def test_separate_clip_and_t5_prompts_change_the_image():
    import numpy as np

    base = {"model": {"source": "tiny"}, "size": {"width": 32, "height": 32}, "sampling": {"seed": 1, "steps": 2}}
    one = generate({**base, "prompt": {"subject": "a fox"}}, save=False, progress=False)[0]
    two = generate({**base, "prompt": {"subject": "a fox", "t5": "a fox in a snowy forest"}}, save=False, progress=False)[0]
    assert two.recipe["prompt"]["clip"] == "a fox" and two.recipe["prompt"]["t5"] == "a fox in a snowy forest"
    assert not np.array_equal(np.asarray(one.image), np.asarray(two.image))


def test_warns_when_clip_truncates(caplog):
    long_prompt = "a very detailed portrait " * 5  # > 77 tokens for the tiny character-level CLIP vocabulary
    with caplog.at_level(logging.WARNING, logger="localflux"):
        result = generate({"model": {"source": "tiny"}, "prompt": {"subject": long_prompt},
                           "size": {"width": 32, "height": 32}, "sampling": {"seed": 1, "steps": 1}},
                          save=False, progress=False)[0]
    assert any("CLIP reads only the first 77" in w for w in result.recipe["warnings"])
    assert "CLIP reads only the first 77" in caplog.text
    short = generate({"model": {"source": "tiny"}, "prompt": {"subject": "a fox"}, "size": {"width": 32, "height": 32},
                      "sampling": {"seed": 1, "steps": 1}}, save=False, progress=False)[0]
    assert short.recipe["warnings"] == []


def test_clip_window_is_the_models_own():
    # a CLIP tokenizer with a 16-token window: FluxPipeline truncates there, so the warning must too
    from localflux.families.registry import FAMILIES
    from localflux.render import RenderRequest
    from localflux.families.flux1.tiny import build_tiny_components

    from diffusers import FluxPipeline

    components = build_tiny_components("schnell")
    components["tokenizer"].model_max_length = 16
    pipe = FluxPipeline(**components)
    assert pipe.tokenizer_max_length == 16

    def request(prompt):
        return RenderRequest({"clip": prompt, "t5": prompt}, None, 32, 32, 1, 0.0, 1.0, 64, False)

    def warn_if_truncated(pipe, request):
        return FAMILIES.by_name("flux1").prompt_warnings(pipe, request)

    assert warn_if_truncated(pipe, request("a" * 10)) == []  # 10 characters + end token fit in 16
    (warning,) = warn_if_truncated(pipe, request("a" * 20))
    assert "CLIP reads only the first 16" in warning


@pytest.mark.parametrize("variant", ["dev", "schnell"])
@pytest.mark.parametrize("steps,width,height", [(4, 64, 64), (28, 1024, 1024), (20, 1248, 1680)])
def test_sigmas_match_diffusers_scheduler(variant, steps, width, height):
    import json
    from importlib import resources

    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    name = "FLUX.1-dev" if variant == "dev" else "FLUX.1-schnell"
    config = json.loads(resources.files("localflux").joinpath("families", "flux1", "configs", name, "scheduler",
                                                              "scheduler_config.json").read_text())
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    seq = (width // 16) * (height // 16)
    mu = calculate_shift(seq, config["base_image_seq_len"], config["max_image_seq_len"], config["base_shift"], config["max_shift"])
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    expected = scheduler.sigmas[:-1].double().numpy()
    assert np.allclose(flux_sigmas(config, steps, width, height), expected, atol=1e-6)


def test_recorded_sigmas_are_the_shifted_ones_for_dev():
    from localflux.schedule import flux_sigmas as sig

    result = generate({"model": {"source": "tiny-dev"}, "prompt": {"subject": "x"}, "size": {"width": 64, "height": 64},
                       "sampling": {"seed": 1, "steps": 4, "max_sequence_length": 16}}, save=False, progress=False)[0]
    shifted = sig({"use_dynamic_shifting": True, "base_image_seq_len": 256, "max_image_seq_len": 4096,
                   "base_shift": 0.5, "max_shift": 1.15}, 4, 64, 64)
    assert result.recipe["sigmas"] == pytest.approx(shifted, abs=1e-6)
    assert result.recipe["sigmas"] != pytest.approx([1.0, 0.75, 0.5, 0.25], abs=1e-3)
