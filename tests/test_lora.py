"""LoRAs on the tiny model: every format equals diffusers' own loading, scales are exact, failures are loud."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lora_files as lf
from conftest import pixels
from localflux import pipeline
from localflux.errors import LoraError
from localflux.lora import inspect as lora_inspect
from localflux.lora.rewrite import rewrite_lora  # noqa: F401  (behind `localflux lora convert`)
from localflux.lora.kohya import write_kohya
from localflux.model_cache import MODELS

BASE = {"model": {"source": "tiny", "device": "cpu"}, "prompt": {"subject": "a red cat"},
        "size": {"width": 64, "height": 64}, "sampling": {"seed": 3}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    return {
        "diffusers": lf.write_diffusers(d / "plain.safetensors", seed=10),
        "diffusers_alpha": lf.write_diffusers(d / "alpha.safetensors", seed=11, alpha=8),
        "peft_metadata": lf.write_diffusers(d / "meta.safetensors", seed=12, metadata_alpha=2),
        "ai_toolkit": lf.write_ai_toolkit(d / "anna.safetensors"),
        "kohya": lf.write_kohya_file(d / "film.safetensors"),
        "double_meta": lf.write_diffusers(d / "double.safetensors", seed=13, metadata_alpha=2, single=False),
        "double_alpha": lf.write_diffusers(d / "double_alpha.safetensors", seed=14, alpha=8, single=False),
        "kohya_te": lf.write_kohya_file(d / "with_te.safetensors", text_encoder=True),
        "kohya_t5": lf.write_kohya_file(d / "with_t5.safetensors", t5=True),
        "single_block": lf.write_kohya_single_block(d / "single.safetensors", alpha=2.0),
        "single_block_bad": lf.write_kohya_bad_linear1(d / "single_bad.safetensors"),
        "single_block_wide": lf.write_kohya_single_block(d / "single_wide.safetensors", width=48),
        "dora": lf.write_dora(d / "dora.safetensors"),
        "partial": lf.write_partial(d / "partial.safetensors"),
        "foreign": lf.write_foreign(d / "sdxl.safetensors"),
        "wrong_size": lf.write_wrong_size(d / "flux_full.safetensors"),
        "corrupt": lf.write_corrupt(d / "corrupt.safetensors"),
        "missing": d / "nowhere.safetensors",
    }


def render(loras=(), fuse="auto", **extra):
    config = dict(BASE, lora=[dict(e, path=str(e["path"])) for e in loras], lora_options={"fuse": fuse}, **extra)
    result = pipeline.generate(config, save=False, progress=False)[0]
    return pixels(result.image), result


def reference(path, scale):
    """diffusers alone: load_lora_weights on a fresh tiny pipeline, adapter weight = scale."""
    from localflux.render import render as _render

    def sampler_render(pipe, request, seeds, **kw):
        return _render(pipe, FAMILIES.by_name("flux1"), request, seeds, **kw)
    from localflux.families.registry import FAMILIES
    from localflux.families.flux1.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("schnell")
    pipe.load_lora_weights(str(path), adapter_name="ref")
    pipe.set_adapters(["ref"], [scale])
    plan = pipeline.plan(pipeline.coerce_config(dict(BASE)))
    images, _ = sampler_render(pipe, plan.request, [3], progress=False)
    return pixels(images[0])


def max_diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("name", ["diffusers", "diffusers_alpha", "peft_metadata", "ai_toolkit", "kohya"])
def test_each_format_equals_diffusers_load_lora_weights(files, name):
    base, _ = render()
    image, result = render([{"path": files[name], "scale": 0.8}])
    assert max_diff(image, reference(files[name], 0.8)) <= 1
    assert max_diff(image, base) > 10  # the LoRA really changes the image
    record = result.recipe["loras"][0]
    counts = record["applied"]
    assert counts["applied"] == counts["lora_tensors"] > 0 and counts["alphas_applied"] == counts["alphas"]
    assert record["partial"] is False and record["fuse"] == "fused" and record["scale"] == 0.8


def test_scales_stack_and_modes_agree(files):
    path = files["kohya"]
    base, _ = render()
    zero, _ = render([{"path": path, "scale": 0.0}], fuse="unfused")
    assert max_diff(zero, base) == 0
    one, _ = render([{"path": path, "scale": 1.0}], fuse="fused")
    halves, _ = render([{"path": path, "scale": 0.5}, {"path": path, "scale": 0.5}], fuse="fused")
    unfused, _ = render([{"path": path, "scale": 1.0}], fuse="unfused")
    negative, _ = render([{"path": path, "scale": -1.0}], fuse="unfused")
    assert max_diff(one, halves) <= 1 and max_diff(one, unfused) <= 1
    assert max_diff(negative, one) > 10


def test_stacked_loras_of_different_formats(files):
    stacked, result = render([{"path": files["ai_toolkit"], "scale": 0.9}, {"path": files["kohya"], "scale": 0.4}])
    alone, _ = render([{"path": files["ai_toolkit"], "scale": 0.9}])
    assert max_diff(stacked, alone) > 5
    assert [r["scale"] for r in result.recipe["loras"]] == [0.9, 0.4]


@pytest.mark.parametrize("fuse", ["fused", "unfused"])
def test_cached_pipeline_is_clean_after_lora_render(files, fuse):
    base, _ = render()
    render([{"path": files["diffusers_alpha"], "scale": 1.3}], fuse=fuse)
    other, _ = render([{"path": files["kohya"], "scale": 1.0}], fuse=fuse)
    assert max_diff(other, render([{"path": files["kohya"], "scale": 1.0}], fuse=fuse)[0]) == 0
    again, result = render()
    assert max_diff(again, base) == 0 and result.recipe["loras"] == []


def test_recipe_records_lora_exactly_and_replays(files, tmp_path, run_cli):
    from localflux.hashing import sha256_file

    scale = 0.123456789012345
    code, out, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "a red cat", "--width", 64,
                             "--height", 64, "--seed", 3, "--lora", f"{files['kohya']}:{scale}", "--out", tmp_path,
                             "--no-progress")
    assert code == 0, err
    assert "20 of 20 LoRA tensors applied; 10 alphas; 0 text-encoder tensors" in err
    png = out.strip()
    from localflux.recipe import read_recipe

    record = read_recipe(png)["loras"][0]
    assert record["sha256"] == sha256_file(files["kohya"]) and record["scale"] == scale
    assert record["format"] == "kohya (BFL keys)" and record["fuse"] == "fused"
    code, _, err = run_cli("replay", png, "--verify", "--no-progress")
    assert code == 0 and "identical" in err


def test_replay_refuses_changed_lora(files, tmp_path, run_cli):
    lora = lf.write_kohya_file(tmp_path / "changing.safetensors")
    code, out, _ = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "x", "--width", 64,
                           "--height", 64, "--seed", 1, "--lora", lora, "--out", tmp_path / "r", "--no-progress")
    assert code == 0
    lora.unlink()
    lf.write_kohya_file(lora, seed=99)
    code, _, err = run_cli("replay", out.strip(), "--verify", "--no-progress")
    assert code == 2 and "changing.safetensors" in err and "sha256" in err


@pytest.mark.parametrize("name, words", [
    ("partial", "only 4 of 8 LoRA tensors applied"),
    ("foreign", "not a FLUX.1 LoRA"),
    ("missing", "does not exist"),
    ("corrupt", "not a readable .safetensors"),
    ("dora", "DoRA"),
    ("wrong_size", "has 32 features but the LoRA has 3072"),
    ("single_block_bad", "not a FLUX.1 q|k|v|mlp layer"),
    ("single_block_wide", "attn.to_q has 32 features but the LoRA has 48"),
    ("kohya_t5", "T5 text-encoder tensors"),
])
def test_bad_loras_exit_2_name_the_file_and_write_nothing(files, tmp_path, run_cli, name, words):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "x", "--width", 64,
                             "--height", 64, "--seed", 1, "--lora", files[name], "--out", out_dir, "--no-progress")
    assert code == 2, err
    assert files[name].name in err and words in err and "Traceback" not in err
    assert not list(out_dir.glob("*.png")) and out == ""
    base, _ = render()  # the failed load left the cached pipeline clean
    assert max_diff(base, render()[0]) == 0


def test_strict_false_allows_partial_and_recipe_says_so(files):
    base, _ = render()
    image, result = render([{"path": files["partial"], "scale": 1.0, "strict": False}])
    record = result.recipe["loras"][0]
    assert record["partial"] is True and record["applied"]["applied"] == 4 and record["applied"]["lora_tensors"] == 8
    assert max_diff(image, base) > 0
    _, result = render([{"path": files["kohya_t5"], "scale": 1.0, "strict": False}])
    counts = result.recipe["loras"][0]["applied"]
    assert counts["text_encoder"] == 4 and counts["text_encoder_applied"] == 0 and counts["applied"] == 20
    _, result = render([{"path": files["kohya_te"], "scale": 1.0}])  # kohya CLIP parts apply
    counts = result.recipe["loras"][0]["applied"]
    assert counts["text_encoder"] == counts["text_encoder_applied"] == 4 and counts["applied"] == 24


def test_clip_text_encoder_lora_parts_are_applied_and_counted(tmp_path):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(3)
    tensors = lf.diffusers_tensors(5)
    tensors["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.randn(4, 32, generator=gen)
    tensors["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.randn(32, 4, generator=gen)
    save_file(tensors, str(tmp_path / "te.safetensors"))
    without = tmp_path / "no_te.safetensors"
    save_file(lf.diffusers_tensors(5), str(without))
    image, result = render([{"path": tmp_path / "te.safetensors", "scale": 1.0}])
    counts = result.recipe["loras"][0]["applied"]
    assert counts["text_encoder"] == counts["text_encoder_applied"] == 2
    assert max_diff(image, reference(tmp_path / "te.safetensors", 1.0)) <= 1
    assert max_diff(image, render([{"path": without, "scale": 1.0}])[0]) > 0


def test_pickle_loras_only_through_safe_loader(files, tmp_path):
    from safetensors.torch import load_file

    pt = tmp_path / "film.pt"
    torch.save(load_file(str(files["kohya"])), pt)
    image, result = render([{"path": pt, "scale": 1.0}])
    assert max_diff(image, render([{"path": files["kohya"], "scale": 1.0}])[0]) <= 1

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"lora_unet_x.lora_down.weight": Payload()}))
    with pytest.raises(LoraError, match="evil.ckpt"):
        render([{"path": evil, "scale": 1.0}])


def test_config_file_paths_are_relative_to_the_file(files, tmp_path, run_cli):
    import shutil

    folder = tmp_path / "project"
    (folder / "loras").mkdir(parents=True)
    shutil.copy(files["kohya"], folder / "loras" / "film.safetensors")
    (folder / "c.toml").write_text('[model]\nsource = "tiny"\ndevice = "cpu"\n[prompt]\nsubject = "x"\n'
                                   '[size]\nwidth = 64\nheight = 64\n[sampling]\nseed = 1\n'
                                   '[[lora]]\npath = "loras/film.safetensors"\nscale = 0.7\nname = "film"\n'
                                   '[lora_options]\nfuse = "unfused"\n')
    code, out, err = run_cli("generate", "--config", folder / "c.toml", "--dry-run", cwd=tmp_path)
    assert code == 0 and str(folder / "loras" / "film.safetensors") in out and "x0.7" in out
    code, out, err = run_cli("generate", "--config", folder / "c.toml", "--out", tmp_path / "o", "--no-progress",
                             cwd=tmp_path)
    assert code == 0, err
    from localflux.recipe import read_recipe

    record = read_recipe(out.strip())["loras"][0]
    assert record["name"] == "film" and record["fuse"] == "unfused" and record["scale"] == 0.7


def test_lora_flag_parsing():
    from localflux.commands.generate import parse_lora_option

    assert parse_lora_option("a.safetensors") == {"path": "a.safetensors", "scale": 1.0}
    assert parse_lora_option("d:/x/a.safetensors:-0.5") == {"path": "d:/x/a.safetensors", "scale": -0.5}
    assert parse_lora_option("dir:with:colons.safetensors") == {"path": "dir:with:colons.safetensors", "scale": 1.0}


def test_fp8_or_quantized_base_is_never_fused():
    from localflux.lora.state import resolve_fuse_mode

    model = pipeline.load(pipeline.plan(pipeline.coerce_config(dict(BASE))))
    assert resolve_fuse_mode("auto", model.pipe) == "fused"
    transformer = model.pipe.transformer
    transformer.hf_quantizer = object()  # what diffusers sets on a quantized model
    try:
        assert resolve_fuse_mode("auto", model.pipe) == "unfused"
        with pytest.raises(LoraError, match="quantized"):
            resolve_fuse_mode("fused", model.pipe)
    finally:
        del transformer.hf_quantizer


def test_qkv_fusion_only_after_merging(files):
    image, _ = render([{"path": files["kohya"], "scale": 1.0}], fuse="fused")
    MODELS.clear()
    try:
        model = pipeline.load(pipeline.plan(pipeline.coerce_config(dict(BASE))))
        model.pipe.transformer.fuse_qkv_projections()
        with pytest.raises(LoraError, match="QKV"):
            render([{"path": files["kohya"], "scale": 1.0}], fuse="unfused")
        fused_qkv, _ = render([{"path": files["kohya"], "scale": 1.0}], fuse="fused")
        assert max_diff(fused_qkv, image) <= 1
    finally:
        MODELS.clear()


# ---------------------------------------------------------------- inspect, convert, kohya export


def test_inspect_reports_format_rank_alpha_trigger(files, run_cli):
    code, out, err = run_cli("lora", "inspect", files["kohya"])
    assert code == 0, err
    assert "kohya (BFL keys)" in out and "rank:        4 x10" in out and "alpha:       2 x10" in out
    assert "ohwx film" in out and "sha256:" in out
    info = lora_inspect.inspect_lora(files["ai_toolkit"])
    assert info["format"] == "ai-toolkit" and info["trigger_words"] == ["ohwx anna"]
    assert info["training"]["training_info"] == {"step": 2000, "epoch": 10}
    assert "DoRA" in lora_inspect.inspect_lora(files["dora"])["refused"]


# "diffusers" and "diffusers_alpha" have single-block q/k/v/MLP parts: kohya fuses them into linear1 at
# the tiny width, which diffusers' converter cannot split (it assumes 3072) and localflux does
@pytest.mark.parametrize("name", ["kohya", "double_meta", "double_alpha", "diffusers", "diffusers_alpha"])
def test_convert_round_trips_render_the_same_image(files, tmp_path, run_cli, name):
    original, _ = render([{"path": files[name], "scale": 1.0}])
    kohya, diffusers, back = tmp_path / "k.safetensors", tmp_path / "d.safetensors", tmp_path / "kd.safetensors"
    for src, to, out in ((files[name], "kohya", kohya), (files[name], "diffusers", diffusers), (kohya, "diffusers", back)):
        code, _, err = run_cli("lora", "convert", src, out, "--to", to)
        assert code == 0, err
    for path in (kohya, diffusers, back):
        assert max_diff(render([{"path": path, "scale": 1.0}])[0], original) <= 1
    with safe_open(str(kohya), "pt") as handle:
        keys = list(handle.keys())
    modules = {k.split(".")[0] for k in keys}
    assert all(k.startswith(("lora_unet_double_blocks_0_", "lora_unet_single_blocks_0_")) for k in keys)
    assert all(f"{m}.alpha" in keys for m in modules)  # kohya and ComfyUI read these
    code, _, err = run_cli("lora", "convert", files[name], kohya, "--to", "kohya")
    assert code == 2 and "already exists" in err


def test_write_kohya_exports_trainer_state_dicts(tmp_path):
    """A PEFT state dict as a trainer has it (no prefix), with non-block layers and a global alpha."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from localflux.families.flux1.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("schnell")
    targets = ["x_embedder", "context_embedder", "norm_out.linear", "proj_out", "norm.linear",
               "attn.to_out.0", "ff.net.2", "norm1.linear", "time_text_embed.timestep_embedder.linear_1"]
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=6, target_modules=targets, init_lora_weights="gaussian"))
    gen = torch.Generator().manual_seed(8)
    state = {k: torch.randn(v.shape, generator=gen) * 0.3 for k, v in get_peft_model_state_dict(pipe.transformer).items()}
    assert any(k.startswith("single_transformer_blocks.0.proj_out") for k in state)
    diffusers_file = tmp_path / "peft.safetensors"
    from safetensors.torch import save_file

    save_file({f"transformer.{k}": v for k, v in state.items()}, str(diffusers_file),
              metadata={"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 6,
                                                             "transformer.target_modules": targets})})
    kohya = write_kohya(state, tmp_path / "export.safetensors", alpha=6, metadata={"trigger_word": "ohwx"})
    with safe_open(str(kohya), "pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
    assert {"lora_unet_final_layer_linear.alpha", "lora_unet_final_layer_adaLN_modulation_1.lora_up.weight",
            "lora_unet_single_blocks_0_linear2.lora_down.weight", "lora_unet_img_in.alpha"} <= keys
    assert meta["trigger_word"] == "ohwx" and meta["ss_network_dim"] == "4"
    original, _ = render([{"path": diffusers_file, "scale": 1.0}])
    exported, result = render([{"path": kohya, "scale": 1.0}])
    assert max_diff(original, exported) <= 1 and result.recipe["loras"][0]["partial"] is False


def test_write_kohya_refuses_unknown_layers(tmp_path):
    with pytest.raises(LoraError, match="not a FLUX.1 layer"):
        write_kohya({"unet.mid.lora_A.weight": torch.zeros(2, 4), "unet.mid.lora_B.weight": torch.zeros(4, 2)},
                    tmp_path / "x.safetensors")


def test_swapping_loras_on_a_compiled_model_does_not_recompile(tmp_path):
    """Compiled transformer + speed.lora_hotswap_rank: a new LoRA swaps into the adapters (diffusers hotswap)."""
    import torch
    from torch._dynamo.utils import counters

    from lora_files import write_diffusers
    from localflux import generate

    first = write_diffusers(tmp_path / "a.safetensors", seed=11, rank=4, single=False)
    second = write_diffusers(tmp_path / "b.safetensors", seed=12, rank=8, single=False)  # another rank: new shapes
    base = {"model": {"source": "tiny-dev"}, "prompt": {"subject": "a fox"}, "size": {"width": 64, "height": 64},
            "sampling": {"seed": 2, "steps": 2, "max_sequence_length": 16}}
    compiled = {**base, "speed": {"compile": "blocks", "compile_backend": "eager", "lora_hotswap_rank": 8}}
    torch._dynamo.reset()
    try:
        one = generate({**compiled, "lora": [{"path": str(first), "scale": 1.0}]}, save=False, progress=False)[0]
        graphs = counters["stats"]["unique_graphs"]
        two = generate({**compiled, "lora": [{"path": str(second), "scale": 1.0}]}, save=False, progress=False)[0]
        back = generate({**compiled, "lora": [{"path": str(first), "scale": 1.0}]}, save=False, progress=False)[0]
        assert counters["stats"]["unique_graphs"] == graphs  # swaps of rank 4 <-> 8 compiled nothing new
    finally:
        torch._dynamo.reset()
    assert np.array_equal(pixels(back.image), pixels(one.image))
    assert two.recipe["loras"][0]["sha256"] != one.recipe["loras"][0]["sha256"]
    eager = generate({**base, "lora": [{"path": str(second), "scale": 1.0}], "lora_options": {"fuse": "unfused"}},
                     save=False, progress=False)[0]
    assert np.abs(pixels(two.image) - pixels(eager.image)).max() <= 1  # the swapped-in LoRA is the one acting
    assert np.abs(pixels(two.image) - pixels(one.image)).max() > 1


def test_kohya_single_block_linear1_at_another_width_splits_like_diffusers(files):
    """kohya's fused linear1 (one shared down weight) at the tiny width: each part gets the scaled down
    weight and its own rows of the up weight, which is what diffusers does at FLUX.1's width."""
    tensors = load_file(str(files["single_block"]))
    down, up = tensors["lora_unet_single_blocks_0_linear1.lora_down.weight"], tensors["lora_unet_single_blocks_0_linear1.lora_up.weight"]
    scale = 2.0 / 4  # alpha / rank
    rows = torch.split(up, [lf.WIDTH] * 3 + [lf.MLP])
    expected = {}
    for part, b in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), rows):
        expected[f"transformer.single_transformer_blocks.0.{part}.lora_A.weight"] = down * scale
        expected[f"transformer.single_transformer_blocks.0.{part}.lora_B.weight"] = b.contiguous()
    image, result = render([{"path": files["single_block"], "scale": 0.8}], fuse="unfused")
    assert result.recipe["loras"][0]["applied"]["applied"] == 2 and not result.recipe["loras"][0]["partial"]
    peft = files["single_block"].parent / "single_as_peft.safetensors"
    save_file(expected, str(peft))
    assert max_diff(image, reference(peft, 0.8)) <= 1
    assert max_diff(image, render()[0]) > 1  # the LoRA acted


@pytest.mark.parametrize("name", ["dev-named-schnell", "schnell-named-dev"])
def test_lora_round_trips_on_models_of_other_shapes(shape_folders, tmp_path, run_cli, name):
    """Other widths and block counts: a LoRA on every FLUX layer kohya names, as diffusers/PEFT, as
    kohya (q/k/v and linear1 split sizes from the model) and back, renders what diffusers renders."""
    from diffusers import FluxPipeline

    from localflux.render import render as _render

    def sampler_render(pipe, request, seeds, **kw):
        return _render(pipe, FAMILIES.by_name("flux1"), request, seeds, **kw)
    from localflux.families.registry import FAMILIES

    folder = shape_folders[name]
    pipe = FluxPipeline.from_pretrained(folder)
    gen = torch.Generator().manual_seed(5)
    tensors = {}
    for module_name, module in pipe.transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and not module_name.startswith("time_text_embed.timestep"):
            tensors[f"transformer.{module_name}.lora_A.weight"] = torch.randn(3, module.in_features, generator=gen) * 0.2
            tensors[f"transformer.{module_name}.lora_B.weight"] = torch.randn(module.out_features, 3, generator=gen) * 0.2
    peft, kohya, back = tmp_path / "peft.safetensors", tmp_path / "kohya.safetensors", tmp_path / "back.safetensors"
    save_file(tensors, str(peft))
    for src, out, to in ((peft, kohya, "kohya"), (kohya, back, "diffusers")):
        code, _, err = run_cli("lora", "convert", src, out, "--to", to)
        assert code == 0, err
    code, out, err = run_cli("lora", "inspect", kohya)
    assert code == 0 and "kohya (BFL keys)" in out, err

    config = {"model": {"source": str(folder)}, "prompt": {"subject": "a red cat"}, "size": {"width": 48, "height": 48},
              "sampling": {"seed": 3, "steps": 2, "guidance": 3.5, "max_sequence_length": 16}}
    images = {}
    for path in (peft, kohya, back):
        result = pipeline.generate({**config, "lora": [{"path": str(path), "scale": 0.7}], "lora_options": {"fuse": "unfused"}},
                                   save=False, progress=False)[0]
        record = result.recipe["loras"][0]
        assert not record["partial"] and record["applied"]["applied"] == record["applied"]["lora_tensors"]
        images[path.name] = pixels(result.image)
    pipe.load_lora_weights(str(peft), adapter_name="ref")
    pipe.set_adapters(["ref"], [0.7])
    plan = pipeline.plan(pipeline.coerce_config(config))
    reference_image = pixels(sampler_render(pipe, plan.request, [3], progress=False)[0][0])
    for image in images.values():
        assert max_diff(image, reference_image) <= 1
    base = pixels(pipeline.generate(config, save=False, progress=False)[0].image)
    assert max_diff(base, reference_image) > 1
