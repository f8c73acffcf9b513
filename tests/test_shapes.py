"""FLUX-architecture models of other shapes than ``tiny``: sizes, schedules, presets, memory estimates.

The models (tests/shape_models.py) change block counts, widths, text widths, guidance embedding,
the VAE's factor and scaling, and the scheduler's shift settings. Parity with FluxPipeline for them
is in test_parity.py; LoRA and training on them in test_lora.py / test_train_run.py.
"""

import json

import numpy as np
import pytest

from localflux import generate
from localflux.config import config_from_dict

from conftest import pixels

DEV, SCHNELL = "schnell-named-dev", "dev-named-schnell"


def config(folder, **sampling):
    return {"model": {"source": str(folder)}, "prompt": {"subject": "a red fox"}, "size": {"width": 64, "height": 64},
            "sampling": {"seed": 5, "steps": 3, "max_sequence_length": 32, **sampling}}


def test_sizes_snap_to_the_models_own_multiple(shape_folders, caplog):
    from localflux.pipeline import plan

    # a factor-4 VAE: multiples of 8, as FluxPipeline needs; 70x50 -> 72x48 (not 64x48 on the 16 grid)
    snapped = plan(config_from_dict({**config(shape_folders[DEV]), "size": {"width": 70, "height": 50}}))
    assert (snapped.size.width, snapped.size.height) == (72, 48)
    with caplog.at_level("INFO", logger="localflux"):
        result = generate({**config(shape_folders[DEV]), "size": {"width": 70, "height": 50}}, save=False,
                          progress=False)[0]
    assert result.image.size == (72, 48)
    assert "size 72x48 (asked for 70x50; sides are multiples of 8)" in caplog.text
    assert plan(config_from_dict({**config(shape_folders[SCHNELL]), "size": {"width": 72, "height": 50}})).size.width == 80


@pytest.mark.parametrize("name", [DEV, SCHNELL])
def test_dry_run_shows_the_sigmas_the_render_uses(shape_folders, run_cli, name):
    folder = shape_folders[name]
    code, out, err = run_cli("generate", "--model", folder, "--prompt", "x", "--steps", "4", "--width", "96",
                             "--height", "64", "--seed", "1", "--dry-run")
    assert code == 0, err
    result = generate({**config(folder, steps=4), "size": {"width": 96, "height": 64}}, save=False, progress=False)[0]
    assert "sigmas: " + ", ".join(f"{x:.4f}" for x in result.recipe["sigmas"]) in out


def test_preset_comes_from_the_guidance_embedding_not_the_name(shape_folders, run_cli):
    code, out, err = run_cli("generate", "--model", shape_folders[DEV], "--prompt", "x", "--dry-run")
    assert code == 0 and "preset dev" in out and "steps: 28, guidance: 3.5" in out
    code, out, err = run_cli("generate", "--model", shape_folders[SCHNELL], "--prompt", "x", "--dry-run")
    assert code == 0 and "preset schnell" in out and "steps: 4," in out


def test_replay_verifies_other_shapes(shape_folders, run_cli, tmp_path):
    for name in (DEV, SCHNELL):
        code, out, err = run_cli("generate", "--model", shape_folders[name], "--prompt", "a boat", "--width", "40",
                                 "--height", "56", "--steps", "2", "--seed", "9", "--count", "2", "--max-sequence-length", "32",
                                 "--out", tmp_path / name)
        assert code == 0, err
        first, second = out.split()
        code, out, err = run_cli("replay", second, "--verify", "--out", tmp_path / f"{name}-replay")
        assert code == 0 and "identical" in out + err
        # image 2 of a run is seed 10's own render
        alone = generate({**config(shape_folders[name], steps=2, seed=10), "prompt": {"subject": "a boat"},
                          "size": {"width": 40, "height": 56}}, save=False, progress=False)[0]
        assert np.array_equal(pixels(second), pixels(alone.image))


def test_memory_estimates_use_the_models_configs(shape_folders):
    import torch
    from diffusers import FluxPipeline

    from localflux.loader import describe_source
    from localflux.memory.plan import DENOISE_ACTIVATION_FACTOR, Workload, activation_bytes
    from localflux.families.registry import FAMILIES

    folder = shape_folders[DEV]
    source = describe_source(str(folder))
    fp = FAMILIES.detect(source).footprint(source, "dev")
    pipe = FluxPipeline.from_pretrained(folder, dtype=torch.float32)
    assert fp.transformer == sum(p.numel() for p in pipe.transformer.parameters())
    assert fp.t5 == sum(p.numel() for p in pipe.text_encoder_2.parameters())
    assert (fp.hidden, fp.t5_width, fp.vae_scale_factor) == (24, 20, 4)
    tokens = (96 // 8) * (64 // 8) + 32  # a factor-4 VAE: one token per 8x8 pixels
    assert activation_bytes(fp, Workload(96, 64, 32, 2))["denoise"] == tokens * 24 * 2 * DENOISE_ACTIVATION_FACTOR
    assert json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"] == [8, 16, 16]


# ---------------------------------------------------------------- single-file transformers of other shapes


def _transformer_state(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("name", [DEV, SCHNELL])
@pytest.mark.parametrize("layout", ["diffusers", "bfl"])
def test_single_file_of_another_width_in_either_key_layout(shape_folders, tmp_path, name, layout):
    """diffusers' BFL conversion assumes width 3072: localflux converts other widths itself."""
    from safetensors.torch import save_file

    from flux_keys import diffusers_to_bfl

    folder = shape_folders[name]
    state = _transformer_state(folder)
    single = tmp_path / f"{name}-{layout}.safetensors"
    save_file(diffusers_to_bfl(state) if layout == "bfl" else state, str(single))
    ours = generate({**config(single), "model": {"source": str(single), "base": str(folder)}}, save=False, progress=False)[0]
    # in-memory and memory-mapped weights take different CPU kernel paths (~1e-6): allow one level
    assert np.abs(pixels(ours.image) - pixels(generate(config(folder), save=False, progress=False)[0].image)).max() <= 1
    assert ours.recipe["model"]["preset"] == ("dev" if name == DEV else "schnell")


def test_single_file_with_fewer_blocks_than_its_base(shape_folders, tmp_path):
    """A pruned transformer (one single block of three) with the full model as base: the file's shape wins."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import save_file

    folder = shape_folders[SCHNELL]
    state = {k: v for k, v in _transformer_state(folder).items()
             if not k.startswith(("single_transformer_blocks.1.", "single_transformer_blocks.2."))}
    single = tmp_path / "pruned.safetensors"
    save_file(state, str(single))
    ours = generate({**config(single), "model": {"source": str(single), "base": str(folder)}}, save=False, progress=False)[0]

    pipe = FluxPipeline.from_pretrained(folder)
    pruned = FluxTransformer2DModel.from_config({**pipe.transformer.config, "num_single_layers": 1}).eval()
    pruned.load_state_dict(state)
    pipe = FluxPipeline(**{**pipe.components, "transformer": pruned})
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("a red fox", width=64, height=64, num_inference_steps=3, guidance_scale=3.5, max_sequence_length=32,
                  generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert np.abs(pixels(ours.image) - pixels(theirs)).max() <= 1

    # memory estimates count the file's transformer, not the base's
    from localflux.loader import describe_source
    from localflux.families.registry import FAMILIES

    def footprint_for(source, preset):
        return FAMILIES.detect(source).footprint(source, preset)

    fp = footprint_for(describe_source(str(single), str(folder)), "schnell")
    assert fp.transformer == sum(p.numel() for p in pruned.parameters())
    assert fp.transformer < footprint_for(describe_source(str(folder)), "schnell").transformer


def test_single_file_that_cannot_fit_the_base_is_refused_in_one_sentence(shape_folders, tmp_path, run_cli):
    from safetensors.torch import save_file

    state = _transformer_state(shape_folders[SCHNELL])
    state["context_embedder.weight"] = state["context_embedder.weight"][:, :30].contiguous()  # 30-wide T5 input
    single = tmp_path / "other-t5.safetensors"
    save_file(state, str(single))
    code, out, err = run_cli("generate", "--model", single, "--base", shape_folders[SCHNELL], "--prompt", "x",
                             "--width", 32, "--height", 32, "--out", tmp_path / "out")
    assert code == 2 and "reads 30-wide T5 features, but model.base's T5 encoder gives 40" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    # a file of another head size than the base's RoPE axes: one sentence, not an IndexError
    save_file(_transformer_state(shape_folders[DEV]), str(tmp_path / "dev.safetensors"))
    code, out, err = run_cli("generate", "--model", tmp_path / "dev.safetensors", "--base", shape_folders[SCHNELL],
                             "--prompt", "x", "--width", 32, "--height", 32, "--out", tmp_path / "out")
    assert code == 2 and "has attention heads of 8 channels" in err and "Traceback" not in err


def test_gguf_q8_of_another_shape(shape_folders, tmp_path):
    from gguf_tiny import write_q8_gguf

    folder = shape_folders[SCHNELL]
    gguf_file = tmp_path / "other.gguf"
    write_q8_gguf(_transformer_state(folder), gguf_file)
    ours = generate({**config(gguf_file), "model": {"source": str(gguf_file), "base": str(folder)}},
                    save=False, progress=False)[0]
    assert ours.recipe["decisions"]["memory"]["transformer"] == "gguf:Q8_0" and ours.recipe["model"]["preset"] == "schnell"
    full = generate(config(folder), save=False, progress=False)[0]
    assert np.abs(pixels(ours.image) - pixels(full.image)).max() <= 8  # 8-bit weights: close, not equal
