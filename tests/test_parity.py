"""localflux renders what diffusers' FluxPipeline renders from the same folder, seed and settings."""

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline

from localflux import generate

from conftest import pixels


def diffusers_render(folder, prompt, width, height, steps, guidance, seed, max_len, negative=None, true_cfg=1.0):
    pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, negative_prompt=negative, true_cfg_scale=true_cfg, width=width, height=height,
                num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=max_len,
                generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def assert_close(a, b):
    diff = np.abs(pixels(a) - pixels(b))
    assert diff.max() <= 1, f"max difference {diff.max()} levels"
    assert (diff.max(axis=-1) == 0).mean() >= 0.999


@pytest.mark.parametrize("variant,steps,guidance", [("dev", 6, 3.5), ("schnell", 4, 0.0)])
def test_matches_flux_pipeline(tiny_folders, variant, steps, guidance):
    folder = tiny_folders[variant]
    config = {"model": {"source": str(folder)}, "prompt": {"subject": "a red fox in snow"},
              "size": {"width": 96, "height": 64}, "sampling": {"seed": 7, "steps": steps, "guidance": guidance,
                                                                "max_sequence_length": 64}}
    ours = generate(config, save=False, progress=False)[0]
    theirs = diffusers_render(folder, "a red fox in snow", 96, 64, steps, guidance, 7, 64)
    assert ours.image.size == (96, 64)
    assert_close(ours.image, theirs)
    assert ours.recipe["model"]["preset"] == variant


def test_true_cfg_with_negative_prompt_matches(tiny_folders):
    folder = tiny_folders["dev"]
    config = {"model": {"source": str(folder)}, "prompt": {"subject": "a lighthouse", "negative": "fog"},
              "size": {"width": 64, "height": 64},
              "sampling": {"seed": 3, "steps": 4, "guidance": 3.5, "true_cfg": 4.0, "max_sequence_length": 32}}
    ours = generate(config, save=False, progress=False)[0]
    theirs = diffusers_render(folder, "a lighthouse", 64, 64, 4, 3.5, 3, 32, negative="fog", true_cfg=4.0)
    assert_close(ours.image, theirs)
    without_cfg = generate({**config, "sampling": {**config["sampling"], "true_cfg": 1.0}}, save=False, progress=False)[0]
    assert np.abs(pixels(without_cfg.image) - pixels(ours.image)).max() > 5  # CFG really ran
    assert ours.recipe["decisions"]["true_cfg_active"] is True


def test_presets_fill_defaults_from_the_model(tiny_folders):
    dev = generate({"model": {"source": str(tiny_folders["dev"])}, "prompt": {"subject": "x"},
                    "size": {"width": 32, "height": 32}, "sampling": {"seed": 1, "steps": 2}}, save=False, progress=False)[0]
    assert dev.recipe["config"]["sampling"]["guidance"] == 3.5
    assert dev.recipe["config"]["sampling"]["max_sequence_length"] == 512
    schnell = generate({"model": {"source": "tiny"}, "prompt": {"subject": "x"}, "size": {"width": 32, "height": 32},
                        "sampling": {"seed": 1}}, save=False, progress=False)[0]
    assert schnell.recipe["config"]["sampling"]["steps"] == 4
    assert schnell.recipe["config"]["sampling"]["max_sequence_length"] == 256


# Models of other shapes (tests/shape_models.py): the dev-like one has a factor-4 VAE, so 72x56 is a
# size FluxPipeline renders as asked (multiples of 8), and its own dynamic-shift line; the schnell-like
# one a static shift of 2. The folder names say the opposite preset on purpose.
@pytest.mark.parametrize("name,preset,size,steps,guidance", [
    ("schnell-named-dev", "dev", (72, 56), 5, 4.0),
    ("dev-named-schnell", "schnell", (96, 48), 3, 0.0),
])
def test_other_shapes_match_flux_pipeline(shape_folders, name, preset, size, steps, guidance):
    folder = shape_folders[name]
    config = {"model": {"source": str(folder)}, "prompt": {"subject": "a red fox in snow"},
              "size": {"width": size[0], "height": size[1]},
              "sampling": {"seed": 11, "steps": steps, "guidance": guidance, "max_sequence_length": 48}}
    ours = generate(config, save=False, progress=False)[0]
    theirs = diffusers_render(folder, "a red fox in snow", *size, steps, guidance, 11, 48)
    assert ours.image.size == theirs.size == size
    assert_close(ours.image, theirs)
    assert ours.recipe["model"]["preset"] == preset
    pipe = FluxPipeline.from_pretrained(folder)
    pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=None if preset == "schnell" else _mu(pipe, size))
    assert np.allclose(ours.recipe["sigmas"], pipe.scheduler.sigmas[:-1].tolist(), atol=1e-6)


def _mu(pipe, size):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = pipe.scheduler.config
    tokens = (size[0] // (2 * pipe.vae_scale_factor)) * (size[1] // (2 * pipe.vae_scale_factor))
    return calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
