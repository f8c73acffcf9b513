"""Single-file FLUX.1 Fill and Kontext transformers (issue 13), saved with diffusers keys and with BFL keys at
the tiny width, with ``--base`` a FLUX.1 folder: Fill is detected from its input width and renders like
``FluxFillPipeline``; Kontext runs with ``[model] preset = "kontext"``; the recipe says the preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import pixels
from flux_keys import diffusers_to_bfl
from image_models import box_mask, noise_picture, save_task_model
from localflux import generate

PROMPT = "a red fox in snow"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("single-file-tasks")
    made = {"photo": noise_picture(root / "photo.png", (48, 32)),
            "mask": box_mask(root / "mask.png", (48, 32), (8, 8, 32, 24))}
    for kind in ("base", "fill", "kontext"):
        made[kind] = root / kind
        save_task_model(kind, "tiny", made[kind])
    for kind in ("fill", "kontext"):
        transformer = FluxTransformer2DModel.from_pretrained(made[kind], subfolder="transformer")
        state = {k: v.contiguous() for k, v in transformer.state_dict().items()}
        made[kind, "diffusers"] = root / f"{kind}-diffusers.safetensors"
        made[kind, "bfl"] = root / f"{kind}-bfl.safetensors"
        save_file(state, made[kind, "diffusers"])
        save_file({k: v.contiguous() for k, v in diffusers_to_bfl(state).items()}, made[kind, "bfl"])
    return made


def diffusers_render(files, role: str, **kwargs):
    """diffusers' own pipeline of ``role``: the base folder's VAE and text encoders, the task model's transformer."""
    from diffusers import FluxTransformer2DModel
    from diffusers.utils import load_image

    from localflux.families.flux1.pipelines import pipeline_class

    transformer = FluxTransformer2DModel.from_pretrained(files[role], subfolder="transformer")
    pipe = pipeline_class(role).from_pretrained(files["base"], transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    for key in ("image", "mask_image"):
        if key in kwargs:
            kwargs[key] = load_image(str(kwargs[key]))
    return pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(5), max_sequence_length=32,
                num_inference_steps=2, **kwargs).images[0]


def ours(model: dict, seed: int = 5, **given):
    config = {"model": model, "prompt": {"subject": PROMPT},
              "sampling": {"seed": seed, "max_sequence_length": 32, **given.pop("sampling", {})}, **given}
    (result,) = generate(config, save=False, progress=False)
    return result


@pytest.mark.parametrize("layout", ["diffusers", "bfl"])
def test_single_file_fill_is_detected_and_renders_like_fill_pipeline(files, layout):
    result = ours({"source": str(files["fill", layout]), "base": str(files["base"])}, sampling={"steps": 2},
                  input={"image": str(files["photo"]), "mask": str(files["mask"])})
    assert result.recipe["task"]["name"] == "fill" and result.recipe["task"]["strength"] == 1.0
    assert result.recipe["model"]["preset"] == result.recipe["config"]["model"]["preset"] == "fill"
    assert result.recipe["config"]["sampling"]["guidance"] == 30.0  # the fill preset's

    theirs = diffusers_render(files, "fill", image=files["photo"], mask_image=files["mask"], width=48, height=32)
    assert result.image.size == theirs.size
    assert np.abs(pixels(result.image) - pixels(theirs)).max() == 0


@pytest.mark.parametrize("layout", ["diffusers", "bfl"])
def test_single_file_kontext_runs_the_kontext_task(files, layout, monkeypatch):
    from localflux.tasks import kontext

    monkeypatch.setattr(kontext, "MAX_AREA", 64 * 48)  # diffusers' 1 MP is slow on a CPU; same code path
    given = dict(sampling={"steps": 2}, input={"references": [str(files["photo"])]})
    single = ours({"source": str(files["kontext", layout]), "base": str(files["base"]), "preset": "kontext"}, **given)
    assert single.recipe["task"]["name"] == "kontext"
    assert single.recipe["model"]["preset"] == single.recipe["config"]["model"]["preset"] == "kontext"
    theirs = diffusers_render(files, "kontext", image=files["photo"], width=48, height=32, max_area=64 * 48)
    assert single.image.size == theirs.size
    assert np.abs(pixels(single.image) - pixels(theirs)).max() == 0


def test_single_file_kontext_without_the_preset_is_dev_and_refuses_references(files, run_cli):
    code, out, err = run_cli("generate", "--model", files["kontext", "bfl"], "--base", files["base"], "--prompt", "x",
                             "--reference", files["photo"], "--dry-run")
    assert code == 2 and 'preset = "kontext"' in err and len(err.strip().splitlines()) == 1


def test_single_file_fill_replays(files, tmp_path, run_cli):
    code, out, err = run_cli("generate", "--model", files["fill", "bfl"], "--base", files["base"], "--prompt", "x",
                             "--image", files["photo"], "--mask", files["mask"], "--steps", "2", "--seed", "3",
                             "--max-sequence-length", "32", "--out", tmp_path, "--no-progress")
    assert code == 0, err
    code, out, err = run_cli("replay", out.strip(), "--verify", "--no-progress")
    assert code == 0 and "identical" in out + err
