"""Sweeps over ``[input]`` keys (issue 13): strength, the image itself, Kontext references; real tiny renders
whose every cell replays to the same pixels."""

from __future__ import annotations

from pathlib import Path

from image_models import noise_picture
from localflux.recipe import read_recipe


def _replays(run_cli, cells):
    for cell in cells:
        code, out, err = run_cli("replay", cell, "--verify", "--no-progress")
        assert code == 0 and "identical" in out + err, (cell, err)


def test_sweep_strength_renders_and_every_cell_replays(tmp_path, run_cli):
    photo = noise_picture(tmp_path / "me.png", (48, 32))
    code, out, err = run_cli("sweep", "--model", "tiny", "--image", "me.png", "--prompt", "portrait", "--steps", "4",
                             "--max-sequence-length", "32", "--vary", "input.strength=0.25,0.5,1.0", "--seeds", "1-2",
                             "--out", "sweep", "--no-progress", cwd=tmp_path)
    assert code == 0, err
    paths = out.split()
    cells, sheet = paths[:-1], paths[-1]
    assert len(cells) == 6 and sheet.endswith("contact-sheet.png")
    recipes = [read_recipe(cell) for cell in cells]
    # columns are the strengths; each cell ran diffusers' step count for its strength, from the same input
    assert [r["task"]["strength"] for r in recipes] == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    assert [r["task"]["steps_run"] for r in recipes[::2]] == [1, 2, 4]
    assert {r["inputs"][0]["path"] for r in recipes} == {str(photo)}
    assert [r["extensions"]["sweep"]["value"] for r in recipes[::2]] == [0.25, 0.5, 1.0]
    _replays(run_cli, cells)


def test_sweep_over_the_image_and_over_kontext_references(tmp_path, run_cli, monkeypatch):
    from localflux.tasks import kontext

    noise_picture(tmp_path / "a.png", (48, 32), seed=1)
    noise_picture(tmp_path / "b.png", (32, 48), seed=2)
    code, out, err = run_cli("sweep", "--model", "tiny", "--prompt", "x", "--steps", "2", "--max-sequence-length", "32",
                             "--vary", "input.image=a.png,b.png", "--seeds", "3", "--out", "by-image", "--no-progress",
                             cwd=tmp_path)
    assert code == 0, err
    cells = out.split()[:-1]
    assert [read_recipe(c)["inputs"][0]["path"] for c in cells] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert [read_recipe(c)["size"]["width"] for c in cells] == [48, 32]  # no size given: each input's own
    _replays(run_cli, cells)

    monkeypatch.setattr(kontext, "MAX_AREA", 64 * 64)  # diffusers' 1 MP is slow on a CPU; same code path
    code, out, err = run_cli("sweep", "--model", "tiny-kontext", "--prompt", "x", "--steps", "2",
                             "--max-sequence-length", "32", "--vary", 'input.references=["a.png", ["a.png", "b.png"]]',
                             "--seeds", "3", "--out", "by-ref", "--no-progress", cwd=tmp_path)
    assert code == 0, err
    cells = out.split()[:-1]
    recipes = [read_recipe(c) for c in cells]
    assert [r["task"]["references"] for r in recipes] == [1, 2] and "stitched" in recipes[1]["task"]
    assert [Path(i["path"]).name for i in recipes[1]["inputs"]] == ["a.png", "b.png"]
    _replays(run_cli, cells)
