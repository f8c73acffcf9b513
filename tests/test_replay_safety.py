"""A PNG with a recipe is data: replay never downloads, reads only what a recipe may name, writes only to --out."""

from __future__ import annotations

import contextlib
import io
import json
import socket
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from localflux import generate

CFG = {"model": {"source": "tiny"}, "prompt": {"subject": "a fox"}, "size": {"width": 64, "height": 64},
       "sampling": {"seed": 2}}


def cli(*argv, cwd: Path, monkeypatch) -> tuple[int, str, str]:
    from localflux.cli import main

    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def edited(png: Path, target: Path, edit) -> Path:
    with Image.open(png) as image:
        image.load()
        recipe = json.loads(image.text["localflux"])
        edit(recipe)
        info = PngInfo()
        info.add_text("localflux", json.dumps(recipe))
        image.save(target, pnginfo=info)
    return target


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach a hub fails the test."""
    import huggingface_hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    real = huggingface_hub.snapshot_download

    def local_only(*args, **kwargs):  # cache look-ups are allowed, downloads are not
        if not kwargs.get("local_files_only"):
            refuse(*args)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", local_only)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # prove replay itself refuses, not the environment
    return calls


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    return generate(CFG, out_dir=tmp_path_factory.mktemp("r"), progress=False)[0].path


@pytest.mark.parametrize("files", [[], ["/nonexistent/models--a--b/snapshots/1/model_index.json"]])
def test_hub_recipe_is_refused_before_any_network_access(rendered, tmp_path, monkeypatch, no_network, files):
    def hub(recipe):
        recipe["config"]["model"]["source"] = recipe["model"]["source"] = "black-forest-labs/FLUX.1-dev"
        recipe["model"].update(kind="hub", fingerprint=None,
                               files=[{"path": f, "sha256": "0" * 64, "size": 1} for f in files])

    png = edited(rendered, tmp_path / "hub.png", hub)
    code, out, err = cli("replay", png, "--verify", "--no-progress", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "replay never downloads" in err and "hf download black-forest-labs/FLUX.1-dev" in err
    assert no_network == []


def test_files_a_recipe_may_not_name_are_never_hashed(rendered, tmp_path, monkeypatch):
    from localflux import hashing

    hashed = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda path, **kw: hashed.append(str(path)) or real(path, **kw))
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"private")

    def name_it(recipe):  # a "weight file" of the built-in model, which has none
        recipe["model"]["files"] = [{"path": str(secret), "sha256": "0" * 64, "size": 7}]

    png = edited(rendered, tmp_path / "x.png", name_it)
    code, out, err = cli("replay", png, "--no-progress", cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "secret" in err, err
    assert hashed == [] and not (tmp_path / "replays").exists()


def test_a_recipes_output_folder_is_ignored_and_out_is_used(rendered, tmp_path, monkeypatch):
    victim = tmp_path / "victim"

    def aim(recipe):
        recipe["config"]["output"] = {"dir": str(victim), "label": True, "sidecar": True}

    png = edited(rendered, tmp_path / "aimed.png", aim)
    (tmp_path / "work").mkdir()
    code, out, err = cli("replay", png, "--out", tmp_path / "mine", "--no-progress", cwd=tmp_path / "work",
                         monkeypatch=monkeypatch)
    assert code == 0, err
    written = Path(out.strip())
    assert written.parent == tmp_path / "mine" and not victim.exists()
    assert list((tmp_path / "work").iterdir()) == []


def test_replay_of_an_unlabelled_render_is_byte_identical(tmp_path, monkeypatch):
    path = generate({**CFG, "output": {"label": False}}, out_dir=tmp_path / "r", progress=False)[0].path
    code, out, err = cli("replay", path, "--out", tmp_path / "again", "--no-progress", cwd=tmp_path,
                         monkeypatch=monkeypatch)
    assert code == 0, err
    assert Path(out.strip()).read_bytes() == path.read_bytes()
