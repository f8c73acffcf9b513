"""Civitai-readable ``parameters``: A1111's Model hash (single-file checkpoints) and Lora hashes (AutoV3)."""

from __future__ import annotations

import hashlib
import re
import struct

import pytest
from lora_files import write_diffusers, write_kohya_file
from PIL import Image
from safetensors.torch import load_file, save_file

from localflux import generate
from localflux.hashing import autov3
from localflux.io import png

CFG = {"prompt": {"subject": "a red fox"}, "size": {"width": 64, "height": 64},
       "sampling": {"seed": 4, "steps": 2, "max_sequence_length": 32}, "output": {"sidecar": False}}


def parameters(path) -> str:
    with Image.open(path) as image:
        return image.text["parameters"]


def test_autov3_hashes_the_tensor_data_after_the_header(tmp_path):
    path = write_kohya_file(tmp_path / "film.safetensors")
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert autov3(path) == hashlib.sha256(data[8 + length:]).hexdigest()[:12]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 12)
    assert autov3(broken) is None


def test_single_file_render_has_model_hash_and_sd_parsers_reads_it(tiny_folders, tmp_path):
    sd_parsers = pytest.importorskip("sd_parsers")
    folder = tiny_folders["dev"]
    single = tmp_path / "flux-tiny.safetensors"
    save_file(load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors"), single)
    path = generate({**CFG, "model": {"source": str(single), "base": str(folder)}}, out_dir=tmp_path / "o",
                    progress=False)[0].path
    text = parameters(path)
    digest = hashlib.sha256(single.read_bytes()).hexdigest()[:10]
    assert f"Model hash: {digest}, Model: flux-tiny.safetensors" in text
    info = sd_parsers.ParserManager().parse(str(path))
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    (model,) = info.models
    assert model.hash == digest and model.name == "flux-tiny.safetensors"
    assert info.prompts[0].value == "a red fox"


def test_lora_hashes_follow_a1111s_format_and_folders_have_no_model_hash(tmp_path):
    film = write_kohya_file(tmp_path / "film.safetensors")
    anna = write_diffusers(tmp_path / "anna-v2.safetensors", rank=4)
    config = {**CFG, "model": {"source": "tiny"},
              "lora": [{"path": str(film), "scale": 0.5, "name": "Film look"}, {"path": str(anna), "scale": 0.3}]}
    result = generate(config, out_dir=tmp_path / "o", progress=False)[0]
    records = result.recipe["loras"]
    assert [r["autov3"] for r in records] == [autov3(film), autov3(anna)]
    assert all(len(r["sha256"]) == 64 for r in records)  # the full hash stays in the recipe
    text = parameters(result.path)
    assert f'Lora hashes: "Film look: {autov3(film)}, anna-v2: {autov3(anna)}"' in text
    assert "Model hash" not in text  # built-in model: no single transformer file
    assert re.search(r"Version: localflux [\w.]+$", text)
    sd_parsers = pytest.importorskip("sd_parsers")
    assert sd_parsers.ParserManager().parse(str(result.path)).prompts[0].value == "a red fox"


def test_model_hash_only_for_single_file_recipes():
    recipe = {"model": {"kind": "folder", "source": "/m", "files": [{"path": "/m/x.safetensors", "sha256": "a" * 64}]}}
    assert png.model_hash(recipe) is None
    recipe["model"].update(kind="single_file", source="/m/flux.safetensors",
                           files=[{"path": "/b/vae.safetensors", "sha256": "b" * 64},
                                  {"path": "/m/flux.safetensors", "sha256": "c" * 64}])
    assert png.model_hash(recipe) == "c" * 10
    assert png.lora_hashes({"loras": [{"path": "/l/a.pt", "name": "a.pt", "autov3": None}]}) is None
    assert png.lora_hashes({"loras": [{"path": "/l/a.safetensors", "name": "a, b: c", "autov3": "0" * 12}]}) \
        == "a_ b_ c: " + "0" * 12
