"""Memory plans (arithmetic on synthetic cards), weight formats, offload wiring and T5 handling on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from localflux.errors import DeviceError
from localflux.memory.plan import GiB, MemoryPlan, Workload, auto_plan, evaluate, synthetic_machine

BASE = {"model": {"source": "tiny", "device": "cpu"}, "prompt": {"subject": "a fox in snow"},
        "size": {"width": 64, "height": 64}, "sampling": {"seed": 7}}


def render(memory=None, speed=None, source=None, **model):
    from localflux import pipeline
    from localflux.model_cache import MODELS

    MODELS.clear()
    config = json.loads(json.dumps(BASE))
    config["model"].update(model, **({"source": source} if source else {}))
    config["memory"] = memory or {}
    config["speed"] = speed or {}
    result = pipeline.generate(config, save=False, progress=False)[0]
    return np.asarray(result.image, dtype=np.int16), result.recipe


@pytest.fixture(scope="module")
def dev_footprint():
    from localflux.memory.footprint import footprint_from_configs, packaged_config_root

    return footprint_from_configs(str(packaged_config_root("dev")))


# (free GiB) -> (transformer, t5, offload) documented in docs/memory.md, FLUX.1-dev 1024x1024
PLAIN = {8: ("full", "full", "group"), 12: ("full", "full", "group"), 16: ("full", "full", "group"),
         24: ("fp8-storage", "fp8-storage", "resident"), 48: ("full", "full", "none"), 80: ("full", "full", "none")}
WITH_TORCHAO_BNB = {8: ("full", "full", "group"), 12: ("nf4", "full", "model"), 16: ("fp8", "full", "model"),
                    24: ("fp8", "full", "resident"), 48: ("full", "full", "none"), 80: ("full", "full", "none")}


@pytest.mark.parametrize("extras,expected", [({}, PLAIN), ({"fp8_compute": True, "nf4": True}, WITH_TORCHAO_BNB)])
def test_documented_plans(dev_footprint, extras, expected):
    for gib, want in expected.items():
        plan = auto_plan(dev_footprint, Workload(), synthetic_machine(gib, **extras))
        assert (plan.transformer, plan.t5, plan.offload) == want, gib
        assert plan.peak_bytes + 1.5 * GiB <= gib * GiB or plan.streaming
        assert ("LOSSY" in plan.reason) == plan.lossy


def test_lossless_wins_whenever_it_fits_and_lossy_can_be_forbidden(dev_footprint):
    rich = dict(fp8_compute=True, nf4=True)
    assert not auto_plan(dev_footprint, Workload(), synthetic_machine(48, **rich)).lossy  # fp8 would be faster
    refused = auto_plan(dev_footprint, Workload(), synthetic_machine(24, **rich), allow_lossy=False)
    assert (refused.transformer, refused.offload, refused.lossy) == ("full", "group", False)
    assert "allow_lossy = false" in refused.reason


def test_nothing_fits_is_one_clear_error(dev_footprint):
    with pytest.raises(DeviceError, match="no memory plan fits"):
        auto_plan(dev_footprint, Workload(), synthetic_machine(2))


def test_estimates_follow_the_config(dev_footprint):
    work = Workload()
    full = evaluate(dev_footprint, work, synthetic_machine(80))[0]
    weights = (dev_footprint.transformer + dev_footprint.t5 + dev_footprint.clip + dev_footprint.vae) * 2
    assert weights < full.peak < weights + 5 * GiB  # weights plus activations and a reserve
    bigger = evaluate(dev_footprint, Workload(2048, 2048), synthetic_machine(80))[0]
    assert bigger.peak > full.peak
    assert MemoryPlan("fp8-storage").lossy and not MemoryPlan("full", offload="group").lossy


def test_t5_on_the_cpu_takes_its_weights_and_activations_off_the_accelerator(dev_footprint):
    from localflux.memory.plan import activation_bytes, stage_peaks

    work = Workload()
    on_gpu = stage_peaks(MemoryPlan(offload="model"), dev_footprint, work)
    on_cpu = stage_peaks(MemoryPlan(offload="model", t5_device="cpu"), dev_footprint, work)
    t5_weights = dev_footprint.t5 * work.compute_bytes
    # text stage: only CLIP is left on the accelerator; the other stages do not change
    assert on_gpu["text"] - on_cpu["text"] == t5_weights - dev_footprint.clip * 2 + activation_bytes(dev_footprint, work)["text"]
    assert on_cpu["denoise"] == on_gpu["denoise"] and on_cpu["decode"] == on_gpu["decode"]


def test_auto_plan_is_chosen_for_t5_where_the_user_put_it(dev_footprint):
    # T5 kept on the CPU frees ~9 GiB: a 24 GiB card then needs no lossy T5 (it did when the plan was
    # chosen as if T5 were on the GPU and moved afterwards)
    on_gpu = auto_plan(dev_footprint, Workload(), synthetic_machine(24))
    on_cpu = auto_plan(dev_footprint, Workload(), synthetic_machine(24), t5_device="cpu")
    assert on_gpu.t5 == "fp8-storage"
    assert (on_cpu.t5, on_cpu.t5_device) == ("full", "cpu") and on_cpu.peak_bytes < on_gpu.peak_bytes


def test_offload_modes_wire_on_cpu_and_keep_pixels():
    reference, recipe = render()
    assert recipe["decisions"]["memory"]["offload"] == "none"
    for mode in ("model", "resident", "group", "sequential"):
        pixels, recipe = render({"offload": mode})
        assert np.array_equal(pixels, reference), mode
        assert recipe["decisions"]["memory"]["offload"] == mode and recipe["decisions"]["offload"] == mode
    pixels, recipe = render({"offload": "model", "t5_device": "cpu"})
    assert np.array_equal(pixels, reference) and recipe["decisions"]["memory"]["t5_device"] == "cpu"


def test_fp8_storage_is_lossy_but_close_and_recorded():
    reference, _ = render()
    for memory in ({"transformer": "fp8-storage"}, {"t5": "fp8-storage"}):
        pixels, recipe = render(memory)
        difference = int(np.abs(pixels - reference).max())
        assert 0 < difference < 40, memory  # changed, and by rounding, not garbage
        assert recipe["decisions"]["memory"]["lossy"] is True


def test_t5_cache_reuses_embeddings_exactly():
    from localflux import pipeline

    reference, _ = render()
    pixels, _ = render({"cache_t5": True})
    assert np.array_equal(pixels, reference)
    model = pipeline.load(pipeline.plan(pipeline.coerce_config({**BASE, "memory": {"cache_t5": True}})))
    calls = []
    handle = model.pipe.text_encoder_2.register_forward_hook(lambda *a: calls.append(1))
    for seed in (7, 8):
        pipeline.generate({**BASE, "memory": {"cache_t5": True}, "sampling": {"seed": seed}}, save=False, progress=False)
    handle.remove()
    assert len(calls) == 0 and len(model.pipe.encode_prompt.cache) == 1  # cached by the first render above


def test_quantized_formats_refused_where_they_cannot_run(run_cli):
    code, out, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "x", "--seed", "1",
                             "--set", "memory.transformer=nf4", "--no-progress")
    assert code == 2 and "nf4" in err and "CUDA" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "x",
                           "--set", "memory.transformer=fp8", "--no-progress")
    assert code == 2 and "fp8-storage" in err


def test_auto_plan_is_printed_recorded_and_not_redecided_on_replay(tmp_path, run_cli, monkeypatch):
    code, out, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "a fox", "--seed", "3",
                             "--width", "64", "--height", "64", "--memory", "auto", "--no-progress", "--out", tmp_path)
    assert code == 0 and "memory plan:" in err
    image = out.strip().splitlines()[0]
    from localflux.recipe import read_recipe

    plan = read_recipe(image)["decisions"]["memory"]
    assert plan["chosen_by"] == "auto" and plan["offload"] == "none"
    import localflux.memory.resolve as resolve

    monkeypatch.setattr(resolve, "auto_plan", lambda *a, **k: pytest.fail("replay re-decided the memory plan"))
    code, _, err = run_cli("replay", image, "--verify", "--no-progress")
    assert code == 0, err


# ---------------------------------------------------------------- GGUF


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from gguf_tiny import write_q8_gguf
    from localflux.families.flux1.tiny import build_tiny_pipeline

    path = tmp_path_factory.mktemp("gguf") / "tiny-dev-Q8_0.gguf"
    write_q8_gguf(build_tiny_pipeline("dev").transformer.state_dict(), path)
    return path


def test_gguf_q8_transformer_renders_close_to_full_and_replays(tiny_gguf, tiny_folders, tmp_path, run_cli):
    from localflux.memory.formats import inspect_gguf

    assert inspect_gguf(tiny_gguf)[0] == "Q8_0"
    reference, _ = render(source=str(tiny_folders["dev"]))
    pixels, recipe = render(source=str(tiny_gguf), base=str(tiny_folders["dev"]))
    assert recipe["model"]["preset"] == "dev" and recipe["decisions"]["memory"]["transformer"] == "gguf:Q8_0"
    assert int(np.abs(pixels - reference).max()) <= 8  # 8-bit blocks: close, not equal
    code, out, err = run_cli("generate", "--model", tiny_gguf, "--base", tiny_folders["dev"], "--device", "cpu",
                             "--prompt", "a fox", "--seed", "1", "--width", "64", "--height", "64", "--no-progress",
                             "--out", tmp_path)
    assert code == 0, err
    code, _, err = run_cli("replay", out.strip(), "--verify", "--no-progress")
    assert code == 0, err


def test_gguf_or_single_file_that_is_not_flux_is_refused(tmp_path, tiny_folders, run_cli):
    import torch
    from gguf_tiny import write_q8_gguf
    from safetensors.torch import save_file

    not_flux = tmp_path / "t5-Q8_0.gguf"
    write_q8_gguf({"enc.blk.0.attn_q.weight": torch.randn(32, 32)}, not_flux, arch="t5encoder")
    garbage = tmp_path / "broken.gguf"
    garbage.write_bytes(b"not a gguf at all")
    vae_file = tmp_path / "vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, vae_file)
    for bad, phrase in ((not_flux, "not a FLUX.1 transformer"), (garbage, "not a readable GGUF"),
                        (vae_file, "not a FLUX.1 transformer")):
        code, out, err = run_cli("generate", "--model", bad, "--base", tiny_folders["dev"], "--device", "cpu",
                                 "--prompt", "x", "--seed", "1", "--no-progress", "--out", tmp_path / "never")
        assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1, (bad, err)
    assert not (tmp_path / "never").exists()


def test_gguf_with_a_second_format_is_a_config_error(tiny_gguf, tiny_folders, run_cli):
    code, _, err = run_cli("generate", "--model", tiny_gguf, "--base", tiny_folders["dev"], "--device", "cpu",
                           "--prompt", "x", "--set", "memory.transformer=fp8-storage", "--no-progress")
    assert code == 2 and "brings its own format" in err


def test_doctor_shows_the_candidates_table(run_cli):
    code, out, _ = run_cli("doctor", "--vram", "24")
    assert code == 0
    assert "memory plans for FLUX.1-dev" in out and "->fp8-storage  fp8-storage resident" in out
    code, out, _ = run_cli("doctor")
    assert code == 0 and "--vram" in out  # no GPU here: says how to see a card's table
