"""Opt-in C2PA Content Credentials, validated with c2pa-python's own reader."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from PIL import Image
from upscale_common import DATA

from conftest import pixels
from localflux import generate
from localflux.io import xmp
from localflux.io.png import to_json
from localflux.recipe import read_recipe

c2pa = pytest.importorskip("c2pa")

MODEL = "realesr-animevideov3"
CFG = {"model": {"source": "tiny", "device": "cpu"}, "prompt": {"subject": "a fox"},
       "size": {"width": 64, "height": 64}, "sampling": {"seed": 5}, "output": {"content_credentials": True}}


@pytest.fixture(autouse=True)
def _user_data(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))  # the local CA lives here


def report(path) -> tuple[dict, str]:
    with open(path, "rb") as stream, c2pa.Reader("image/png", stream) as reader:
        return json.loads(reader.json()), reader.get_validation_state()


def active(data: dict) -> dict:
    return data["manifests"][data["active_manifest"]]


def assertion(manifest: dict, prefix: str) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"].startswith(prefix))


def failure_codes(data: dict) -> set[str]:
    return {s["code"] for s in data.get("validation_status") or []}


def test_credentialed_render_validates_except_the_local_signer(tmp_path):
    from localflux.io.c2pa import credentials_state, user_data_dir

    path = generate(CFG, out_dir=tmp_path, progress=False)[0].path
    data, state = report(path)
    assert state == "Valid" and failure_codes(data) == {"signingCredential.untrusted"}
    manifest = active(data)
    (action,) = assertion(manifest, "c2pa.actions")["actions"]
    assert action["action"] == "c2pa.created" and action["digitalSourceType"] == xmp.TRAINED
    recipe = read_recipe(path)
    assert assertion(manifest, "org.localflux.recipe")["recipe_sha256"] == hashlib.sha256(to_json(recipe).encode()).hexdigest()
    assert credentials_state(path)["state"] == "valid-untrusted-signer"
    key = user_data_dir() / "c2pa" / "signer.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_bytes_differ_but_pixels_and_recipe_do_not_and_replay_verifies(tmp_path, run_cli):
    a = generate(CFG, out_dir=tmp_path / "a", progress=False)[0].path
    b = generate(CFG, out_dir=tmp_path / "b", progress=False)[0].path
    assert a.read_bytes() != b.read_bytes()
    assert (pixels(a) == pixels(b)).all() and read_recipe(a) == read_recipe(b)
    code, out, err = run_cli("replay", a, "--verify", "--no-progress")
    assert code == 0 and "identical" in err, err


@pytest.fixture
def upscaled_env(weights_dir, monkeypatch):
    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))


def test_upscaled_photo_has_the_photo_as_parent_ingredient(tmp_path, run_cli, upscaled_env):
    photo = tmp_path / "photo.png"
    Image.open(DATA / "astronaut-64.png").convert("RGB").crop((0, 0, 16, 16)).save(photo)
    code, out, err = run_cli("upscale", photo, "--model", MODEL, "--scale", "2", "--device", "cpu",
                             "--content-credentials", "--out", tmp_path / "up", "--no-progress")
    assert code == 0, err
    data, state = report(out.strip())
    assert state == "Valid" and failure_codes(data) == {"signingCredential.untrusted"}
    manifest = active(data)
    actions = assertion(manifest, "c2pa.actions")["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["digitalSourceType"] == xmp.COMPOSITE
    (ingredient,) = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["title"] == "photo.png"
    (recorded,) = assertion(manifest, "org.localflux.recipe")["inputs"]
    assert recorded["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()


def test_upscale_of_a_credentialed_render_keeps_the_original_as_parent(tmp_path, run_cli, upscaled_env):
    render = generate(CFG, out_dir=tmp_path / "r", progress=False)[0].path
    code, out, err = run_cli("upscale", render, "--model", MODEL, "--scale", "2", "--device", "cpu",
                             "--content-credentials", "--out", tmp_path / "up", "--no-progress")
    assert code == 0, err
    data, state = report(out.strip())
    assert state == "Valid" and failure_codes(data) <= {"signingCredential.untrusted"}
    manifest = active(data)
    assert [a["action"] for a in assertion(manifest, "c2pa.actions")["actions"]] == ["c2pa.opened", "c2pa.edited"]
    assert assertion(manifest, "c2pa.actions")["actions"][1]["digitalSourceType"] == xmp.TRAINED
    (ingredient,) = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient.get("active_manifest")  # its credentials carried over
    assert len(data["manifests"]) == 2
    assert read_recipe(out.strip())["upscale_steps"]


def test_without_c2pa_python_it_is_one_line_and_exit_2(tmp_path, run_cli, monkeypatch):
    from localflux.io import c2pa as ours

    monkeypatch.setattr(ours, "available", lambda: False)
    code, out, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64",
                             "--prompt", "x", "--content-credentials", "--out", tmp_path / "o", "--no-progress")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "pip install 'localflux[c2pa]'" in err and not (tmp_path / "o").exists()


def test_input_images_are_ingredients_with_their_source_and_license(tmp_path):
    """An img2img render's input (an inline table with notes) is a componentOf ingredient, hash and notes included."""
    from image_models import noise_picture

    photo = noise_picture(tmp_path / "photo.png", (64, 64))
    config = {**CFG, "input": {"image": {"path": str(photo), "source": "studio shoot 2026-11", "license": "model release"},
                               "strength": 0.5}}
    path = generate(config, out_dir=tmp_path / "out", progress=False)[0].path
    data, state = report(path)
    assert state == "Valid" and failure_codes(data) == {"signingCredential.untrusted"}
    manifest = active(data)
    (action,) = assertion(manifest, "c2pa.actions")["actions"]
    assert action["digitalSourceType"] == xmp.COMPOSITE
    (item,) = assertion(manifest, "org.localflux.recipe")["inputs"]
    assert item == {"title": "photo.png", "relationship": "componentOf", "sha256": hashlib.sha256(photo.read_bytes()).hexdigest(),
                    "source": "studio shoot 2026-11", "license": "model release"}
    assert [i["relationship"] for i in manifest["ingredients"]] == ["componentOf"]


def test_upscale_source_and_license_reach_recipe_inspect_and_credentials(tmp_path, run_cli, monkeypatch, weights_dir):
    from image_models import noise_picture

    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(weights_dir))
    photo = noise_picture(tmp_path / "photo.png", (24, 16))
    code, out, err = run_cli("upscale", photo, "--model", MODEL, "--scale", "2", "--source", "Anna's phone",
                             "--license", "CC BY 4.0", "--content-credentials", "--out", tmp_path / "up", "--no-progress")
    assert code == 0, err
    target = out.strip()
    code, out, _ = run_cli("inspect", target, "--json")
    (step,) = json.loads(out)["upscale_steps"]
    assert step["input"]["source"] == "Anna's phone" and step["input"]["license"] == "CC BY 4.0"
    assert step["input"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    code, words, _ = run_cli("inspect", target)
    assert "source Anna's phone, license CC BY 4.0" in words
    (item,) = assertion(active(report(target)[0]), "org.localflux.recipe")["inputs"]
    assert item["relationship"] == "parentOf" and item["source"] == "Anna's phone" and item["license"] == "CC BY 4.0"
