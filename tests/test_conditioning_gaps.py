"""FLUX.1 conditioning beyond single renders (issue 16): what Redux and control add to memory plans (arithmetic and
``--dry-run``), batch jobs with per-item ``control`` / ``redux`` inputs, and a sweep over ``input.redux_scale`` —
all rendering for real on the tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import pixels, run_subprocess
from image_models import noise_picture
from localflux.memory.plan import MemoryPlan, Workload
from localflux.recipe import read_recipe


@pytest.fixture(scope="module")
def redux_setup(tmp_path_factory):
    from image_models import save_redux_prior, save_task_model

    root = tmp_path_factory.mktemp("redux")
    save_task_model("base", "tiny", root / "base")
    return root / "base", save_redux_prior(root / "prior", 32)


def test_control_and_redux_add_their_work_to_the_estimate():
    from localflux.families.flux1.family import preset_footprint
    from localflux.geometry import image_tokens
    from localflux.memory.plan import RUNTIME_RESERVE, VAE_ACTIVATION_FACTOR, activation_bytes, stage_peaks
    from localflux.tasks import TASKS
    from localflux.tasks.redux import PRIOR_PARAMS

    fp, plain = preset_footprint("dev"), Workload()
    base = activation_bytes(fp, plain)
    tokens = image_tokens(1024, 1024)

    # control: the control picture's latents (16 channels x 2x2) widen each token's input 64 -> 128, and the
    # picture is VAE-encoded at the output size
    control = Workload(**TASKS.by_name("control").workload(1024, 1024, 16))
    assert control == Workload(condition_channels=64, encode_pixels=1024 * 1024)
    act = activation_bytes(fp, control)
    assert act["denoise"] - base["denoise"] == tokens * 64 * 2
    assert act["encode"] == 1024 * 1024 * fp.vae_channels * 2 * VAE_ACTIVATION_FACTOR
    assert "widened by 64 channels" in control.task_note() and "VAE encode of 1.00 MP" in control.task_note()

    # Redux: the prior (SigLIP + embedder, ~0.5 B) is on the accelerator with the text encoders before denoising
    redux = Workload(**TASKS.by_name("redux").workload(1024, 1024, 16))
    assert redux == Workload(prior_params=PRIOR_PARAMS) and 0.45e9 < PRIOR_PARAMS < 0.55e9
    assert "0.49 B-parameter prior on the accelerator before denoising" in redux.task_note()
    for offload in ("none", "resident", "model", "group", "sequential"):
        plan = MemoryPlan(offload=offload)
        peaks, plain_peaks = stage_peaks(plan, fp, redux), stage_peaks(plan, fp, plain)
        assert "prior" not in plain_peaks
        assert peaks["prior"] == plain_peaks["text"] + PRIOR_PARAMS * 2
        assert {k: v for k, v in peaks.items() if k != "prior"} == plain_peaks
    # model offload: the text stage is T5 alone; the prior's weights ride on top of it
    peaks = stage_peaks(MemoryPlan(offload="model"), fp, redux)
    assert peaks["prior"] - RUNTIME_RESERVE - base["text"] == fp.t5 * 2 + PRIOR_PARAMS * 2


def test_dry_run_shows_what_control_and_redux_add(tmp_path, run_cli, redux_setup):
    model, prior = redux_setup
    photo = noise_picture(tmp_path / "photo.png", (64, 48))
    code, out, err = run_cli("generate", "--model", "tiny-control", "--control", photo, "--prompt", "x", "--seed", "1",
                             "--dry-run")
    assert code == 0, err
    assert "task memory: transformer input widened by 64 channels per token; VAE encode of" in out
    assert "encode" in out.split("memory estimate")[1]
    code, out, err = run_cli("generate", "--model", model, "--redux", photo, "--redux-model", prior, "--prompt", "x",
                             "--seed", "1", "--dry-run")
    assert code == 0, err
    assert "task memory: a 0.49 B-parameter prior on the accelerator before denoising" in out
    assert "prior" in out.split("memory estimate")[1]
    code, out, err = run_cli("doctor", "--vram", "24", "--task", "redux")
    assert code == 0 and "prior on the accelerator" in out, err
    code, out, err = run_cli("doctor", "--vram", "24", "--task", "control")
    assert code == 0 and "widened by 64 channels" in out, err


CONTROL_JOB = """
[job]
prompts = [{{ prompt = "a fox", control = "edges-a.png" }}, {{ prompt = "a fox", control = "edges-b.png" }}]
seeds = [1, 2]
output = "out"
[[job.variants]]
name = "map"
[[job.variants]]
name = "canny"
input = {{ control_kind = "canny", canny_low = 40, canny_high = 120 }}

[model]
source = "tiny-control"
device = "cpu"
[sampling]
steps = 2
max_sequence_length = 32
[size]
width = 64
height = 48
"""


def test_batch_with_per_item_control_resumes_after_a_kill_and_replays(tmp_path, run_cli):
    noise_picture(tmp_path / "edges-a.png", (64, 48), seed=1)
    noise_picture(tmp_path / "edges-b.png", (64, 48), seed=2)
    job = tmp_path / "job.toml"
    job.write_text(CONTROL_JOB.format())
    assert run_cli("batch", job, "--no-progress")[0] == 0  # in this process: only the killed run needs its own
    out = tmp_path / "out"
    reference = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".json")}
    assert len(reference) == 16
    shutil.rmtree(out)
    assert run_subprocess("batch", job, "--no-progress", env={"LOCALFLUX_TEST_KILL_AT": "after_rename:5"}).returncode
    code, _, err = run_cli("batch", job, "--no-progress")
    assert code == 0 and "1 recovered" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".json")} == reference
    recipes = {p.name: read_recipe(p) for p in sorted(out.glob("*.png"))}
    paths = {Path(r["inputs"][0]["path"]).name for r in recipes.values()}
    kinds = {r["task"]["control_kind"] for r in recipes.values()}
    assert paths == {"edges-a.png", "edges-b.png"} and kinds == {"map", "canny"}
    canny = next(name for name, r in recipes.items() if r["task"]["control_kind"] == "canny")
    assert recipes[canny]["task"]["canny_low"] == 40
    code, _, err = run_cli("replay", out / canny, "--verify", "--no-progress")
    assert code == 0 and "identical" in err, err


def test_batch_with_per_item_redux_and_a_redux_scale_sweep(tmp_path, run_cli, redux_setup):
    model, prior = redux_setup
    noise_picture(tmp_path / "a.png", (40, 40), seed=1)
    noise_picture(tmp_path / "b.png", (32, 48), seed=2)
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
prompts = [{{ prompt = "a fox", redux = ["a.png"] }}, {{ prompt = "a fox", redux = ["a.png", "b.png"], redux_scale = 0.5 }}]
seeds = [3]
output = "out"
[model]
source = "{model}"
redux = "{prior}"
device = "cpu"
[sampling]
steps = 2
[size]
width = 48
height = 48
""")
    code, out, err = run_cli("batch", job, "--no-progress")
    assert code == 0, err
    first, second = out.split()
    assert [i["role"] for i in read_recipe(first)["inputs"]] == ["redux"]
    assert [i["role"] for i in read_recipe(second)["inputs"]] == ["redux 1", "redux 2"]
    assert read_recipe(second)["task"]["redux_scale"] == 0.5
    for cell in (first, second):
        code, _, err = run_cli("replay", cell, "--verify", "--no-progress")
        assert code == 0 and "identical" in err, err

    code, out, err = run_cli("sweep", "--model", model, "--redux-model", prior, "--redux", "a.png", "--prompt", "a fox",
                             "--steps", "2", "--width", "48", "--height", "48", "--vary", "input.redux_scale=0.3,1.0",
                             "--seeds", "1", "--out", "sweep", "--no-progress", cwd=tmp_path)
    assert code == 0, err
    cells = out.split()[:-1]
    assert [read_recipe(c)["task"]["redux_scale"] for c in cells] == [0.3, 1.0]
    assert not np.array_equal(pixels(cells[0]), pixels(cells[1]))
    for cell in cells:
        code, _, err = run_cli("replay", cell, "--verify", "--no-progress")
        assert code == 0 and "identical" in err, err
