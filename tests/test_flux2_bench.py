"""``localflux bench --model klein-4b|klein-9b|flux2-dev`` (issue 17): the timed side-by-side run against plain
diffusers' Flux2KleinPipeline / Flux2Pipeline. ``--tiny`` runs the same code path on the CPU with the FLUX.2
miniatures and appends nowhere; the full-size builder is checked on a saved miniature's configs."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("model,pipeline", [("klein-4b", "Flux2KleinPipeline"), ("klein-base-9b", "Flux2KleinPipeline"),
                                            ("flux2-dev", "Flux2Pipeline")])
def test_tiny_flux2_bench_runs_both_sides_and_appends_nowhere(run_cli, tmp_path, model, pipeline):
    code, out, err = run_cli("bench", "--tiny", "--model", model, "--mode", "eager", "--repeats", "1", "--warmup", "0",
                             cwd=tmp_path)
    assert code == 0, err
    assert f"{model} 64x64, 2 steps, mode eager" in out and "largest pixel difference 0 levels" in out
    assert not (tmp_path / "benchmarks").exists() and "appended" not in err


def test_tiny_flux2_bench_record_has_the_flux1_schema(run_cli, tmp_path):
    results = tmp_path / "r.json"
    for model in ("dev", "klein-4b"):
        code, out, err = run_cli("bench", "--tiny", "--model", model, "--mode", "fast", "--repeats", "1",
                                 "--warmup", "0", "--results", results)
        assert code == 0, err
    flux1, flux2 = json.loads(results.read_text())
    assert flux1.keys() == flux2.keys() and flux1["settings"].keys() == flux2["settings"].keys()
    assert flux1["baseline"].keys() == flux2["baseline"].keys()
    assert flux1["localflux"].keys() == flux2["localflux"].keys()
    assert flux2["baseline"]["kind"] == "diffusers Flux2KleinPipeline float32 eager"
    assert flux1["baseline"]["kind"] == "diffusers FluxPipeline float32 eager"
    assert flux2["settings"]["preset"] == "klein-4b" and flux2["settings"]["steps"] == 2
    assert flux2["settings"]["guidance"] == 1.0 and flux2["settings"]["max_sequence_length"] == 512
    assert flux2["localflux"]["speed"]["compile"] == "blocks" and flux2["difference"]["max_levels"] is not None
    assert len(flux2["localflux"]["step_s"]["runs"]) == 2  # one transformer call per step


def test_flux2_bench_with_the_automatic_plan_on_the_tiny_model(run_cli, tmp_path):
    code, out, err = run_cli("bench", "--tiny", "--model", "klein-4b", "--mode", "cap24-auto", "--repeats", "1",
                             "--warmup", "0", "--results", tmp_path / "r.json")
    assert code == 0, err
    record = json.loads((tmp_path / "r.json").read_text())[0]
    assert record["localflux"]["plan"]["chosen_by"] == "auto" and record["settings"]["baseline"] == "model-offload"


def test_full_size_flux2_builder_is_seeded_finite_and_fills_buffers(tmp_path):
    import torch

    from localflux.bench.models import build_fullsize_flux2, flux2_pipeline_class
    from localflux.families.flux2.tiny import save_tiny_model

    root = save_tiny_model("tiny-flux2", tmp_path / "klein")
    a = build_fullsize_flux2("klein-4b", "cpu", torch.float32, seed=3, root=root)
    b = build_fullsize_flux2("klein-4b", "cpu", torch.float32, seed=3, root=root)
    for name in ("transformer", "vae", "text_encoder"):
        for (key, x), y in zip(a[name].state_dict().items(), b[name].state_dict().values()):
            assert torch.isfinite(x).all() and torch.equal(x, y), (name, key)
    assert torch.equal(a["vae"].bn.running_var, torch.ones_like(a["vae"].bn.running_var))
    assert a["is_distilled"] is True
    pipe = flux2_pipeline_class("klein-4b")(**a)
    image = pipe(prompt="a fox", height=64, width=64, num_inference_steps=2, max_sequence_length=32,
                 generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3) and bool(torch.isfinite(torch.from_numpy(image)).all())


def test_mistral_stand_in_has_the_published_size():
    import torch
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from localflux.bench.models import MISTRAL_TEXT, MISTRAL_VISION
    from localflux.families.flux2.footprint import MISTRAL_PARAMS

    config = Mistral3Config(text_config=MISTRAL_TEXT, vision_config=MISTRAL_VISION, image_token_index=10,
                            spatial_merge_size=2, projector_hidden_act="gelu")
    with torch.device("meta"):
        count = sum(p.numel() for p in Mistral3ForConditionalGeneration(config).parameters())
    assert abs(count - MISTRAL_PARAMS) / MISTRAL_PARAMS < 0.01
