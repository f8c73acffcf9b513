"""The seed contract, determinism across processes, recipes, naming and replay."""

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from localflux import generate
from localflux.recipe import RECIPE_KEYS, read_recipe
from localflux.replay import replay

from conftest import REPO, pixels

BASE = {"model": {"source": "tiny-dev"}, "prompt": {"subject": "a red fox"}, "size": {"width": 64, "height": 48},
        "sampling": {"steps": 3, "max_sequence_length": 32}}


def cfg(**sampling):
    return {**BASE, "sampling": {**BASE["sampling"], **sampling}}


def test_item_k_of_a_run_equals_a_single_render_of_seed_s_plus_k():
    run = generate(cfg(seed=10, count=3), save=False, progress=False)
    assert [r.seed for r in run] == [10, 11, 12]
    single = generate(cfg(seed=12), save=False, progress=False)[0]
    assert np.array_equal(pixels(run[2].image), pixels(single.image))
    assert not np.array_equal(pixels(run[0].image), pixels(run[1].image))


def test_noise_is_flux_pipelines_cpu_generator_noise(tiny_folders):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_folders["dev"])
    pipe.set_progress_bar_config(disable=True)
    ours = generate({**cfg(seed=5), "model": {"source": str(tiny_folders["dev"])}}, save=False, progress=False)[0]
    theirs = pipe("a red fox", width=64, height=48, num_inference_steps=3, max_sequence_length=32,
                  generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert np.array_equal(pixels(ours.image), pixels(theirs))


def test_generation_never_touches_the_global_rng():
    state = torch.random.get_rng_state()
    generate(cfg(seed=1), save=False, progress=False)
    generate(cfg(), save=False, progress=False)  # a random seed comes from `secrets`, not torch
    assert torch.equal(state, torch.random.get_rng_state())


def test_batching_is_opt_in_close_and_recorded():
    single = generate(cfg(seed=20, count=2), save=False, progress=False)
    batched = generate(cfg(seed=20, count=2, batch_size=2), save=False, progress=False)
    for a, b in zip(single, batched):
        assert np.abs(pixels(a.image) - pixels(b.image)).max() <= 1
    assert single[1].recipe["decisions"]["batch_seeds"] == [21]
    assert batched[1].recipe["decisions"]["batch_seeds"] == [20, 21]


def test_same_config_and_seed_in_two_processes_give_identical_bytes(tmp_path):
    script = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from localflux import generate\n"
        f"cfg = {cfg(seed=99)!r}\n"
        "cfg['output'] = {'dir': sys.argv[1]}\n"
        "print(generate(cfg, progress=False)[0].path)\n"
    )
    paths = []
    for name in ("a", "b"):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], capture_output=True, text=True,
                             cwd=REPO, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                                         "LOCALFLUX_CACHE": str(tmp_path / "cache")})
        assert out.returncode == 0, out.stderr
        paths.append(out.stdout.strip())
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read()


def test_recipe_chunks_sidecar_and_names(tmp_path):
    first = generate(cfg(seed=42, count=2), out_dir=tmp_path, progress=False)
    assert [r.path.name for r in first] == ["0001-s42.png", "0002-s43.png"]
    again = generate(cfg(seed=42, count=2), out_dir=tmp_path, progress=False)
    assert again[0].path.name == "0001-s42-2.png"  # never overwritten
    assert first[0].path.read_bytes() == again[0].path.read_bytes()  # no timestamps: same inputs, same bytes
    recipe = read_recipe(first[1].path)
    assert set(RECIPE_KEYS) <= set(recipe)
    assert recipe["schema_version"] == 2 and recipe["seed"] == 43
    assert recipe["size"] == {"width": 64, "height": 48, "requested": [64, 48]}
    assert recipe["model"]["kind"] == "tiny" and len(recipe["model"]["fingerprint"]) == 64
    assert len(recipe["sigmas"]) == 3 and recipe["sigmas"][0] == 1.0
    assert set(recipe["versions"]) == {"localflux", "torch", "diffusers", "transformers"}
    assert recipe["decisions"]["offload"] == "none" and recipe["dtype"] == "float32"
    with Image.open(first[1].path) as image:
        parameters = image.text["parameters"]
    assert parameters.startswith("a red fox\n") and "Seed: 43" in parameters and "Size: 64x48" in parameters
    assert json.loads(first[1].path.with_suffix(".json").read_text()) == recipe


def test_recipe_records_folder_weight_hashes(tiny_folders, tmp_path):
    import hashlib

    result = generate({**cfg(seed=1), "model": {"source": str(tiny_folders["schnell"])}}, out_dir=tmp_path, progress=False)[0]
    files = {entry["path"]: entry["sha256"] for entry in result.recipe["model"]["files"]}
    weights = tiny_folders["schnell"] / "transformer" / "diffusion_pytorch_model.safetensors"
    assert files[str(weights)] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert any(path.endswith("text_encoder_2/model.safetensors") for path in files)


def test_replay_verify_identical_and_detects_changes(tmp_path, run_cli):
    path = generate(cfg(seed=8, count=2), out_dir=tmp_path / "r", progress=False)[1].path
    code, out, err = run_cli("replay", path, "--verify", "--no-progress")
    assert code == 0 and "identical" in err and out == ""
    code, out, err = run_cli("replay", path, "--out", tmp_path / "again", "--no-progress")
    assert code == 0 and open(out.strip(), "rb").read() == path.read_bytes()
    # an image whose pixels changed no longer verifies
    with Image.open(path) as image:
        text, array = dict(image.text), np.array(image)
    array[0, 0, 0] ^= 0x10
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    tampered = tmp_path / "tampered.png"
    Image.fromarray(array).save(tampered, pnginfo=info)
    code, out, err = run_cli("replay", tampered, "--verify", "--no-progress")
    assert code == 1 and "differs by up to 16 levels in 1 pixels" in err


def test_replay_of_a_batched_image_is_identical(tmp_path):
    path = generate(cfg(seed=30, count=3, batch_size=3), out_dir=tmp_path, progress=False)[1].path
    assert replay(path, progress=False).identical


def test_replay_refuses_a_changed_weight_file(tiny_folders, tmp_path, run_cli):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_folders["schnell"], folder)
    path = generate({**cfg(seed=2), "model": {"source": str(folder)}}, out_dir=tmp_path / "r", progress=False)[0].path
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, out, err = run_cli("replay", path, "--verify")
    assert code == 2 and str(weights) in err and "sha256" in err and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
