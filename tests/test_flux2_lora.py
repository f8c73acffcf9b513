"""FLUX.2 LoRAs: each layout applies as diffusers' own FLUX.2 loader applies it, with the coverage report and
the fail-loud rules of FLUX.1; LoRAs of the other family are refused in one line naming both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flux2_lora_files as F
from conftest import pixels
from localflux import generate
from localflux.replay import replay

BASE = {"model": {"source": "tiny-flux2", "device": "cpu"}, "prompt": {"subject": "a fox"},
        "size": {"width": 64, "height": 64}, "sampling": {"seed": 3, "steps": 2}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flux2-loras")
    return {
        "ai_toolkit": F.write_ai_toolkit(d / "ai-toolkit.safetensors"),
        "fal": F.write_fal(d / "fal.safetensors"),
        "musubi": F.write_musubi(d / "musubi.safetensors"),
        "diffusers": F.write_diffusers(d / "diffusers.safetensors"),
        "peft_metadata": F.write_peft_metadata(d / "peft"),
        "diffusers_alpha_rank": F.write_diffusers(d / "alpha-rank.safetensors", alpha=4),
        "diffusers_alpha_2": F.write_diffusers(d / "alpha-2.safetensors", alpha=2),
        "musubi_modulation": F.write_musubi(d / "musubi-mod.safetensors", modulation=True),
        "flux1": F.write_flux1(d / "flux1.safetensors"),
    }


def render(loras=(), fuse="unfused", **extra):
    config = {**BASE, "lora": [dict(e) for e in loras], "lora_options": {"fuse": fuse}, **extra}
    result = generate(config, save=False, progress=False)[0]
    return pixels(result.image), result


def diffusers_render(path, scale):
    from localflux.families.flux2.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("tiny-flux2")
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(path), adapter_name="ref")
    pipe.set_adapters(["ref"], [scale])
    image = pipe(prompt="a fox", width=64, height=64, num_inference_steps=2, guidance_scale=1.0,
                 generator=[torch.Generator("cpu").manual_seed(3)]).images[0]
    return pixels(image)


def max_diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("name", ["ai_toolkit", "fal", "musubi", "diffusers", "peft_metadata"])
def test_each_layout_equals_diffusers_flux2_loader(files, name):
    base, _ = render()
    image, result = render([{"path": str(files[name]), "scale": 0.8}])
    assert max_diff(image, diffusers_render(files[name], 0.8)) == 0
    assert max_diff(image, base) > 3  # the LoRA really changes the image
    record = result.recipe["loras"][0]
    counts = record["applied"]
    assert counts["applied"] == counts["lora_tensors"] > 0 and counts["alphas_applied"] == counts["alphas"]
    assert record["partial"] is False and record["scale"] == 0.8


def test_fused_is_unfused_within_rounding(files):
    fused, result = render([{"path": str(files["ai_toolkit"]), "scale": 0.8}], fuse="fused")
    unfused, _ = render([{"path": str(files["ai_toolkit"]), "scale": 0.8}], fuse="unfused")
    assert result.recipe["loras"][0]["fuse"] == "fused" and max_diff(fused, unfused) <= 1


def test_alpha_tensors_beside_diffusers_keys_set_the_strength(files):
    """diffusers' FLUX.2 loader refuses ``.alpha`` keys outside kohya files; localflux folds them (alpha = rank: 1)."""
    plain, _ = render([{"path": str(files["diffusers"]), "scale": 1.0}])
    same, _ = render([{"path": str(files["diffusers_alpha_rank"]), "scale": 1.0}])
    half, result = render([{"path": str(files["diffusers_alpha_2"]), "scale": 1.0}])
    half_by_scale, _ = render([{"path": str(files["diffusers"]), "scale": 0.5}])
    assert max_diff(plain, same) == 0 and max_diff(half, half_by_scale) <= 1
    assert result.recipe["loras"][0]["applied"]["alphas_applied"] == 11


def test_layers_the_converter_drops_are_refused_unless_strict_false(files):
    from localflux.errors import LoraError

    with pytest.raises(LoraError, match="only 20 of 22 LoRA tensors applied"):
        render([{"path": str(files["musubi_modulation"])}])
    _, result = render([{"path": str(files["musubi_modulation"]), "strict": False}])
    assert result.recipe["loras"][0]["partial"] is True


def test_recipe_records_the_lora_and_replays(files, tmp_path):
    config = {**BASE, "lora": [{"path": str(files["musubi"]), "scale": 0.7}]}
    (result,) = generate(config, out_dir=tmp_path, progress=False)
    assert result.recipe["model"]["family"] == "flux2" and result.recipe["loras"][0]["format"].startswith("kohya")
    replayed = replay(result.path, progress=False)
    assert replayed.identical


def _one_line(proc):
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


def test_a_flux1_lora_on_flux2_and_the_reverse_are_refused_naming_both(files, tmp_path, run_cli):
    common = ["--device", "cpu", "--prompt", "x", "--width", "64", "--height", "64", "--steps", "1", "--seed", "1",
              "--no-progress"]
    for model, lora, words in (("tiny-flux2", files["flux1"], ("FLUX.1 LoRA", "model is FLUX.2")),
                               ("tiny", files["ai_toolkit"], ("FLUX.2 LoRA", "model is FLUX.1"))):
        code, out, err = run_cli("generate", "--model", model, "--lora", lora, "--out", tmp_path / "out", *common)
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, out + err
        assert all(w in lines[0] for w in words), lines[0]
        assert not (tmp_path / "out").exists()


def test_lora_inspect_names_the_family(files, run_cli):
    code, out, _ = run_cli("lora", "inspect", files["ai_toolkit"])
    assert code == 0 and "family:      FLUX.2" in out
    code, out, _ = run_cli("lora", "inspect", files["flux1"])
    assert code == 0 and "family:      FLUX.1" in out
