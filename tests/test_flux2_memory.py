"""FLUX.2 memory plans (arithmetic on synthetic cards), GGUF / fp8 / offload / text-on-CPU wiring on tiny models,
and VAE tiling on the 32-channel VAE."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from localflux.memory.plan import GiB, Workload, auto_plan, synthetic_machine

torch.set_num_threads(1)

BASE = {"model": {"source": "tiny-flux2", "device": "cpu"}, "prompt": {"subject": "a fox in snow"},
        "size": {"width": 64, "height": 48}, "sampling": {"seed": 7, "steps": 2}}


def render(memory=None, **model):
    from localflux import pipeline
    from localflux.model_cache import MODELS

    MODELS.clear()
    config = json.loads(json.dumps(BASE))
    config["model"].update(model)
    config["memory"] = memory or {}
    result = pipeline.generate(config, save=False, progress=False)[0]
    return np.asarray(result.image, dtype=np.int16), result.recipe


@pytest.fixture(scope="module")
def sized():
    from localflux.families.flux2.footprint import sized_footprint

    return {name: sized_footprint(name) for name in ("klein-4b", "klein-9b", "flux2-dev")}


def test_full_size_counts_match_the_measured_ones(sized):
    # ../shared/model-configs/README.md (meta device, diffusers 0.42.1)
    assert sized["klein-4b"].transformer == 3_875_544_576 and sized["klein-4b"].t5 == 4_022_468_096
    assert sized["klein-9b"].transformer == 9_078_581_248 and sized["klein-9b"].t5 == 8_190_735_360
    assert sized["flux2-dev"].transformer == 32_223_281_152 and sized["flux2-dev"].t5 == 23_300_000_000
    assert {fp.vae for fp in sized.values()} == {84_046_115} and {fp.clip for fp in sized.values()} == {0}
    assert {fp.vae_scale_factor for fp in sized.values()} == {8}


def _pick(fp, gib, **kwargs):
    extras = {k: kwargs.pop(k) for k in ("nf4", "fp8_compute", "ram_gib") if k in kwargs}
    plan = auto_plan(fp, Workload(), synthetic_machine(gib, **extras), text_on_cpu=True, **kwargs)
    return plan.transformer, plan.t5, plan.t5_device, plan.offload


# (model, free GiB) -> (transformer, text encoder format, text encoder device, offload): docs/memory.md, 1024x1024
PLAIN = {
    ("klein-4b", 12): ("full", "full", "auto", "model"),
    ("klein-4b", 16): ("full", "full", "auto", "model"),
    ("klein-4b", 24): ("full", "full", "auto", "none"),
    ("klein-9b", 12): ("fp8-storage", "full", "cpu", "model"),
    ("klein-9b", 16): ("fp8-storage", "full", "cpu", "none"),
    ("klein-9b", 24): ("full", "full", "auto", "model"),
    ("flux2-dev", 24): ("fp8-storage", "fp8-storage", "auto", "sequential"),
}


@pytest.mark.parametrize("key", list(PLAIN), ids=[f"{m}-{g}" for m, g in PLAIN])
def test_documented_flux2_plans(sized, key):
    name, gib = key
    assert _pick(sized[name], gib) == PLAIN[key]


def test_dev_on_24_gb_quantizes_the_transformer_and_encodes_from_system_memory(sized):
    dev = sized["flux2-dev"]
    assert _pick(dev, 24, nf4=True) == ("nf4", "full", "cpu", "resident")
    assert _pick(dev, 24, gguf=("Q4_K", int(18.7 * GiB))) == ("gguf:Q4_K", "full", "cpu", "model")
    plan = auto_plan(dev, Workload(), synthetic_machine(24, nf4=True), text_on_cpu=True)
    assert plan.peak_bytes + 1.5 * GiB <= 24 * GiB and "LOSSY" in plan.reason
    # the Mistral encoder kept in system memory in bf16 (23.3 B x 2 bytes), not float32
    from localflux.memory.plan import host_bytes

    assert host_bytes(plan, dev, Workload()) < 75 * GiB
    # without the CPU option (FLUX.1's behaviour) nothing resident fits: it streams
    assert auto_plan(dev, Workload(), synthetic_machine(24, nf4=True)).streaming


def test_a_gpu_text_encoder_wins_whenever_one_fits(sized):
    assert _pick(sized["klein-4b"], 80) == ("full", "full", "auto", "none")
    assert _pick(sized["flux2-dev"], 141) == ("full", "full", "auto", "none")


def test_flux1_plans_are_unchanged_without_the_family_option():
    from localflux.memory.footprint import footprint_from_configs, packaged_config_root

    fp = footprint_from_configs(str(packaged_config_root("dev")))
    plan = auto_plan(fp, Workload(), synthetic_machine(24))
    assert (plan.transformer, plan.t5, plan.offload, plan.t5_device) == ("fp8-storage", "fp8-storage", "resident", "auto")


@pytest.mark.parametrize("model", ["klein-4b", "klein-9b", "flux2-dev"])
def test_doctor_names_flux2_models(run_cli, model):
    code, out, err = run_cli("doctor", "--vram", "24", "--model", model)
    assert code == 0, err
    assert f"memory plans for FLUX.2-{model}" in out and 'memory = "auto" picks:' in out


# ---------------------------------------------------------------- wiring on the CPU (tiny-flux2)


def test_offload_modes_and_text_encoder_on_cpu_keep_pixels():
    reference, recipe = render()
    for memory in ({"offload": "model"}, {"offload": "resident"}, {"offload": "group"}, {"offload": "sequential"},
                   {"offload": "model", "t5_device": "cpu"}, {"t5_device": "cpu"}):
        pixels, recipe = render(memory)
        assert np.array_equal(pixels, reference), memory
        assert recipe["decisions"]["memory"]["offload"] == memory.get("offload", "none")


def test_fp8_storage_on_flux2_is_close_and_lossy():
    reference, _ = render()
    for memory in ({"transformer": "fp8-storage"}, {"t5": "fp8-storage"}):
        pixels, recipe = render(memory)
        assert 0 < int(np.abs(pixels - reference).max()) < 60, memory
        assert recipe["decisions"]["memory"]["lossy"] is True


def test_auto_plan_on_cpu_for_flux2(run_cli, tmp_path):
    code, out, err = run_cli("generate", "--model", "tiny-flux2", "--device", "cpu", "--prompt", "a fox", "--seed", "3",
                             "--width", "64", "--height", "48", "--steps", "2", "--memory", "auto", "--no-progress",
                             "--out", tmp_path)
    assert code == 0 and "memory plan:" in err, err


@pytest.fixture(scope="module")
def flux2_gguf(tmp_path_factory):
    from gguf_tiny import write_q8_gguf

    from localflux.families.flux2.tiny import build_tiny_components, save_tiny_model

    root = tmp_path_factory.mktemp("flux2-gguf")
    out = {}
    for variant in ("tiny-flux2", "tiny-flux2-dev"):
        folder = save_tiny_model(variant, root / variant)
        path = root / f"{variant}-Q8_0.gguf"
        write_q8_gguf(build_tiny_components(variant)["transformer"].state_dict(), path)
        out[variant] = (path, folder)
    return out


@pytest.mark.parametrize("variant", ["tiny-flux2", "tiny-flux2-dev"])
def test_gguf_flux2_transformer_loads_renders_close_and_replays(flux2_gguf, variant, run_cli, tmp_path):
    from localflux.memory.formats import inspect_gguf

    path, folder = flux2_gguf[variant]
    assert inspect_gguf(path)[0] == "Q8_0"
    reference, _ = render(source=str(folder))
    pixels, recipe = render(source=str(path), base=str(folder))
    assert recipe["model"]["family"] == "flux2" if "family" in recipe["model"] else True
    assert recipe["model"]["preset"] == ("flux2-dev" if variant.endswith("dev") else "klein")
    assert recipe["decisions"]["memory"]["transformer"] == "gguf:Q8_0"
    assert int(np.abs(pixels - reference).max()) <= 12  # 8-bit blocks: close, not equal
    code, out, err = run_cli("generate", "--model", path, "--base", folder, "--device", "cpu", "--prompt", "a fox",
                             "--seed", "1", "--width", "64", "--height", "48", "--steps", "2", "--no-progress",
                             "--out", tmp_path)
    assert code == 0, err
    code, _, err = run_cli("replay", out.strip(), "--verify", "--no-progress")
    assert code == 0, err


def test_gguf_transformer_weights_stay_quantized(flux2_gguf):
    from localflux.families.flux2.loading import load_single_file_transformer, single_file_plan

    path, folder = flux2_gguf["tiny-flux2"]
    plan = single_file_plan(path, folder)
    model = load_single_file_transformer(path, config=plan["config"], overrides=plan["overrides"])
    assert any(type(p).__name__ == "GGUFParameter" for p in model.parameters())


# ---------------------------------------------------------------- VAE tiling (32 channels)


def test_vae_tiling_on_the_32_channel_vae_matches_untiled_closely():
    from localflux.families.flux2.tiny import build_tiny_components

    vae = build_tiny_components("tiny-flux2")["vae"]
    assert vae.config.latent_channels == 32
    latents = torch.randn(1, 32, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = vae.decode(latents).sample
        vae.enable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = 128, 16  # tiles of 16 latents, overlap 4
        calls = []
        original = vae.tiled_decode
        vae.tiled_decode = lambda *a, **k: calls.append(1) or original(*a, **k)
        tiled = vae.decode(latents).sample
    assert calls and tiled.shape == plain.shape == (1, 3, 192, 192)
    # overlapping tiles blended, GroupNorm statistics per tile: the same picture, not the same numbers
    correlation = float(torch.corrcoef(torch.stack([tiled.flatten(), plain.flatten()]))[0, 1])
    assert correlation > 0.9, correlation


def test_vae_tiling_setting_reaches_the_flux2_render():
    reference, _ = render()
    pixels, recipe = render({"vae_tiling": "on"})
    assert recipe["decisions"]["vae_tiling"] is True
    assert np.array_equal(pixels, reference)  # below one tile: the same decode


# ---------------------------------------------------------------- bench


def test_bench_dry_run_builds_every_flux2_model_on_meta(run_cli):
    code, out, err = run_cli("bench", "--dry-run")
    assert code == 0, err
    assert "FLUX.2-klein-4b: transformer 3,875,544,576, text_encoder 4,022,468,096, vae 84,046,115" in out
    assert "FLUX.2-klein-9b: transformer 9,078,581,248, text_encoder 8,190,735,360" in out
    assert "FLUX.2-flux2-dev: transformer 32,223,281,152" in out


def test_bench_timing_of_flux2_without_a_gpu_says_so_in_one_line(run_cli, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run_cli("bench", "--model", "klein-4b")
    assert code != 0 and "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1
