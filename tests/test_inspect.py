"""``localflux inspect``: recipe, label and Content Credentials in words or JSON; exit 0 / 1 / 2."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from PIL import Image

from localflux import generate

CFG = {"model": {"source": "tiny", "device": "cpu"}, "prompt": {"subject": "a red fox"},
       "size": {"width": 64, "height": 48}, "sampling": {"seed": 11}}


@pytest.fixture(autouse=True)
def _user_data(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    return generate(CFG, out_dir=tmp_path_factory.mktemp("r"), progress=False)[0].path


def test_a_render_reads_as_words_and_json(render, run_cli):
    code, out, err = run_cli("inspect", render)
    assert code == 0 and err == ""
    assert "prompt:      a red fox" in out and "seed:        11" in out and "size:        64x48" in out
    assert "model:       tiny (tiny, schnell)" in out and "trainedAlgorithmicMedia" in out
    assert "credentials: none" in out
    code, out, _ = run_cli("inspect", render, "--json")
    info = json.loads(out)
    assert code == 0 and info["recipe"]["seed"] == 11 and info["recipe"]["size"] == [64, 48]
    assert info["label"]["present"] and info["label"]["creator_tool"].startswith("localflux ")
    assert info["content_credentials"] == {"state": "none"} and "Seed: 11" in info["parameters"]


def test_an_image_without_a_recipe_is_exit_1_and_a_non_image_exit_2(tmp_path, run_cli):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, out, err = run_cli("inspect", plain)
    assert code == 1 and "no localflux recipe" in out and "AI label:    none" in out
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    code, out, err = run_cli("inspect", bogus)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "notes.png" in err


def test_loras_inputs_and_upscale_steps_are_listed():
    from localflux.inspect import format_text, summary

    recipe = {"schema_version": 1, "localflux_version": "0.1.0", "config": {"sampling": {"steps": 4}},
              "prompt": {"final": "x"}, "seed": 1, "size": {"width": 8, "height": 8},
              "model": {"source": "/m/flux.safetensors", "kind": "single_file", "preset": "dev",
                        "files": [{"path": "/m/flux.safetensors", "sha256": "ab" * 32}]},
              "loras": [{"name": "film", "path": "/l/film.safetensors", "scale": 0.5, "sha256": "cd" * 32,
                         "autov3": "0123456789ab"}],
              "inputs": [{"path": "/p/photo.jpg", "sha256": "ef" * 32}],
              "upscale_steps": [{"model": "realesrgan-x4plus", "scale": 2, "sha256": "12" * 32}]}
    text = format_text({"file": "f.png", "recipe": summary(recipe), "label": {"present": False},
                        "content_credentials": {"state": "none"}})
    assert "Model hash " + "ab" * 5 in text and "LoRA:        film x0.5" in text and "AutoV3 0123456789ab" in text
    assert "input:       /p/photo.jpg" in text and "upscaled:    x2 with realesrgan-x4plus" in text


def _retext(data: bytes, key: bytes, new_value: bytes) -> bytes:
    """``data`` with the tEXt chunk ``key`` given a new value of the same length (CRC fixed)."""
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and body.startswith(key + b"\0"):
            body = key + b"\0" + new_value
            assert len(body) == length
            crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
            return data[:pos + 8] + body + crc + data[pos + 12 + length:]
        pos += 12 + length
    raise AssertionError("chunk not found")


def test_credentials_valid_untrusted_then_invalid_when_altered(tmp_path, run_cli, monkeypatch):
    pytest.importorskip("c2pa")
    path = generate({**CFG, "output": {"content_credentials": True}}, out_dir=tmp_path, progress=False)[0].path
    code, out, _ = run_cli("inspect", path, "--json")
    cc = json.loads(out)["content_credentials"]
    assert code == 0 and cc["state"] == "valid-untrusted-signer" and cc["actions"][0]["action"] == "c2pa.created"
    with Image.open(path) as image:
        parameters = image.text["parameters"].encode("latin-1")
    altered = tmp_path / "altered.png"
    altered.write_bytes(_retext(path.read_bytes(), b"parameters", parameters.replace(b"Seed: 11", b"Seed: 12")))
    code, out, _ = run_cli("inspect", altered, "--json")
    assert json.loads(out)["content_credentials"]["state"] == "invalid"
    code, out, _ = run_cli("inspect", altered)
    assert "credentials: INVALID" in out

    from localflux.io import c2pa as ours

    monkeypatch.setattr(ours, "available", lambda: False)
    code, out, _ = run_cli("inspect", path)
    assert "credentials: present, c2pa-python not installed to validate" in out
