"""Sweeps: grid geometry, cells equal their own PNGs, cells replay identically, LoRA scales vary unfused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lora_files as lf
from conftest import pixels
from localflux.errors import ConfigError
from localflux.io.png import read_png_text
from localflux.recipe import read_recipe
from localflux.sweep import SHEET_CHUNK, Layout, cell_thumbnail, parse_seeds, parse_vary

RENDER = ["--model", "tiny-dev", "--device", "cpu", "--prompt", "a red cat", "--width", 64, "--height", 48,
          "--steps", 2, "--no-progress"]


def test_parse_seeds_and_vary():
    assert parse_seeds("1-3,10") == [1, 2, 3, 10]
    assert parse_vary("sampling.guidance=2.5,3.5") == ("sampling.guidance", [2.5, 3.5])
    assert parse_vary('prompt.lighting=["window light, soft", "rim"]') == ("prompt.lighting", ["window light, soft", "rim"])
    for bad in ("3-1", "a", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    with pytest.raises(ConfigError, match="rows are the seeds"):
        parse_vary("sampling.seed=1,2")


def test_sweep_grid_cells_and_replay(tmp_path, run_cli):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli("sweep", *RENDER, "--seeds", "5-6", "--vary", "sampling.guidance=2.5,3.5,4.5",
                                "--out", out, "--cell", 32)
    assert code == 0, err
    paths = stdout.split()
    cells, sheet_path = paths[:-1], paths[-1]
    assert len(cells) == 6 and sheet_path.endswith("contact-sheet.png")
    index = json.loads(read_png_text(sheet_path)[SHEET_CHUNK])
    layout = Layout(**index["layout"])
    assert (layout.rows, layout.columns, layout.cell_width, layout.cell_height) == (2, 3, 32, 24)
    sheet = Image.open(sheet_path).convert("RGB")
    assert sheet.size == layout.size
    for cell in index["cells"]:
        path = out / cell["file"]
        recipe = read_recipe(path)
        assert recipe["seed"] == cell["seed"] == [5, 6][cell["row"]]
        assert recipe["config"]["sampling"]["guidance"] == [2.5, 3.5, 4.5][cell["column"]]
        with Image.open(path) as image:
            expected = pixels(cell_thumbnail(image, layout))
        assert np.array_equal(pixels(sheet.crop(layout.box(cell["row"], cell["column"]))), expected)
    # different guidance, different pixels: the varied key really changed the render
    first_row = [pixels(out / c["file"]) for c in index["cells"] if c["row"] == 0]
    assert np.abs(first_row[0] - first_row[2]).max() > 0
    code, _, err = run_cli("replay", cells[3], "--verify", "--no-progress")
    assert code == 0 and "identical" in err


def test_sweep_lora_scale_is_unfused_exact_and_replays(tmp_path, run_cli):
    lora = lf.write_kohya_file(tmp_path / "film.safetensors")
    out = tmp_path / "s"
    code, stdout, err = run_cli("sweep", *RENDER, "--seeds", "7", "--vary", "lora[0].scale=0,0.35,1",
                                "--lora", f"{lora}:0.9", "--out", out, "--cell", 32)
    assert code == 0, err
    cells = stdout.split()[:-1]
    records = [read_recipe(p)["loras"][0] for p in cells]
    assert [r["scale"] for r in records] == [0.0, 0.35, 1.0] and {r["fuse"] for r in records} == {"unfused"}
    code, base_out, err = run_cli("generate", *RENDER, "--seed", 7, "--out", tmp_path / "base")
    assert code == 0, err
    assert np.array_equal(pixels(cells[0]), pixels(base_out.strip()))  # scale 0 is the base image
    code, _, err = run_cli("replay", cells[1], "--verify", "--no-progress")
    assert code == 0 and "identical" in err


def test_sweep_prompt_part_and_bad_lora_index(tmp_path, run_cli):
    code, stdout, err = run_cli("sweep", *RENDER, "--seeds", "1", "--vary", "prompt.lighting=window,rim",
                                "--out", tmp_path / "p", "--cell", 32)
    assert code == 0, err
    finals = [read_recipe(p)["prompt"]["final"] for p in stdout.split()[:-1]]
    assert finals[0] != finals[1] and all(f.startswith("a red cat, ") for f in finals)
    code, stdout, err = run_cli("sweep", *RENDER, "--seeds", "1", "--vary", "lora[0].scale=0,1", "--out", tmp_path / "q")
    assert code == 2 and "only 0 [[lora]] entries" in err and stdout == ""


def test_sweep_prints_each_cell_as_it_is_written(run_cli, tmp_path, stop_render_at):
    # like generate: a sweep stopped by Ctrl-C has listed every cell it saved
    stop_render_at(2)
    out_dir = tmp_path / "s"
    code, out, err = run_cli("sweep", *RENDER, "--seeds", "3", "--vary", "sampling.guidance=2,4", "--out", out_dir)
    assert code == 130
    (line,) = out.splitlines()
    assert Path(line).parent == out_dir and Path(line).is_file() and Path(line).name.startswith("r01-c01-s3")
