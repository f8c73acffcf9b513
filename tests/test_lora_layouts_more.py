"""More layouts other tools write (OneTrainer, the "mixture" layout, SimpleTuner, BFL's own and control LoRAs,
XLabs, LyCORIS, prefix and dtype variants): each loads at the strength it means (checked against the hand-written
reference in ``lora_reference.py``) or is refused with one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import lora_reference as ref
from localflux.lora import inspect as lora_inspect
from test_lora_formats import (DIFFUSERS_SHAPES, KOHYA_META, _generate, _randn, bfl_lora, check, diffusers_lora,
                               transformer)

W, MLP = ref.W, ref.MLP
# the non-block layers too (the mixture converter and OneTrainer name them in diffusers terms)
ALL_DIFFUSERS_SHAPES = dict(DIFFUSERS_SHAPES, **{
    "time_text_embed.timestep_embedder.linear_1": (256, W), "time_text_embed.timestep_embedder.linear_2": (W, W),
    "time_text_embed.guidance_embedder.linear_1": (256, W), "time_text_embed.text_embedder.linear_2": (W, W),
    "transformer_blocks.0.attn.add_k_proj": (W, W), "transformer_blocks.0.ff.net.2": (MLP, W),
    "transformer_blocks.0.ff_context.net.0.proj": (W, MLP), "transformer_blocks.0.norm1_context.linear": (W, 6 * W),
    "single_transformer_blocks.0.attn.to_k": (W, W),
})
OT_META = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "Flux.1-dev/lora",
           "modelspec.implementation": "https://github.com/black-forest-labs/flux", "modelspec.title": "anna",
           "ot_branch": "master", "ot_revision": "0123abc"}


def mixture_lora(alpha=lambda i: 1.0 + i % 5, rank=lambda i: 2 + i % 3, dtype=torch.bfloat16, seed=20):
    """OneTrainer's LEGACY_LORA output (diffusers' "mixture" layout): ``lora_transformer_`` + the diffusers module
    path with dots flattened, kohya ``lora_down/lora_up`` and an ``.alpha`` per module, in the save dtype."""
    gen = torch.Generator().manual_seed(seed)
    tensors, expected = {}, {}
    for i, (module, (fan_in, fan_out)) in enumerate(ALL_DIFFUSERS_SHAPES.items()):
        key = "lora_transformer_" + module.replace(".", "_")
        down, up = _randn(gen, rank(i), fan_in, dtype=dtype), _randn(gen, fan_out, rank(i), dtype=dtype)
        tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
        a = alpha(i)
        if a is not None:
            tensors[f"{key}.alpha"] = torch.tensor(a, dtype=dtype)
        expected[f"transformer.{module}"] = ref.lora_delta(down, up, a)
    return tensors, expected


# ---------------------------------------------------------------- OneTrainer and the mixture layout


def test_onetrainer_legacy_lora_every_module_kind(tmp_path):
    """diffusers' mixture converter maps only attention layers; ff, norm1, proj_mlp and proj_out of a block all
    collapsed onto the block itself and were lost (and an alpha-less module raised a KeyError)."""
    tensors, expected = mixture_lora()
    applied = check(tmp_path, tensors, expected, metadata=OT_META)
    assert applied.alphas_applied == applied.alphas == len(ALL_DIFFUSERS_SHAPES)
    assert applied.format.startswith("OneTrainer")


def test_mixture_layout_without_alphas_and_with_clip_and_kohya_keys(tmp_path):
    """Mixture files without .alpha tensors mean strength 1; lora_te1_ CLIP keys and lora_unet_ BFL keys beside
    them (diffusers dropped the latter silently) apply too."""
    tensors, expected = mixture_lora(alpha=lambda i: None, dtype=torch.float32)
    more, deltas = bfl_lora("kohya", ["vector_in.in_layer", "guidance_in.out_layer"], seed=21)  # layers not above
    tensors.update(more)
    gen = torch.Generator().manual_seed(22)
    down, up = _randn(gen, 4, W), _randn(gen, W, 4)
    key = "lora_te1_text_model_encoder_layers_0_self_attn_out_proj"
    tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(2.0)})
    expected.update(transformer(deltas))
    expected["text_encoder.encoder.layers.0.self_attn.out_proj"] = ref.lora_delta(down, up, 2.0)
    check(tmp_path, tensors, expected)


def test_onetrainer_t5_parts_are_refused_not_dropped(tmp_path, run_cli):
    """OneTrainer names FLUX's T5 lora_te2_ (diffusers has no T5 LoRA loader)."""
    tensors, _ = mixture_lora()
    tensors["lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight"] = torch.ones(4, 32)
    tensors["lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight"] = torch.ones(32, 4)
    save_file(tensors, str(tmp_path / "ot.safetensors"))
    code, out, err = _generate(run_cli, tmp_path, tmp_path / "ot.safetensors")
    assert code == 2 and out == "" and "2 T5 text-encoder tensors" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("key", ["lora_transformer_transformer_blocks_0_attn_to_q.dora_scale",
                                 "transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector.weight"])
def test_onetrainer_dora_is_refused(tmp_path, run_cli, key):
    """OneTrainer's DoRA: dora_scale (legacy) or lora_magnitude_vector.weight (its diffusers output)."""
    tensors, _ = mixture_lora()
    tensors[key] = torch.ones(1, W)
    save_file(tensors, str(tmp_path / "dora.safetensors"))
    code, out, err = _generate(run_cli, tmp_path, tmp_path / "dora.safetensors")
    assert code == 2 and out == "" and "DoRA" in err and len(err.strip().splitlines()) == 1


def test_diffusers_names_with_kohya_sides_and_alphas(tmp_path):
    """transformer.<module>.lora_down/lora_up + .alpha (the "diffusers (kohya names)" layout): the alphas reached the
    loaded dict unfolded and the applied-count check crashed with an IndexError."""
    tensors, expected = diffusers_lora(rank=lambda i: 2 + i % 3, alpha=lambda i: 1.0 + i, seed=28)
    tensors = {k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up."): v for k, v in tensors.items()}
    check(tmp_path, tensors, expected)


def test_simpletuner_peft_file_with_lora_adapter_metadata(tmp_path):
    """SimpleTuner saves through diffusers' save_lora_weights: transformer. keys, the LoraConfig in the metadata."""
    gen = torch.Generator().manual_seed(23)
    tensors, expected = {}, {}
    for module, (fan_in, fan_out) in ALL_DIFFUSERS_SHAPES.items():
        down, up = _randn(gen, 8, fan_in, dtype=torch.bfloat16), _randn(gen, fan_out, 8, dtype=torch.bfloat16)
        tensors[f"transformer.{module}.lora_A.weight"], tensors[f"transformer.{module}.lora_B.weight"] = down, up
        expected[f"transformer.{module}"] = ref.lora_delta(down, up, 16.0)
    config = {"transformer.r": 8, "transformer.lora_alpha": 16, "transformer.use_dora": False,
              "transformer.target_modules": sorted(ALL_DIFFUSERS_SHAPES), "transformer.lora_bias": False}
    check(tmp_path, tensors, expected, metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config)})


# ---------------------------------------------------------------- LoRA bias


def test_peft_lora_bias_changes_the_bias_at_the_files_strength(tmp_path):
    """PEFT lora_bias=True: lora_B has a bias; merged, the layer's bias moves by scale * alpha / rank * bias."""
    gen = torch.Generator().manual_seed(24)
    tensors, expected = {}, {}
    for module, rank, alpha in (("transformer_blocks.0.attn.to_q", 4, 2.0), ("x_embedder", 2, 8.0)):
        fan_in, fan_out = ALL_DIFFUSERS_SHAPES[module]
        down, up, bias = _randn(gen, rank, fan_in), _randn(gen, fan_out, rank), _randn(gen, fan_out)
        prefix = f"transformer.{module}"
        tensors.update({f"{prefix}.lora_A.weight": down, f"{prefix}.lora_B.weight": up, f"{prefix}.lora_B.bias": bias,
                        f"{prefix}.alpha": torch.tensor(alpha)})
        expected[prefix] = ref.lora_delta(down, up, alpha)
        expected[f"{prefix}.bias"] = bias.double() * (alpha / rank)
    applied = check(tmp_path, tensors, expected)
    assert applied.lora_tensors == 6


# ---------------------------------------------------------------- BFL's own format and control LoRAs


@pytest.mark.parametrize("layout", ["bare", "transformer_bfl", "model_diffusion_model", "kohya_AB"])
def test_bfl_key_prefix_variants(tmp_path, layout):
    """BFL's own lora.py (bare keys, lora_A/lora_B, also OneTrainer's ORIGINAL output with .alpha), BFL keys under
    transformer. or model.diffusion_model., and lora_unet_ keys stored with lora_A/lora_B."""
    tensors, deltas = bfl_lora(layout, rank=lambda i: 2 + i % 3)
    check(tmp_path, tensors, transformer(deltas))


def _control_lora(width_in=2 * 64, full_weights=True):
    tensors, _ = bfl_lora("bare", ["double_blocks.0.img_attn.qkv", "single_blocks.0.linear2"], alpha=lambda i: None)
    gen = torch.Generator().manual_seed(25)
    tensors["img_in.lora_A.weight"], tensors["img_in.lora_B.weight"] = _randn(gen, 4, width_in), _randn(gen, W, 4)
    if full_weights:  # the FLUX.1 Canny/Depth LoRAs carry the new img_in bias and the q/k norm scales in full
        tensors["img_in.lora_B.bias"] = _randn(gen, W)
        tensors["double_blocks.0.img_attn.norm.query_norm.scale"] = torch.ones(16)
        tensors["double_blocks.0.img_attn.norm.key_norm.scale"] = torch.ones(16)
    return tensors


@pytest.mark.parametrize("width_in, full", [(128, True), (128, False), (64, True)])
def test_bfl_control_loras_are_refused_with_one_line(tmp_path, run_cli, width_in, full):
    path = tmp_path / "canny.safetensors"
    save_file(_control_lora(width_in, full), str(path))
    code, out, err = _generate(run_cli, tmp_path, path)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "canny.safetensors" in err and "control" in err
    if not full:  # only the model tells that img_in is wider than it should be
        return
    info = lora_inspect.inspect_lora(path)
    assert info["format"].startswith("BFL control") and "control" in info["refused"]
    code, _, err = run_cli("lora", "convert", path, tmp_path / "c.safetensors", "--to", "kohya")
    assert code == 2 and "control" in err and not (tmp_path / "c.safetensors").exists()


def test_a_bfl_model_checkpoint_is_not_called_a_control_lora(tmp_path):
    """Full BFL weights without any LoRA pair are a model file, not a control LoRA."""
    from localflux.errors import LoraError

    path = tmp_path / "flux1-dev.safetensors"
    save_file({"img_in.weight": torch.ones(W, 64), "double_blocks.0.img_attn.norm.query_norm.scale": torch.ones(16)},
              str(path))
    with pytest.raises(LoraError, match="not a LoRA file"):
        lora_inspect.inspect_lora(path)


# ---------------------------------------------------------------- XLabs


@pytest.mark.parametrize("rank, prefix", [(4, ""), (16, "diffusion_model.")])
def test_xlabs_double_and_single_block_processors(tmp_path, rank, prefix):
    """x-flux's LoRA processors: qkv_lora1/proj_lora1 on the image stream, qkv_lora2/proj_lora2 on the text stream,
    qkv_lora/proj_lora in single blocks (q|k|v of linear1 only, all of linear2); no alphas (strength 1)."""
    gen = torch.Generator().manual_seed(26)
    layers = {"double_blocks.0.processor.qkv_lora1": "double_blocks.0.img_attn.qkv",
              "double_blocks.0.processor.qkv_lora2": "double_blocks.0.txt_attn.qkv",
              "double_blocks.0.processor.proj_lora1": "double_blocks.0.img_attn.proj",
              "double_blocks.0.processor.proj_lora2": "double_blocks.0.txt_attn.proj",
              "single_blocks.0.processor.qkv_lora": "single_blocks.0.linear1",
              "single_blocks.0.processor.proj_lora": "single_blocks.0.linear2"}
    tensors, deltas = {}, {}
    for key, bfl in layers.items():
        fan_in, fan_out = ref.BFL_SHAPES[bfl]
        fan_out = 3 * W if bfl.endswith("linear1") else fan_out
        down, up = _randn(gen, rank, fan_in, dtype=torch.bfloat16), _randn(gen, fan_out, rank, dtype=torch.bfloat16)
        tensors[f"{prefix}{key}.down.weight"], tensors[f"{prefix}{key}.up.weight"] = down, up
        delta = ref.lora_delta(down, up)
        if bfl.endswith("linear1"):  # no LoRA on the MLP input
            delta = torch.cat([delta, torch.zeros(MLP, W, dtype=delta.dtype)])
        deltas[bfl] = delta
    applied = check(tmp_path, tensors, transformer(deltas))
    assert applied.format == "xlabs"
    info = lora_inspect.inspect_lora(tmp_path / "x.safetensors")
    assert info["rank"] == f"{rank} x6" and info["lora_tensors"] == 12 and info["components"]["transformer"] == 6


# ---------------------------------------------------------------- LyCORIS and other kinds


@pytest.mark.parametrize("kind, keys", [
    ("full-rank difference", {"lora_unet_double_blocks_0_img_attn_proj.diff": (W, W),
                              "lora_unet_double_blocks_0_img_attn_proj.diff_b": (W,)}),
    ("LoKr", {"lora_unet_double_blocks_0_img_attn_proj.lokr_w1": (4, 4),
              "lora_unet_double_blocks_0_img_attn_proj.lokr_w2_a": (8, 2),
              "lora_unet_double_blocks_0_img_attn_proj.lokr_w2_b": (2, 8),
              "lora_unet_double_blocks_0_img_attn_proj.alpha": ()}),
    ("LoHa", {"lora_unet_double_blocks_0_img_attn_proj.hada_w2_a": (W, 4),
              "lora_unet_double_blocks_0_img_attn_proj.hada_w2_b": (4, W)}),
    ("IA3", {"lora_unet_double_blocks_0_img_mlp_2.weight": (W,), "lora_unet_double_blocks_0_img_mlp_2.on_input": ()}),
    ("IA3", {"transformer.transformer_blocks.0.ff.net.2.ia3_l": (1, MLP)}),
    ("GLoRA", {"lora_unet_double_blocks_0_img_attn_proj.a1.weight": (4, W),
               "lora_unet_double_blocks_0_img_attn_proj.a2.weight": (W, 4),
               "lora_unet_double_blocks_0_img_attn_proj.b1.weight": (4, W),
               "lora_unet_double_blocks_0_img_attn_proj.b2.weight": (W, 4)}),
])
def test_lycoris_kinds_are_refused_naming_the_kind(tmp_path, run_cli, kind, keys):
    gen = torch.Generator().manual_seed(27)
    path = tmp_path / "lyco.safetensors"
    save_file({k: _randn(gen, *shape) if shape else torch.tensor(1.0) for k, shape in keys.items()}, str(path))
    code, out, err = _generate(run_cli, tmp_path, path)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert kind in err and "lyco.safetensors" in err
    assert kind in lora_inspect.inspect_lora(path)["refused"]


# ---------------------------------------------------------------- dtype and metadata variants


def test_fp8_file_is_upcast_and_round_trips(tmp_path, run_cli):
    """Some extractors save LoRAs in float8_e4m3fn; the values are read exactly (upcast) and a converted copy
    keeps them (fp8 cannot hold the folded alphas, so it is written in bfloat16)."""
    from safetensors import safe_open

    names = ["double_blocks.0.img_attn.qkv", "single_blocks.0.linear1", "final_layer.linear"]
    tensors, deltas = bfl_lora("kohya", names, alpha=lambda i: 2.0 * (i + 1), dtype=torch.float8_e4m3fn)
    check(tmp_path, tensors, transformer(deltas), name="fp8.safetensors")
    for to in ("kohya", "diffusers"):
        out = tmp_path / f"{to}.safetensors"
        assert run_cli("lora", "convert", tmp_path / "fp8.safetensors", out, "--to", to)[0] == 0
        with safe_open(str(out), "pt") as handle:
            assert {handle.get_tensor(k).dtype for k in handle.keys() if not k.endswith(".alpha")} == {torch.bfloat16}
        _, got = ref.merged_deltas(out, 0.7)
        ref.assert_deltas(got, {k: v * 0.7 for k, v in transformer(deltas).items()}, rtol=1e-2)


def test_kohya_metadata_alpha_without_alpha_tensors_means_alpha_equals_rank(tmp_path):
    """kohya's loader, ComfyUI and diffusers read per-module .alpha tensors only; ss_network_alpha in the metadata
    does not scale anything, so a file without alpha tensors has strength 1. inspect says so."""
    tensors, deltas = bfl_lora("kohya", ["double_blocks.0.img_attn.proj", "single_blocks.0.linear1"],
                               alpha=lambda i: None)
    check(tmp_path, tensors, transformer(deltas), metadata=dict(KOHYA_META, ss_network_alpha="1.0"), name="k.safetensors")
    info = lora_inspect.inspect_lora(tmp_path / "k.safetensors")
    assert info["alphas"] == 0 and "alpha = rank" in info["alpha"] and "ss_network_alpha 1.0 ignored" in info["alpha"]


# ---------------------------------------------------------------- inspect and convert


@pytest.mark.parametrize("fixture", ["mixture", "xlabs", "bare", "bias"])
def test_convert_round_trips_render_the_same(tmp_path, run_cli, fixture):
    """Each layout converted to kohya and to diffusers merges to the same deltas as the source (or is refused)."""
    if fixture == "mixture":
        tensors, _ = mixture_lora(dtype=torch.float32)
    elif fixture == "bare":
        tensors, _ = bfl_lora("bare")
    elif fixture == "bias":
        tensors = {"transformer.x_embedder.lora_A.weight": torch.ones(2, 64) * 0.1,
                   "transformer.x_embedder.lora_B.weight": torch.ones(W, 2) * 0.2,
                   "transformer.x_embedder.lora_B.bias": torch.ones(W) * 0.3}
    else:
        tensors = {"double_blocks.0.processor.qkv_lora1.down.weight": torch.randn(4, W) * 0.3,
                   "double_blocks.0.processor.qkv_lora1.up.weight": torch.randn(3 * W, 4) * 0.3}
    source = tmp_path / "src.safetensors"
    save_file(tensors, str(source))
    _, want = ref.merged_deltas(source)
    for to in ("kohya", "diffusers"):
        out = tmp_path / f"{to}.safetensors"
        code, _, err = run_cli("lora", "convert", source, out, "--to", to)
        if fixture == "bias" and to == "kohya":  # kohya files have no LoRA bias
            assert code == 2 and "bias" in err and not out.exists() and len(err.strip().splitlines()) == 1
            continue
        assert code == 0, err
        _, got = ref.merged_deltas(out)
        ref.assert_deltas(got, want, rtol=1e-4)


def test_inspect_reports_the_onetrainer_layout(tmp_path):
    tensors, _ = mixture_lora(alpha=lambda i: 8.0, rank=lambda i: 4 if i < 10 else 8)
    tensors["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.ones(4, W, dtype=torch.bfloat16)
    tensors["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.ones(37, 4, dtype=torch.bfloat16)
    save_file(tensors, str(tmp_path / "ot.safetensors"), metadata=OT_META)
    info = lora_inspect.inspect_lora(tmp_path / "ot.safetensors")
    n = len(ALL_DIFFUSERS_SHAPES)
    assert info["format"].startswith("OneTrainer") and info["refused"] is None
    assert info["lora_tensors"] == 2 * n + 2 and info["alphas"] == n and info["text_encoder_tensors"] == 2
    assert info["rank"] == f"4 x11, 8 x{n - 10}" and info["alpha"] == f"8 x{n}"
    assert info["components"] == {"transformer": n, "clip": 1, "t5": 0}
    assert "transformer_blocks.*.ff.net.0.proj" in " ".join(info["targets"])


def test_a_layer_under_both_namings_uses_the_diffusers_named_copy(tmp_path, caplog):
    # civitai has files holding one LoRA twice (PEFT "transformer." keys and kohya keys); diffusers keeps the
    # PEFT half. localflux must not let the kohya copy silently replace it (or add to it).
    import lora_files as lf
    from localflux.lora.to_diffusers import convert
    from localflux.lora.files import read_lora

    named = lf.diffusers_tensors(seed=0, modules={"attn.to_out.0": (lf.WIDTH, lf.WIDTH)})
    kohya = {k: v for k, v in lf.kohya_tensors(seed=9).items() if "img_attn_proj" in k}
    path = tmp_path / "both.safetensors"
    save_file({**named, **kohya}, str(path))
    with caplog.at_level("WARNING", logger="localflux"):
        state = convert(read_lora(path))
    key = "transformer.transformer_blocks.0.attn.to_out.0"
    assert torch.equal(state[f"{key}.lora_A.weight"].float(), named[f"{key}.lora_A.weight"].float())
    assert torch.equal(state[f"{key}.lora_B.weight"].float(), named[f"{key}.lora_B.weight"].float())
    assert "twice" in caplog.text
