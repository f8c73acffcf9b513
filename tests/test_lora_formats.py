"""LoRA files laid out as other tools write them load at the strength they mean (checked against a
hand-computed reference, not against diffusers), and unsupported kinds fail with one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import lora_reference as ref
from localflux.lora import inspect as lora_inspect

W, MLP = ref.W, ref.MLP
KOHYA_META = {"ss_network_module": "networks.lora_flux", "ss_network_dim": "4", "ss_network_alpha": "1.0",
              "ss_base_model_version": "flux1", "modelspec.architecture": "flux-1-dev/lora",
              "modelspec.sai_model_spec": "1.0.0", "modelspec.title": "film"}
# diffusers FluxTransformer2DModel layer -> (in, out) in the tiny model
DIFFUSERS_SHAPES = {
    "transformer_blocks.0.attn.to_q": (W, W), "transformer_blocks.0.attn.to_k": (W, W),
    "transformer_blocks.0.attn.to_v": (W, W), "transformer_blocks.0.attn.to_out.0": (W, W),
    "transformer_blocks.0.attn.add_q_proj": (W, W), "transformer_blocks.0.attn.to_add_out": (W, W),
    "transformer_blocks.0.ff.net.0.proj": (W, MLP), "transformer_blocks.0.ff_context.net.2": (MLP, W),
    "transformer_blocks.0.norm1.linear": (W, 6 * W),
    "single_transformer_blocks.0.attn.to_q": (W, W), "single_transformer_blocks.0.attn.to_v": (W, W),
    "single_transformer_blocks.0.proj_mlp": (W, MLP), "single_transformer_blocks.0.proj_out": (W + MLP, W),
    "single_transformer_blocks.0.norm.linear": (W, 3 * W),
    "x_embedder": (64, W), "context_embedder": (32, W), "proj_out": (W, 64), "norm_out.linear": (W, 2 * W),
}


def _randn(gen, *shape, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen) * 0.3).to(dtype)


def bfl_lora(layout, names=tuple(ref.BFL_SHAPES), rank=lambda i: 4, alpha=lambda i: 1.0 + i, dtype=torch.float32,
             seed=0):
    """(tensors, {BFL layer: delta}) in one of the BFL-key layouts trainers and ComfyUI write."""
    gen = torch.Generator().manual_seed(seed)
    key = {"kohya": lambda n: ("lora_unet_" + n.replace(".", "_"), "lora_down", "lora_up"),
           "comfy_AB": lambda n: ("diffusion_model." + n, "lora_A", "lora_B"),
           "comfy_down": lambda n: ("diffusion_model." + n, "lora_down", "lora_up"),
           "fal": lambda n: ("base_model.model." + n, "lora_A", "lora_B"),
           "bare": lambda n: (n, "lora_A", "lora_B"),  # BFL's own lora.py, OneTrainer's ORIGINAL output
           "transformer_bfl": lambda n: ("transformer." + n, "lora_A", "lora_B"),
           "model_diffusion_model": lambda n: ("model.diffusion_model." + n, "lora_A", "lora_B"),
           "kohya_AB": lambda n: ("lora_unet_" + n.replace(".", "_"), "lora_A", "lora_B")}[layout]
    tensors, deltas = {}, {}
    for i, name in enumerate(names):
        fan_in, fan_out = ref.BFL_SHAPES[name]
        module, down_name, up_name = key(name)
        down, up = _randn(gen, rank(i), fan_in, dtype=dtype), _randn(gen, fan_out, rank(i), dtype=dtype)
        tensors[f"{module}.{down_name}.weight"], tensors[f"{module}.{up_name}.weight"] = down, up
        a = alpha(i)
        if a is not None:
            tensors[f"{module}.alpha"] = torch.tensor(a, dtype=dtype)  # kohya saves alphas in the save dtype
            a = float(tensors[f"{module}.alpha"])
        deltas[name] = ref.lora_delta(down, up, a)
    return tensors, deltas


def diffusers_lora(prefix="transformer.", rank=lambda i: 4, alpha=None, dtype=torch.float32, seed=1):
    """(tensors, {diffusers layer: delta}) in diffusers/PEFT keys; ``alpha``: per-module ``.alpha`` tensors."""
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for i, (module, (fan_in, fan_out)) in enumerate(DIFFUSERS_SHAPES.items()):
        down, up = _randn(gen, rank(i), fan_in, dtype=dtype), _randn(gen, fan_out, rank(i), dtype=dtype)
        tensors[f"{prefix}{module}.lora_A.weight"], tensors[f"{prefix}{module}.lora_B.weight"] = down, up
        a = None if alpha is None else alpha(i)
        if a is not None:
            tensors[f"{prefix}{module}.alpha"] = torch.tensor(a, dtype=dtype)
        deltas[f"transformer.{module}"] = ref.lora_delta(down, up, a)
    return tensors, deltas


def transformer(deltas: dict) -> dict:
    return {f"transformer.{k}": v for k, v in ref.diffusers_deltas(deltas).items()}


def check(tmp_path, tensors, expected, metadata=None, scale=0.7, name="x.safetensors"):
    path = tmp_path / name
    save_file(tensors, str(path), metadata=metadata)
    applied, got = ref.merged_deltas(path, scale)
    ref.assert_deltas(got, {k: v * scale for k, v in expected.items()})
    assert applied.complete and applied.applied == applied.lora_tensors
    return applied


# ---------------------------------------------------------------- BFL-key layouts


@pytest.mark.parametrize("layout", ["kohya", "comfy_AB", "comfy_down"])
def test_bfl_key_layouts_merge_the_reference_delta_in_every_layer(tmp_path, layout):
    """Every FLUX layer kohya and ComfyUI name (single-block linear1, img_in … final_layer included), each with
    its own rank and alpha: diffusers 0.42 ignored final_layer alphas, refused linear1 on a non-3072 model and
    did not read ComfyUI's lora_A/lora_B keys at all."""
    tensors, deltas = bfl_lora(layout, rank=lambda i: 2 + i % 3)
    applied = check(tmp_path, tensors, transformer(deltas), metadata=KOHYA_META)
    assert applied.alphas_applied == applied.alphas == len(ref.BFL_SHAPES)


def test_kohya_bf16_file_with_bf16_alphas(tmp_path):
    """kohya saves weights and alphas in bf16; alpha 3 over rank 4 must still be 0.75 exactly, not bf16-rounded."""
    names = ["double_blocks.0.img_attn.qkv", "single_blocks.0.linear1", "double_blocks.0.img_mlp.0"]
    tensors, deltas = bfl_lora("kohya", names, rank=lambda i: 4 * (i + 1), alpha=lambda i: 3.0, dtype=torch.bfloat16)
    check(tmp_path, tensors, transformer(deltas), metadata=KOHYA_META)


def test_kohya_split_qkv_layout_alpha_is_over_the_stacked_rank(tmp_path):
    """kohya's split_qkv (and localflux's export) stack q/k/v (+mlp) LoRAs: down (3r, in), block-diagonal up;
    kohya, ComfyUI and diffusers all scale that module by alpha / 3r."""
    gen = torch.Generator().manual_seed(5)
    r, tensors, deltas = 2, {}, {}
    for name, parts in (("double_blocks.0.img_attn.qkv", [W] * 3), ("single_blocks.0.linear1", [W] * 3 + [MLP])):
        down = _randn(gen, r * len(parts), W)
        up = torch.block_diag(*[_randn(gen, rows, r) for rows in parts])
        key = "lora_unet_" + name.replace(".", "_")
        tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(4.0)})
        deltas[name] = ref.lora_delta(down, up, 4.0)
    check(tmp_path, tensors, transformer(deltas), metadata=KOHYA_META)


def test_fal_base_model_bfl_keys_touching_some_blocks(tmp_path):
    """fal's trainers write BFL keys under base_model.model. (no alphas); diffusers' converter for them
    needed all 19 + 38 blocks of a full-size model."""
    names = ["double_blocks.0.img_attn.qkv", "double_blocks.0.txt_mlp.2", "single_blocks.0.linear1",
             "single_blocks.0.linear2"]
    tensors, deltas = bfl_lora("fal", names, alpha=lambda i: None)
    applied = check(tmp_path, tensors, transformer(deltas))
    assert applied.format.startswith("fal")


def test_kohya_clip_text_encoder_parts_are_applied(tmp_path):
    """lora_te1_ (kohya) and text_encoders.clip_l (ComfyUI) CLIP layers: q/k/v/out and the MLP all apply to CLIP;
    diffusers 0.42 loaded only q/k/v and dropped out_proj and the MLP."""
    gen = torch.Generator().manual_seed(7)
    tensors, deltas = bfl_lora("kohya", ["double_blocks.0.img_attn.proj"])
    expected = transformer(deltas)
    shapes = {"self_attn.q_proj": (W, W), "self_attn.k_proj": (W, W), "self_attn.v_proj": (W, W),
              "self_attn.out_proj": (W, W), "mlp.fc1": (W, 37), "mlp.fc2": (37, W)}
    for i, (module, (fan_in, fan_out)) in enumerate(shapes.items()):
        down, up = _randn(gen, 4, fan_in), _randn(gen, fan_out, 4)
        key = ("lora_te1_text_model_encoder_layers_0_" + module.replace(".", "_") if i % 2 == 0
               else f"text_encoders.clip_l.transformer.text_model.encoder.layers.0.{module}")
        tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(2.0)})
        expected[f"text_encoder.encoder.layers.0.{module}"] = ref.lora_delta(down, up, 2.0)
    applied = check(tmp_path, tensors, expected, metadata=KOHYA_META)
    assert applied.text_encoder == applied.text_encoder_applied == 12


# ---------------------------------------------------------------- diffusers/PEFT layouts


@pytest.mark.parametrize("prefix", ["transformer.", "base_model.model.", ""])
def test_peft_layouts_with_per_module_rank_and_alpha(tmp_path, prefix):
    """ai-toolkit / diffusers (transformer.), SimpleTuner/PEFT (base_model.model.), bare keys; each module its own
    rank and .alpha. diffusers matched alphas by name suffix (proj_out's alpha also hit the single block's
    proj_out) and read base_model.model. files as fal Kontext files."""
    tensors, expected = diffusers_lora(prefix, rank=lambda i: 2 + i % 4, alpha=lambda i: 1.0 + i)
    check(tmp_path, tensors, expected)


def test_ai_toolkit_bf16_without_alphas_and_peft_metadata_alpha(tmp_path):
    tensors, expected = diffusers_lora(dtype=torch.bfloat16)
    meta = {"format": "pt", "software": json.dumps({"name": "ai-toolkit"}), "ss_base_model_version": "flux1"}
    assert check(tmp_path, tensors, expected, metadata=meta, name="ait.safetensors").format == "ai-toolkit"
    tensors, expected = diffusers_lora(seed=3)
    peft = {"transformer.r": 4, "transformer.lora_alpha": 8, "transformer.target_modules": sorted(DIFFUSERS_SHAPES)}
    check(tmp_path, tensors, {k: v * 2 for k, v in expected.items()},
          metadata={"format": "pt", "lora_adapter_metadata": json.dumps(peft)}, name="peft.safetensors")


# ---------------------------------------------------------------- refused and reported


def _generate(run_cli, tmp_path, lora):
    return run_cli("generate", "--model", "tiny", "--device", "cpu", "--prompt", "x", "--width", 64, "--height", 64,
                   "--seed", 1, "--lora", lora, "--out", tmp_path / "out", "--no-progress")


def test_t5_parts_are_reported_not_silently_dropped(tmp_path, run_cli):
    tensors, _ = bfl_lora("kohya", ["double_blocks.0.img_attn.proj"])
    gen = torch.Generator().manual_seed(2)
    for key in ("lora_te3_encoder_block_0_layer_0_SelfAttention_q", "lora_te2_encoder_block_0_layer_1_DenseReluDense_wo"):
        tensors.update({f"{key}.lora_down.weight": _randn(gen, 4, 32), f"{key}.lora_up.weight": _randn(gen, 32, 4)})
    save_file(tensors, str(tmp_path / "t5.safetensors"))
    code, out, err = _generate(run_cli, tmp_path, tmp_path / "t5.safetensors")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "t5.safetensors" in err and "4 T5 text-encoder tensors" in err and "strict = false" in err
    applied, got = ref.merged_deltas(tmp_path / "t5.safetensors", strict=False)
    assert applied.applied == 2 and applied.lora_tensors == 6 and not applied.complete
    assert list(got) == ["transformer.transformer_blocks.0.attn.to_out.0"]
    info = lora_inspect.inspect_lora(tmp_path / "t5.safetensors")
    assert info["components"] == {"transformer": 1, "clip": 0, "t5": 2}


@pytest.mark.parametrize("kind, keys", [
    ("LoKr", {"lora_unet_double_blocks_0_img_attn_proj.lokr_w1": (4, 4), "lora_unet_double_blocks_0_img_attn_proj.lokr_w2": (8, 8)}),
    ("LoHa", {"lora_unet_double_blocks_0_img_attn_proj.hada_w1_a": (W, 4), "lora_unet_double_blocks_0_img_attn_proj.hada_w1_b": (4, W)}),
    ("DoRA", {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (4, W),
              "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": (W, 4),
              "transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector": (W,)}),
    ("full-rank difference", {"diffusion_model.double_blocks.0.img_attn.proj.diff": (W, W),
                              "diffusion_model.double_blocks.0.img_attn.proj.diff_b": (W,)}),
])
def test_unsupported_kinds_one_clear_line_exit_2(tmp_path, run_cli, kind, keys):
    gen = torch.Generator().manual_seed(4)
    path = tmp_path / "odd.safetensors"
    save_file({k: _randn(gen, *shape) for k, shape in keys.items()}, str(path))
    code, out, err = _generate(run_cli, tmp_path, path)
    assert code == 2 and out == "" and "Traceback" not in err
    assert kind in err and "odd.safetensors" in err and len(err.strip().splitlines()) == 1


def test_all_zero_diff_tensors_are_not_refused(tmp_path):
    """ComfyUI's extract writes zero .diff_b tensors beside the LoRA: they change nothing."""
    tensors, deltas = bfl_lora("comfy_down", ["double_blocks.0.img_attn.proj"])
    tensors["diffusion_model.double_blocks.0.img_attn.proj.diff_b"] = torch.zeros(W)
    path = tmp_path / "z.safetensors"
    save_file(tensors, str(path))
    applied, got = ref.merged_deltas(path)
    ref.assert_deltas(got, transformer(deltas))


def test_inspect_counts_a_kohya_file_with_clip_parts(tmp_path):
    tensors, _ = bfl_lora("kohya", ["double_blocks.0.img_attn.qkv", "single_blocks.0.linear1", "img_in"],
                          rank=lambda i: 4, alpha=lambda i: 2.0)
    gen = torch.Generator().manual_seed(9)
    key = "lora_te1_text_model_encoder_layers_0_mlp_fc1"
    tensors.update({f"{key}.lora_down.weight": _randn(gen, 8, W), f"{key}.lora_up.weight": _randn(gen, 37, 8),
                    f"{key}.alpha": torch.tensor(8.0)})
    save_file(tensors, str(tmp_path / "k.safetensors"), metadata=KOHYA_META)
    info = lora_inspect.inspect_lora(tmp_path / "k.safetensors")
    assert info["format"] == "kohya (BFL keys)" and info["lora_tensors"] == 8 and info["alphas"] == 4
    assert info["text_encoder_tensors"] == 2 and info["components"] == {"transformer": 3, "clip": 1, "t5": 0}
    assert info["rank"] == "4 x3, 8 x1" and info["alpha"] == "2 x3, 8 x1"


# ---------------------------------------------------------------- kohya export


def _kohya_file_deltas(path) -> dict:
    """{BFL layer: delta} from a kohya file, read the way ComfyUI and sd-scripts merge it (alpha / down rows)."""
    from safetensors import safe_open

    names = {"lora_unet_" + n.replace(".", "_"): n for n in ref.BFL_SHAPES}
    with safe_open(str(path), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    deltas = {}
    for key in [k for k in tensors if k.endswith(".lora_down.weight")]:
        module = key.removesuffix(".lora_down.weight")
        assert f"{module}.alpha" in tensors  # ComfyUI and kohya read these, not the metadata
        deltas[names[module]] = ref.lora_delta(tensors[key], tensors[f"{module}.lora_up.weight"],
                                               tensors[f"{module}.alpha"])
    return deltas


def test_write_kohya_matches_an_independent_bfl_reference(tmp_path):
    """The kohya copy changes every BFL layer by exactly what the PEFT LoRA changes its diffusers layers:
    fused q|k|v and q|k|v|mlp (parts missing, ranks and alphas differing), globals, final layer."""
    from safetensors import safe_open

    from localflux.lora.kohya import write_kohya

    gen = torch.Generator().manual_seed(11)
    shapes = dict(DIFFUSERS_SHAPES, **{"transformer_blocks.0.attn.add_k_proj": (W, W),
                                       "transformer_blocks.0.attn.add_v_proj": (W, W),
                                       "single_transformer_blocks.0.attn.to_k": (W, W),
                                       "time_text_embed.guidance_embedder.linear_2": (W, W)})
    state, alphas, expected = {}, {}, {}
    for i, (module, (fan_in, fan_out)) in enumerate(shapes.items()):
        rank = 2 + i % 3
        down, up = _randn(gen, rank, fan_in), _randn(gen, fan_out, rank)
        state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"] = down, up
        alphas[module] = 1.0 + i % 4
        expected[module] = ref.lora_delta(down, up, alphas[module])
    path = write_kohya(state, tmp_path / "anna.kohya.safetensors", alpha=alphas, metadata={"trigger_word": "zx"})
    got = ref.diffusers_deltas(_kohya_file_deltas(path))
    assert sorted(got) == sorted(expected)
    for module, want in expected.items():
        assert torch.allclose(got[module], want, rtol=1e-5, atol=1e-6), module
    with safe_open(str(path), "pt") as handle:
        meta, keys = handle.metadata(), set(handle.keys())
        qkv = handle.get_tensor("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight")
        linear1 = handle.get_tensor("lora_unet_single_blocks_0_linear1.lora_down.weight")
    assert qkv.shape == (3 * W, 3 * 4) and linear1.shape == (4 * 4, W)  # stacked, padded to the largest part rank
    half = write_kohya({k: v.to(torch.bfloat16) for k, v in state.items()}, tmp_path / "bf16.safetensors", alpha=alphas)
    with safe_open(str(half), "pt") as handle:  # kohya files keep one weight dtype (the trainer's save precision)
        assert {handle.get_tensor(k).dtype for k in handle.keys() if not k.endswith(".alpha")} == {torch.bfloat16}
    assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
               for k in keys)
    assert meta["ss_network_module"] == "networks.lora_flux" and meta["ss_base_model_version"] == "flux1"
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_network_alpha"] == "Dynamic"
    assert meta["trigger_word"] == "zx" and meta["modelspec.title"] == "anna"
    # and localflux itself loads it to the same deltas (single blocks included, on the tiny model)
    applied, merged = ref.merged_deltas(path)
    ref.assert_deltas(merged, {f"transformer.{k}": v for k, v in expected.items()}, rtol=1e-4)


def test_convert_round_trip_with_single_blocks_and_clip_renders_the_same(tmp_path, run_cli):
    from test_lora import max_diff, render

    tensors, _ = diffusers_lora(rank=lambda i: 2 + i % 3, alpha=lambda i: 1.0 + i % 3, seed=12)
    gen = torch.Generator().manual_seed(13)
    tensors["text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight"] = _randn(gen, 4, W)
    tensors["text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight"] = _randn(gen, 37, 4)
    source = tmp_path / "src.safetensors"
    save_file(tensors, str(source))
    kohya, back = tmp_path / "k.safetensors", tmp_path / "kd.safetensors"
    assert run_cli("lora", "convert", source, kohya, "--to", "kohya")[0] == 0
    assert run_cli("lora", "convert", kohya, back, "--to", "diffusers")[0] == 0
    original, result = render([{"path": source, "scale": 1.0}])
    assert result.recipe["loras"][0]["applied"]["text_encoder_applied"] == 2
    for path in (kohya, back):
        image, result = render([{"path": path, "scale": 1.0}])
        assert max_diff(image, original) <= 1 and result.recipe["loras"][0]["partial"] is False
    _, source_deltas = ref.merged_deltas(source)
    _, kohya_deltas = ref.merged_deltas(kohya)
    ref.assert_deltas(kohya_deltas, source_deltas, rtol=1e-4)
