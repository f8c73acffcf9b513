"""Image inputs (issue 13): parity with diffusers' FLUX.1 image pipelines, seeds, replay, paste-back, outpaint."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image

from localflux import generate

from conftest import pixels
from image_models import box_mask, noise_picture, save_task_model

PROMPT = "a red fox in snow"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-models")
    built = {}

    def get(kind, shape):
        if (kind, shape) not in built:
            folder = root / f"{kind}-{shape}"
            save_task_model(kind, shape, folder)
            built[kind, shape] = folder
        return built[kind, shape]

    return get


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    return {"photo": noise_picture(root / "photo.png", (80, 48)),
            "other": noise_picture(root / "other.png", (40, 56), seed=1),
            "mask": box_mask(root / "mask.png", (80, 48), (16, 8, 56, 40))}


def diffusers_render(folder, role, seed, **kwargs):
    from diffusers.utils import load_image

    from localflux.families.flux1.pipelines import pipeline_class

    pipe = pipeline_class(role).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    for key in ("image", "mask_image"):
        if key in kwargs:
            kwargs[key] = load_image(str(kwargs[key]))
    return pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


def ours(folder, seed=5, **given):
    sampling = given.pop("sampling", {})
    config = {"model": {"source": str(folder)}, "prompt": {"subject": PROMPT},
              "sampling": {"seed": seed, "max_sequence_length": 48, **sampling}, **given}
    return generate(config, save=False, progress=False)


def assert_same(a, b):
    assert a.size == b.size
    assert np.abs(pixels(a) - pixels(b)).max() == 0


SHAPES = ["tiny", "schnell-named-dev"]


@pytest.mark.parametrize("shape", SHAPES)
def test_img2img_matches_diffusers(models, pictures, shape):
    folder = models("base", shape)
    (result,) = ours(folder, input={"image": str(pictures["photo"]), "strength": 0.5},
                     size={"width": 64, "height": 48}, sampling={"steps": 4, "guidance": 3.5})
    theirs = diffusers_render(folder, "img2img", 5, image=pictures["photo"], strength=0.5, width=64, height=48,
                              num_inference_steps=4, guidance_scale=3.5, max_sequence_length=48)
    assert_same(result.image, theirs)
    assert result.recipe["task"]["name"] == "img2img" and result.recipe["task"]["strength"] == 0.5
    assert result.recipe["inputs"][0]["steps"][0]["op"] == "resize"


@pytest.mark.parametrize("shape", SHAPES)
def test_inpaint_matches_diffusers(models, pictures, shape):
    folder = models("base", shape)
    (result,) = ours(folder, input={"image": str(pictures["photo"]), "mask": str(pictures["mask"])},
                     sampling={"steps": 4, "guidance": 3.5})
    theirs = diffusers_render(folder, "inpaint", 5, image=pictures["photo"], mask_image=pictures["mask"],
                              width=80, height=48, num_inference_steps=4, guidance_scale=3.5, max_sequence_length=48)
    assert_same(result.image, theirs)
    assert result.recipe["task"]["strength"] == 0.6 and result.recipe["task"]["strength_default"]
    assert "Denoising strength: 0.6" in __import__("localflux.recipe", fromlist=["x"]).parameters_text(result.recipe)


@pytest.mark.parametrize("shape", SHAPES)
def test_fill_matches_diffusers(models, pictures, shape):
    folder = models("fill", shape)
    (result,) = ours(folder, input={"image": str(pictures["photo"]), "mask": str(pictures["mask"])},
                     sampling={"steps": 3})
    assert result.recipe["config"]["model"]["preset"] == "fill"
    assert result.recipe["config"]["sampling"]["guidance"] == 30.0
    theirs = diffusers_render(folder, "fill", 5, image=pictures["photo"], mask_image=pictures["mask"],
                              width=80, height=48, num_inference_steps=3, max_sequence_length=48)
    assert_same(result.image, theirs)
    assert result.recipe["task"]["strength"] == 1.0


@pytest.mark.parametrize("shape", ["tiny", "dev-named-schnell"])
def test_kontext_matches_diffusers(models, pictures, shape, monkeypatch):
    from localflux.tasks import kontext

    monkeypatch.setattr(kontext, "MAX_AREA", 96 * 64)  # diffusers' 1 MP default is slow on a CPU; same code path
    folder = models("kontext", shape)
    (result,) = ours(folder, input={"references": [str(pictures["photo"])]}, sampling={"steps": 2})
    assert result.recipe["config"]["model"]["preset"] == "kontext"
    theirs = diffusers_render(folder, "kontext", 5, image=pictures["photo"], width=80, height=48, max_area=96 * 64,
                              num_inference_steps=2, guidance_scale=3.5, max_sequence_length=48)
    assert_same(result.image, theirs)
    assert [result.recipe["size"]["width"], result.recipe["size"]["height"]] == list(theirs.size)


def test_kontext_stitches_references(models, pictures, monkeypatch):
    from localflux.tasks import kontext

    monkeypatch.setattr(kontext, "MAX_AREA", 96 * 64)
    (result,) = ours(models("kontext", "tiny"), input={"references": [str(pictures["photo"]), str(pictures["other"])]},
                     sampling={"steps": 1})
    task = result.recipe["task"]
    assert task["stitched"]["size"] == [80 + round(40 * 48 / 56), 48]
    assert [step["op"] for step in result.recipe["inputs"][1]["steps"]] == ["resize", "stitch"]


def test_kontext_resolutions_copy_matches_diffusers():
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    from localflux.tasks import kontext

    assert kontext.PREFERRED_KONTEXT_RESOLUTIONS == PREFERRED_KONTEXT_RESOLUTIONS


def test_strength_defaults_are_the_pipelines():
    from localflux.families.flux1.pipelines import pipeline_class
    from localflux.tasks.common import DEFAULT_STRENGTH

    for role, value in DEFAULT_STRENGTH.items():
        assert inspect.signature(pipeline_class(role).__call__).parameters["strength"].default == value


@pytest.mark.parametrize("kind,given", [
    ("base", {"image": "photo", "strength": 0.7}),
    ("base", {"image": "photo", "mask": "mask"}),
    ("fill", {"image": "photo", "mask": "mask"}),
])
def test_batch_item_equals_single_seed(models, pictures, kind, given):
    folder = models(kind, "tiny")
    inputs = {k: str(pictures[v]) if isinstance(v, str) else v for k, v in given.items()}
    batch = ours(folder, seed=20, input=inputs, sampling={"steps": 2, "count": 3, "batch_size": 3})
    single = ours(folder, seed=22, input=inputs, sampling={"steps": 2})
    assert np.abs(pixels(batch[2].image) - pixels(single[0].image)).max() <= 1
    assert batch[2].recipe["decisions"]["batch_seeds"] == [20, 21, 22]


def test_replay_verifies_and_refuses_a_changed_input(models, pictures, tmp_path, run_cli):
    import shutil

    photo = shutil.copy(pictures["photo"], tmp_path / "me.png")
    code, out, err = run_cli("generate", "--model", models("base", "tiny"), "--prompt", "fox", "--seed", "3",
                             "--steps", "3", "--image", photo, "--strength", "0.4", "--out", tmp_path / "out",
                             "--no-progress")
    assert code == 0, err
    png = out.strip()
    code, out, err = run_cli("replay", png, "--verify", "--no-progress")
    assert code == 0 and "identical" in out + err
    noise_picture(tmp_path / "me.png", (80, 48), seed=9)
    code, out, err = run_cli("replay", png, "--verify", "--no-progress")
    assert code == 2 and "me.png" in err and "changed" in err
    (tmp_path / "me.png").unlink()
    code, out, err = run_cli("replay", png, "--verify", "--no-progress")
    assert code == 2 and "missing" in err


def test_no_size_takes_the_input_size_snapped(models, pictures, tmp_path):
    odd = noise_picture(tmp_path / "odd.png", (70, 41))
    (result,) = ours(models("base", "tiny"), input={"image": str(odd)}, sampling={"steps": 2})
    assert result.image.size == (64, 48)
    assert result.recipe["size"]["requested"] == [70, 41]


def test_paste_back_keeps_the_pixels_outside_the_mask(models, pictures):
    folder = models("base", "tiny")
    inputs = {"image": str(pictures["photo"]), "mask": str(pictures["mask"]), "strength": 1.0}
    (plain,) = ours(folder, input=inputs, sampling={"steps": 2})
    (pasted,) = ours(folder, input={**inputs, "paste_back": True}, sampling={"steps": 2})
    original = pixels(pictures["photo"])
    far = np.zeros((48, 80), bool)
    far[:, :4] = far[:, 68:] = True  # the mask box is x 16..56: 12 px of feather margin on each side
    assert np.abs(pixels(pasted.image) - original)[far].max() == 0
    assert np.abs(pixels(plain.image) - original)[far].max() > 0  # diffusers alone does not paste back
    inside = (slice(16, 32), slice(28, 44))
    assert np.abs(pixels(pasted.image)[inside] - pixels(plain.image)[inside]).max() <= 3  # the repainted core
    assert pasted.recipe["task"]["paste_back"] is True


def test_outpaint_pads_with_edges_and_repaints_only_the_new_area(models, pictures):
    folder = models("fill", "tiny")
    (result,) = ours(folder, input={"image": str(pictures["photo"]), "outpaint": [0, 0, 16, 0], "paste_back": True},
                     sampling={"steps": 2})
    assert result.image.size == (96, 48)
    assert result.recipe["task"]["outpaint"]["fill"] == "edge"
    assert result.recipe["inputs"][0]["steps"][0] == {"op": "pad", "left": 0, "top": 0, "right": 16, "bottom": 0,
                                                      "fill": "edge", "to": [96, 48]}
    assert np.abs(pixels(result.image)[:, :64] - pixels(pictures["photo"])[:, :64]).max() == 0


def test_pil_images_through_the_python_api(models, pictures):
    photo = Image.open(pictures["photo"])
    (a,) = ours(models("base", "tiny"), input={"image": photo, "strength": 0.5}, sampling={"steps": 2})
    (b,) = ours(models("base", "tiny"), input={"image": str(pictures["photo"]), "strength": 0.5}, sampling={"steps": 2})
    assert_same(a.image, b.image)
    assert a.recipe["inputs"][0]["path"] is None and len(a.recipe["inputs"][0]["sha256"]) == 64
    assert "pixels" not in a.recipe["config"]["input"]["image"]


def test_inline_table_notes_are_recorded(models, pictures, tmp_path):
    import shutil

    shutil.copy(pictures["photo"], tmp_path / "anna.png")
    (tmp_path / "c.toml").write_text('[input]\nimage = { path = "anna.png", source = "studio shoot", '
                                     'license = "CC-BY-4.0" }\nstrength = 0.5\n')
    from localflux.config import load_config

    config = load_config(tmp_path / "c.toml", flags={"model.source": str(models("base", "tiny")),
                                                     "prompt.subject": "x", "sampling.steps": 2, "sampling.seed": 1})
    (result,) = generate(config, save=False, progress=False)
    record = result.recipe["inputs"][0]
    assert record["source"] == "studio shoot" and record["license"] == "CC-BY-4.0"
    assert record["path"] == str(tmp_path / "anna.png")


def test_task_registry_refuses_duplicates():
    from localflux.tasks import TASKS
    from localflux.tasks.text import TextTask

    with pytest.raises(ValueError):
        TASKS.register(TextTask())
    assert [t.name for t in TASKS] == ["fill", "kontext", "inpaint", "img2img", "text"]
