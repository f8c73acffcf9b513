"""Batch jobs with image inputs (issue 13): per-item and per-variant inputs, a job over a folder of images,
ids from the input bytes, every item checked before the first render, crash-safe resume. Tiny model, 2 steps."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import pixels, run_subprocess
from image_models import box_mask, noise_picture
from localflux import generate
from localflux.batch.jobs import load_job
from localflux.recipe import read_recipe

FOLDER_JOB = """
[job]
images = {{ path = "photos/", source = "test shoot", license = "CC0-1.0" }}
seeds = [1, 2]
output = "{out}"

[[job.variants]]
name = "low"
strength = 0.5
[[job.variants]]
name = "high"
input = {{ strength = 1.0 }}

[model]
source = "tiny"
device = "cpu"
[sampling]
steps = 2
max_sequence_length = 32
[prompt]
subject = "a fox"
"""


def photos(folder: Path) -> Path:
    (folder / "photos" / "sub").mkdir(parents=True, exist_ok=True)
    noise_picture(folder / "photos" / "b.png", (40, 32), seed=1)
    noise_picture(folder / "photos" / "a.png", (48, 32), seed=2)
    (folder / "photos" / "notes.txt").write_text("not a picture")
    (folder / "photos" / ".DS_Store").write_bytes(b"\0")
    return folder / "photos"


def write(folder: Path, text: str, name: str = "job.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_folder_job_items_ids_and_notes(tmp_path):
    photos(tmp_path)
    job = load_job(write(tmp_path, FOLDER_JOB.format(out="out")))
    # image-major inside the (single, config) prompt, then variant, then seed; sorted by file name
    assert [(Path(i.image).name, i.variant, i.seed) for i in job.items] == [
        ("a.png", "low", 1), ("a.png", "low", 2), ("a.png", "high", 1), ("a.png", "high", 2),
        ("b.png", "low", 1), ("b.png", "low", 2), ("b.png", "high", 1), ("b.png", "high", 2)]
    first = job.items[0]
    assert first.filename == f"0001-low-s1-a-{first.item_id[:10]}.png"
    assert "image 'a.png'" in first.label
    assert first.plan.config.input.image.license == "CC0-1.0" and first.plan.config.input.strength == 0.5
    assert job.items[2].plan.config.input.strength == 1.0
    assert first.plan.prepared.task == "img2img"
    assert len(job.notes) == 1 and "notes.txt" in job.notes[0] and "sub/" in job.notes[0]
    assert ".DS_Store" not in job.notes[0]

    # The id follows the input's bytes: change b.png and only b's items get new ids.
    noise_picture(tmp_path / "photos" / "b.png", (40, 32), seed=9)
    again = load_job(tmp_path / "job.toml")
    assert [i.item_id for i in again.items[:4]] == [i.item_id for i in job.items[:4]]
    assert all(a.item_id != b.item_id for a, b in zip(again.items[4:], job.items[4:]))
    # ... and not where the folder lives.
    shutil.copytree(tmp_path / "photos", tmp_path / "moved" / "photos")
    write(tmp_path / "moved", FOLDER_JOB.format(out="out"))
    moved = load_job(tmp_path / "moved" / "job.toml", out=tmp_path / "out")
    assert [i.item_id for i in moved.items] == [i.item_id for i in again.items]


def test_per_item_and_per_variant_inputs(tmp_path, run_cli):
    noise_picture(tmp_path / "me.png", (48, 32), seed=3)
    box_mask(tmp_path / "mouth.png", (48, 32), (8, 8, 32, 24))
    text = """
[job]
prompts = [{ prompt = "a fox", image = "me.png", mask = { path = "mouth.png", license = "mine" }, paste_back = true },
           "a plain text prompt"]
seeds = [4]
output = "out"
[[job.variants]]
name = "a"
[[job.variants]]
name = "b"
image = "me.png"
strength = 0.8
[model]
source = "tiny-dev"
device = "cpu"
[sampling]
steps = 2
max_sequence_length = 32
[size]
width = 48
height = 32
"""
    job = load_job(write(tmp_path, text))
    tasks = [(i.prompt, i.variant, i.plan.prepared.task) for i in job.items]
    assert tasks == [("a fox", "a", "inpaint"), ("a fox", "b", "inpaint"),
                     ("a plain text prompt", "a", "text"), ("a plain text prompt", "b", "img2img")]
    inpaint = job.items[1].plan
    assert inpaint.config.input.image.path == str(tmp_path / "me.png")
    assert inpaint.config.input.mask.license == "mine" and inpaint.config.input.paste_back
    assert inpaint.config.input.strength == 0.8

    # Rendered in a batch == rendered alone (the item's pixels are read again just before it renders).
    code, _, err = run_cli("batch", tmp_path / "job.toml", "--no-progress")
    assert code == 0, err
    item = job.items[1]
    recipe = read_recipe(tmp_path / "out" / item.filename)
    assert [r["role"] for r in recipe["inputs"]] == ["image", "mask"] and recipe["task"]["name"] == "inpaint"
    (alone,) = generate(inpaint.config, save=False, progress=False)
    assert (pixels(tmp_path / "out" / item.filename) == pixels(alone.image)).all()


def test_a_bad_image_in_a_late_item_stops_the_job_before_any_render(tmp_path, run_cli):
    folder = photos(tmp_path)
    (folder / "c.png").write_bytes(b"this is not a png")
    code, out, err = run_cli("batch", write(tmp_path, FOLDER_JOB.format(out="out")), "--no-progress")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "4 of 12 items are invalid" in err and "item 9 " in err and "c.png" in err and "not an image" in err
    assert not (tmp_path / "out").exists()


def test_bad_job_image_keys_are_one_line(tmp_path, run_cli):
    cases = {
        'images = "nowhere/"': "does not exist",
        'images = 3': "job.images must be a folder",
        'images = "empty/"': "holds no image files",
        'prompts = [{ prompt = "x", imagee = "a.png" }]\nimages = "photos/"': "'imagee' is not a key of a prompt table",
        'prompts = [{ prompt = "x", image = "photos/a.png" }]\nimages = "photos/"': "may not set image",
    }
    photos(tmp_path)
    (tmp_path / "empty").mkdir()
    for line, message in cases.items():
        text = f"[job]\n{line}\nseeds = [1]\n[model]\nsource = \"tiny\"\ndevice = \"cpu\"\n[prompt]\nsubject = \"x\"\n"
        code, out, err = run_cli("batch", write(tmp_path, text), "--no-progress")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, (line, err)


def test_folder_job_resumes_after_kill_byte_identical(tmp_path, run_cli):
    photos(tmp_path)
    job = write(tmp_path, FOLDER_JOB.format(out="out"))
    assert run_cli("batch", job, "--no-progress")[0] == 0  # in this process: only the killed run needs its own
    reference = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.suffix in (".png", ".json")}
    shutil.rmtree(tmp_path / "out")
    killed = run_subprocess("batch", job, "--no-progress", env={"LOCALFLUX_TEST_KILL_AT": "after_rename:3"})
    assert killed.returncode != 0
    code, _, err = run_cli("batch", job, "--no-progress")
    assert code == 0, err
    assert "8 done" in err and "1 recovered" in err
    files = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.suffix in (".png", ".json")}
    assert files == reference


def test_an_input_changed_after_the_check_fails_only_its_item(tmp_path, monkeypatch):
    from localflux.batch import runner

    photos(tmp_path)
    job = load_job(write(tmp_path, FOLDER_JOB.format(out="out")))
    noise_picture(tmp_path / "photos" / "b.png", (40, 32), seed=7)  # after the check, before the render
    job.items[:] = [job.items[0], job.items[4]]
    outcome = runner.run_job(job, progress=False, emit=lambda path: None)
    assert len(outcome.status.done) == 1
    ((item, reason),) = outcome.status.failed
    assert item.image.endswith("b.png") and "changed after the job was checked" in reason
