"""PNGs made by release 0.1 replay pixel-identically with the code checked out now.

``tests/data/release-0.1/`` holds PNGs rendered once by release 0.1 (commit cfdc357, recipe schema 1)
through ``scripts/make_release_fixtures.py``, one for every kind of recipe that release writes;
``manifest.json`` says what each one exercises and how it was made. Later releases must keep
replaying them exactly, whatever their own recipe format is. The model, LoRA and upscaler files the
recipes name (by absolute path and sha256) are rebuilt under ``/tmp/localflux-release-0.1/`` by
``tests/release_assets.py`` and must come out byte-identical to the manifest's hashes.

This module reads the recipes only as release 0.1 wrote them (the ``localflux`` PNG text chunk) and
calls nothing but ``localflux.replay.replay(path)`` and ``localflux replay IMAGE --verify``; it
compares pixels itself as well as through the replay's own report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)  # tiny models on a busy 2-core box: more threads are much slower

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import release_assets  # noqa: E402

DATA = HERE / "data" / "release-0.1"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
IMAGES = sorted(MANIFEST["images"])
CLI_IMAGE = "upscale-twice.png"  # a render plus two recorded upscale steps, through the CLI as a user runs it


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recipe_chunk(path: Path) -> dict:
    """The ``localflux`` text chunk as JSON, read with Pillow alone (no localflux code involved)."""
    with Image.open(path) as image:
        image.load()
        text = image.text.get("localflux")
    assert text is not None, f"{path.name} has no 'localflux' PNG text chunk"
    return json.loads(text)


def _pixels(image) -> tuple[str, np.ndarray]:
    return image.mode, np.asarray(image)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Rebuild every asset under the fixed root and check each file's sha256 against the manifest."""
    root = release_assets.ROOT
    assert MANIFEST["asset_root"] == str(root), "the manifest and tests/release_assets.py disagree on the asset root"
    if root.exists():
        shutil.rmtree(root)
    release_assets.build_all(root)
    built, expected = release_assets.file_hashes(root), MANIFEST["assets"]
    problems = [f"{name}: missing (the release-0.1 recipes need it)" for name in sorted(set(expected) - set(built))]
    problems += [f"{name}: not made by release 0.1" for name in sorted(set(built) - set(expected))]
    problems += [f"{name}: sha256 {built[name][:12]}… but release 0.1's file was {expected[name][:12]}…"
                 for name in sorted(set(built) & set(expected)) if built[name] != expected[name]]
    if problems:
        pytest.fail(f"rebuilt assets under {root} differ from the ones the release-0.1 PNGs were rendered with, so "
                    "those PNGs cannot be replayed (their recipes check every weight file's sha256). The builders in "
                    "tests/release_assets.py (or what they call: localflux.tiny, the upscaler installer, safetensors, "
                    "gguf) no longer write the same bytes:\n  " + "\n  ".join(problems), pytrace=False)
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("LOCALFLUX_CACHE", str(tmp_path_factory.mktemp("release-cache")))
    patch.setenv("LOCALFLUX_WEIGHTS", str(tmp_path_factory.mktemp("release-weights")))  # recipes name files by path
    yield root
    patch.undo()


def test_the_folder_holds_exactly_the_manifests_pngs_unaltered():
    on_disk = sorted(p.name for p in DATA.iterdir() if p.name != "manifest.json")
    assert on_disk == IMAGES
    for name in IMAGES:
        assert _sha256(DATA / name) == MANIFEST["images"][name]["sha256"], f"{name} was altered"


@pytest.mark.parametrize("name", IMAGES)
def test_each_png_is_a_release_0_1_schema_1_recipe(name):
    recipe = _recipe_chunk(DATA / name)
    assert recipe["schema_version"] == 1 and recipe["localflux_version"] == "0.1.0", name
    assert recipe["seed"] == MANIFEST["images"][name]["seed"]


@pytest.mark.parametrize("name", IMAGES)
def test_replays_pixel_identically(assets, name):
    from localflux.replay import replay

    path = DATA / name
    result = replay(path)
    with Image.open(path) as original:
        want_mode, want = _pixels(original)
    got_mode, got = _pixels(result.image)
    assert (got_mode, got.shape) == (want_mode, want.shape), f"{name}: replayed {got_mode} {got.shape}, file {want_mode} {want.shape}"
    differing = int((got != want).any(axis=-1).sum()) if got.ndim == 3 else int((got != want).sum())
    assert differing == 0, (f"{name} ({MANIFEST['images'][name]['covers']}): {differing} pixels differ, by up to "
                            f"{int(np.abs(got.astype(int) - want.astype(int)).max())} levels")
    assert result.identical and result.max_difference == 0, f"{name}: replay reports a difference ({result.max_difference})"


def test_cli_replay_verify_says_identical(assets, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "localflux", "replay", str(DATA / CLI_IMAGE), "--verify"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "identical" in done.stdout + done.stderr
    assert not any(tmp_path.iterdir()), "replay --verify wrote files"
