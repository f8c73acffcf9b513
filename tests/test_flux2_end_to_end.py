"""FLUX.2 end to end on the built-in miniatures (issue 14): sweeps, batch resume after a kill, the chained
Real-ESRGAN stage, a BFL-layout single-file klein transformer through ``generate``, and a cached hub snapshot
detected as klein. Every test renders for real (no dry runs) and checks replays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pixels, run_subprocess
from image_models import noise_picture
from localflux.recipe import read_recipe

MODEL = "realesr-animevideov3"  # the chained upscale stage (weights_dir fixture installs it once)
SMALL = ("--steps", "2", "--width", "64", "--height", "48", "--max-sequence-length", "32", "--no-progress")


def _replays(run_cli, cells):
    for cell in cells:
        code, out, err = run_cli("replay", cell, "--verify", "--no-progress")
        assert code == 0 and "identical" in out + err, (cell, err)


@pytest.fixture(scope="module")
def klein_folder(tmp_path_factory):
    from localflux.families.flux2.tiny import save_tiny_model

    return save_tiny_model("tiny-flux2", tmp_path_factory.mktemp("klein") / "some-model")


def test_sweep_guidance_on_klein_base_and_references_on_klein_replay(tmp_path, run_cli):
    code, out, err = run_cli("sweep", "--model", "tiny-flux2-base", "--prompt", "a fox", *SMALL,
                             "--vary", "sampling.guidance=2.0,5.0", "--seeds", "1-2", "--out", "g", cwd=tmp_path)
    assert code == 0, err
    cells = out.split()[:-1]
    assert len(cells) == 4 and out.split()[-1].endswith("contact-sheet.png")
    recipes = [read_recipe(c) for c in cells]
    assert [r["config"]["sampling"]["guidance"] for r in recipes] == [2.0, 2.0, 5.0, 5.0]
    assert not np.array_equal(pixels(cells[0]), pixels(cells[2]))  # CFG scale changes the picture
    _replays(run_cli, cells)

    noise_picture(tmp_path / "a.png", (80, 64), seed=1)
    noise_picture(tmp_path / "b.png", (64, 96), seed=2)
    code, out, err = run_cli("sweep", "--model", "tiny-flux2", "--prompt", "a fox", *SMALL,
                             "--vary", "input.references=a.png,b.png", "--seeds", "3", "--out", "r", cwd=tmp_path)
    assert code == 0, err
    cells = out.split()[:-1]
    recipes = [read_recipe(c) for c in cells]
    assert [Path(r["inputs"][0]["path"]).name for r in recipes] == ["a.png", "b.png"]
    assert [r["extensions"]["sweep"]["value"] for r in recipes] == ["a.png", "b.png"]
    _replays(run_cli, cells)


FLUX2_JOB = """
[job]
prompts = ["a red fox", {{ prompt = "the fox by a window", references = ["a.png", "b.png"] }}]
seeds = [1, 2, 3]
output = "out"

[model]
source = "tiny-flux2"
device = "cpu"
[sampling]
steps = 2
max_sequence_length = 32
[size]
width = 64
height = 48
"""


def test_flux2_batch_with_text_and_references_resumes_after_a_kill_byte_identical(tmp_path, run_cli):
    noise_picture(tmp_path / "a.png", (80, 64), seed=1)
    noise_picture(tmp_path / "b.png", (64, 96), seed=2)
    job = tmp_path / "job.toml"
    job.write_text(FLUX2_JOB.format())
    assert run_cli("batch", job, "--no-progress")[0] == 0  # in this process: only the killed run needs its own
    out = tmp_path / "out"
    reference = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".json")}
    assert len(reference) == 12
    shutil.rmtree(out)
    killed = run_subprocess("batch", job, "--no-progress", env={"LOCALFLUX_TEST_KILL_AT": "after_rename:4"})
    assert killed.returncode != 0
    code, _, err = run_cli("batch", job, "--no-progress")
    assert code == 0, err
    assert "6 done" in err and "1 recovered" in err, err
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".json")}
    assert files == reference
    with_refs = sorted(p for p in out.glob("*.png") if read_recipe(p)["inputs"])
    assert len(with_refs) == 3 and [i["role"] for i in read_recipe(with_refs[0])["inputs"]] == ["reference 1", "reference 2"]
    _replays(run_cli, [with_refs[0], sorted(out.glob("0001-*.png"))[0]])


def test_flux2_render_with_the_upscale_stage_replays(tmp_path, weights_dir, monkeypatch, run_cli):
    from localflux import generate

    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))
    config = {"model": {"source": "tiny-flux2"}, "prompt": {"subject": "a red fox"},
              "size": {"width": 64, "height": 48}, "sampling": {"seed": 3, "steps": 2, "max_sequence_length": 32},
              "upscale": {"enabled": True, "model": MODEL, "scale": 2.0, "keep_original": True}}
    result = generate(config, out_dir=tmp_path, progress=False)[0]
    assert result.image.size == (128, 96) and pixels(tmp_path / "0001-s3-base.png").shape == (48, 64, 3)
    recipe = read_recipe(result.path)
    assert recipe["model"]["family"] == "flux2" and recipe["upscale_steps"][0]["model"] == MODEL
    _replays(run_cli, [result.path, tmp_path / "0001-s3-base.png"])


def test_bfl_single_file_klein_with_a_base_folder_renders_like_the_folder(tmp_path, klein_folder, run_cli):
    from safetensors.torch import save_file

    from localflux.families.flux2.single_file import diffusers_to_bfl
    from localflux.families.flux2.tiny import build_tiny_components

    state = build_tiny_components("tiny-flux2")["transformer"].state_dict()
    path = tmp_path / "flux-2-klein-tiny.safetensors"
    save_file(diffusers_to_bfl({k: v.contiguous() for k, v in state.items()}), path)
    args = ("--prompt", "a fox", "--seed", "3", *SMALL, "--device", "cpu")
    code, out_file, err = run_cli("generate", "--model", path, "--base", klein_folder, *args, "--out", tmp_path / "a")
    assert code == 0, err
    code, out_folder, err = run_cli("generate", "--model", klein_folder, *args, "--out", tmp_path / "b")
    assert code == 0, err
    assert Image.open(out_file.strip()).tobytes() == Image.open(out_folder.strip()).tobytes()
    assert read_recipe(out_file.strip())["model"]["preset"] == "klein"
    _replays(run_cli, [out_file.strip()])


def test_cached_hub_snapshot_is_detected_as_klein_from_its_model_index(monkeypatch, klein_folder, tmp_path, run_cli):
    import huggingface_hub

    from localflux import loader
    from localflux.families.registry import FAMILIES

    assert json.loads((klein_folder / "model_index.json").read_text())["_class_name"] == "Flux2KleinPipeline"
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: calls.append(repo_id) or str(klein_folder))
    source = loader.describe_source("black-forest-labs/FLUX.2-klein-4B", download=True)
    assert source.kind == "hub" and source.path == klein_folder
    family = FAMILIES.detect(source)
    assert family.name == "flux2" and family.detect_preset(source) == "klein"
    code, out, err = run_cli("generate", "--model", "black-forest-labs/FLUX.2-klein-4B", "--prompt", "a fox",
                             "--seed", "2", *SMALL, "--out", tmp_path / "hub")
    assert code == 0, err
    recipe = read_recipe(out.strip())
    assert recipe["model"]["preset"] == "klein" and recipe["model"]["family"] == "flux2" and calls
