"""The benchmark harness: the meta-device dry run of every full-size config, and --tiny runs of its modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

PUBLISHED = {  # ../shared/flux-configs/README.md
    "dev": {"transformer": 11_901_408_320, "text_encoder_2": 4_762_310_656, "text_encoder": 123_060_480, "vae": 83_819_683},
    "schnell": {"transformer": 11_891_178_560, "text_encoder_2": 4_762_310_656, "text_encoder": 123_060_480,
                "vae": 83_819_683},
}


@pytest.mark.parametrize("preset", ["dev", "schnell"])
def test_every_full_size_config_builds_on_the_meta_device(preset):
    from localflux.bench.models import dry_run

    counts = dry_run(preset)
    assert {k: v for k, v in counts.items() if k != "footprint"} == PUBLISHED[preset]


def test_dry_run_command(run_cli):
    code, out, _ = run_cli("bench", "--dry-run")
    assert code == 0 and "11,901,408,320" in out and "11,891,178,560" in out


def test_random_materialization_is_seeded_finite_and_fills_buffers(tiny_folders):
    import torch

    from localflux.bench.models import build_fullsize_components

    a = build_fullsize_components("dev", "cpu", torch.float32, seed=3, root=tiny_folders["dev"])
    b = build_fullsize_components("dev", "cpu", torch.float32, seed=3, root=tiny_folders["dev"])
    for name in ("transformer", "text_encoder_2", "text_encoder", "vae"):
        for (key, x), y in zip(a[name].state_dict().items(), b[name].state_dict().values()):
            assert torch.isfinite(x).all() and torch.equal(x, y), (name, key)
    ids = a["text_encoder"].embeddings.position_ids
    assert torch.equal(ids[0], torch.arange(ids.shape[-1]))
    from diffusers import FluxPipeline

    image = FluxPipeline(**a)("a fox", height=64, width=64, num_inference_steps=2, max_sequence_length=32,
                              output_type="np", generator=torch.Generator().manual_seed(0)).images[0]
    assert np.isfinite(image).all() and image.std() > 0


def test_modes_match_the_cli_list():
    from localflux.bench.run import MODES
    from localflux.commands.bench import MODE_NAMES

    assert list(MODES) + ["upscale"] == MODE_NAMES  # upscale is its own path (bench/upscale.py)


def test_tiny_runs_of_the_modes_append_documented_records(tmp_path, run_cli):
    results = tmp_path / "results.json"
    for mode in ("eager", "fast", "fp8-storage", "cap24-auto", "cap12-group", "cap24-resident"):
        code, out, err = run_cli("bench", "--tiny", "--model", "schnell", "--mode", mode, "--repeats", "2",
                                 "--results", results)
        assert code == 0, (mode, err)
        assert "ratio localflux/baseline" in out
    records = json.loads(results.read_text())
    assert [r["mode"] for r in records] == ["eager", "fast", "fp8-storage", "cap24-auto", "cap12-group", "cap24-resident"]
    for record in records:
        assert {"schema_version", "date", "command", "device", "versions", "settings", "baseline", "localflux",
                "ratio", "difference"} <= set(record)
        assert record["baseline"]["end_to_end_s"]["n"] == 2 and record["localflux"]["step_s"]["median"] > 0
        assert record["versions"]["diffusers"] and record["settings"]["tiny"] is True
        assert record["target"] is None  # tiny runs never pose as GPU figures
    by_mode = {r["mode"]: r for r in records}
    assert by_mode["eager"]["difference"]["max_levels"] == 0  # localflux's path is plain diffusers' output
    assert by_mode["cap12-group"]["settings"]["baseline"] == "group-offload"
    assert by_mode["cap24-resident"]["localflux"]["plan"]["offload"] == "resident"
    assert by_mode["fp8-storage"]["difference"]["max_levels"] > 0


def test_gpu_only_modes_fail_clearly_on_the_cpu(tmp_path, run_cli):
    code, _, err = run_cli("bench", "--tiny", "--mode", "fp8", "--results", tmp_path / "r.json")
    assert code == 2 and "CUDA" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("bench", "--mode", "nonsense", "--tiny")
    assert code == 2 and "fast-cudnn" in err
    assert not (tmp_path / "r.json").exists()


def test_tiny_run_without_results_flag_appends_nowhere(tmp_path, monkeypatch, run_cli):
    # a CPU run must never land in the committed GPU results file
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("bench", "--tiny", "--mode", "eager", "--repeats", "1")
    assert code == 0, err
    assert "ratio localflux/baseline" in out and "appended" not in err
    assert not (tmp_path / "benchmarks").exists()


def test_tiny_upscale_mode_times_the_stage_against_the_bare_network(tmp_path, run_cli):
    results = tmp_path / "results.json"
    code, out, err = run_cli("bench", "--tiny", "--mode", "upscale", "--repeats", "1", "--warmup", "0",
                             "--results", results)
    assert code == 0, err
    assert "realesrgan-x4plus 32x32 -> 128x128" in out and "ratio localflux/baseline" in out
    (record,) = json.loads(results.read_text())
    assert record["mode"] == "upscale" and record["target"] is None
    assert record["settings"]["output"] == [128, 128] and record["settings"]["scale"] == 4
    assert record["settings"]["architecture"].startswith("RRDBNet")
    assert record["localflux"]["tiling"]["tiles"] >= 1
    assert record["ratio"]["end_to_end"] > 0 and record["baseline"]["end_to_end_s"]["n"] == 1
    # the engine and one bare call agree away from the border (where only padding differs)
    assert record["difference"]["mean_levels"] < 8
