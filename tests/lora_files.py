"""LoRA files for the tiny FLUX model, built in code in each layout users bring (no downloads).

The tiny transformer has width 32 (2 heads x 16), MLP width 128, one double and one single block.
Values are random but large enough (x0.3) that a LoRA visibly changes the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

WIDTH, MLP, CONTEXT = 32, 128, 32

# diffusers module -> (in, out) for the tiny model's double block 0
DOUBLE = {
    "attn.to_q": (WIDTH, WIDTH), "attn.to_k": (WIDTH, WIDTH), "attn.to_v": (WIDTH, WIDTH),
    "attn.to_out.0": (WIDTH, WIDTH),
    "attn.add_q_proj": (WIDTH, WIDTH), "attn.add_k_proj": (WIDTH, WIDTH), "attn.add_v_proj": (WIDTH, WIDTH),
    "attn.to_add_out": (WIDTH, WIDTH),
    "ff.net.0.proj": (WIDTH, MLP), "ff.net.2": (MLP, WIDTH),
    "ff_context.net.0.proj": (WIDTH, MLP), "ff_context.net.2": (MLP, WIDTH),
    "norm1.linear": (WIDTH, 6 * WIDTH), "norm1_context.linear": (WIDTH, 6 * WIDTH),
}
SINGLE = {"attn.to_q": (WIDTH, WIDTH), "attn.to_k": (WIDTH, WIDTH), "attn.to_v": (WIDTH, WIDTH),
          "proj_mlp": (WIDTH, MLP), "proj_out": (WIDTH + MLP, WIDTH), "norm.linear": (WIDTH, 3 * WIDTH)}

# kohya/BFL double-block names -> (in, out)
KOHYA_DOUBLE = {
    "img_attn_qkv": (WIDTH, 3 * WIDTH), "img_attn_proj": (WIDTH, WIDTH), "img_mlp_0": (WIDTH, MLP),
    "img_mlp_2": (MLP, WIDTH), "img_mod_lin": (WIDTH, 6 * WIDTH),
    "txt_attn_qkv": (WIDTH, 3 * WIDTH), "txt_attn_proj": (WIDTH, WIDTH), "txt_mlp_0": (WIDTH, MLP),
    "txt_mlp_2": (MLP, WIDTH), "txt_mod_lin": (WIDTH, 6 * WIDTH),
}


def _pair(gen, rank, fan_in, fan_out, strength=0.3):
    down = torch.randn(rank, fan_in, generator=gen) * strength
    up = torch.randn(fan_out, rank, generator=gen) * strength
    return down, up


def diffusers_tensors(seed=0, rank=4, modules=None, single=True) -> dict:
    """``transformer.<module>.lora_A/B.weight`` for the double block (and single block unless told)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    items = [(f"transformer_blocks.0.{m}", shape) for m, shape in (modules or DOUBLE).items()]
    if single and modules is None:
        items += [(f"single_transformer_blocks.0.{m}", shape) for m, shape in SINGLE.items()]
    for module, (fan_in, fan_out) in items:
        down, up = _pair(gen, rank, fan_in, fan_out)
        tensors[f"transformer.{module}.lora_A.weight"] = down
        tensors[f"transformer.{module}.lora_B.weight"] = up
    return tensors


def write_diffusers(path, seed=0, rank=4, alpha=None, metadata_alpha=None, single=True) -> Path:
    """Diffusers/PEFT layout; ``alpha``: write ``.alpha`` tensors; ``metadata_alpha``: PEFT config in metadata."""
    tensors = diffusers_tensors(seed, rank, single=single)
    if alpha is not None:
        for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
            tensors[key.replace(".lora_A.weight", ".alpha")] = torch.tensor(float(alpha))
    metadata = {"format": "pt"}
    if metadata_alpha is not None:
        modules = sorted({k.split(".lora_")[0].removeprefix("transformer.") for k in tensors})
        metadata["lora_adapter_metadata"] = json.dumps({"transformer.r": rank, "transformer.lora_alpha": metadata_alpha,
                                                        "transformer.target_modules": modules,
                                                        "transformer.use_dora": False})
    save_file(tensors, str(path), metadata=metadata)
    return Path(path)


def write_ai_toolkit(path, seed=1, rank=4) -> Path:
    """ai-toolkit's FLUX layout: diffusers keys with the transformer prefix, no alphas, its own metadata."""
    tensors = diffusers_tensors(seed, rank)
    metadata = {"format": "pt", "name": "anna_v1", "version": "1.0",
                "software": json.dumps({"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit"}),
                "training_info": json.dumps({"step": 2000, "epoch": 10}), "trigger_word": "ohwx anna"}
    save_file(tensors, str(path), metadata=metadata)
    return Path(path)


def kohya_tensors(seed=2, rank=4, alpha=2.0, text_encoder=False, t5=False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (fan_in, fan_out) in KOHYA_DOUBLE.items():
        down, up = _pair(gen, rank, fan_in, fan_out)
        base = f"lora_unet_double_blocks_0_{name}"
        tensors[f"{base}.lora_down.weight"] = down
        tensors[f"{base}.lora_up.weight"] = up
        tensors[f"{base}.alpha"] = torch.tensor(float(alpha))
    if text_encoder:
        for layer in ("self_attn_q_proj", "self_attn_v_proj"):
            down, up = _pair(gen, rank, 32, 32)
            base = f"lora_te1_text_model_encoder_layers_0_{layer}"
            tensors[f"{base}.lora_down.weight"] = down
            tensors[f"{base}.lora_up.weight"] = up
            tensors[f"{base}.alpha"] = torch.tensor(float(alpha))
    if t5:  # kohya's T5 prefix (lora_te3_; lora_te2_ in older sd-scripts)
        for layer in ("encoder_block_0_layer_0_SelfAttention_q", "encoder_block_0_layer_0_SelfAttention_v"):
            down, up = _pair(gen, rank, 32, 32)
            tensors[f"lora_te3_{layer}.lora_down.weight"] = down
            tensors[f"lora_te3_{layer}.lora_up.weight"] = up
    return tensors


def write_kohya_file(path, seed=2, rank=4, alpha=2.0, text_encoder=False, metadata=None, t5=False) -> Path:
    """kohya sd-scripts / fluxgym layout: BFL double-block names, lora_down/lora_up and .alpha."""
    meta = {"ss_network_module": "networks.lora_flux", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
            "ss_base_model_version": "flux1", "ss_output_name": "film",
            "ss_tag_frequency": json.dumps({"img": {"ohwx film": 12, "grain": 3}})}
    meta.update(metadata or {})
    save_file(kohya_tensors(seed, rank, alpha, text_encoder, t5), str(path), metadata=meta)
    return Path(path)


def write_kohya_bad_linear1(path, seed=3, rank=4) -> Path:
    """A kohya single-block ``linear1`` whose output is no FLUX q|k|v|mlp layer (not 7 x a width)."""
    gen = torch.Generator().manual_seed(seed)
    down, up = _pair(gen, rank, WIDTH, 3 * WIDTH + MLP + 1)
    save_file({"lora_unet_single_blocks_0_linear1.lora_down.weight": down,
               "lora_unet_single_blocks_0_linear1.lora_up.weight": up,
               "lora_unet_single_blocks_0_linear1.alpha": torch.tensor(4.0)}, str(path))
    return Path(path)


def kohya_single_block_tensors(seed=3, rank=4, width=WIDTH, alpha=4.0) -> dict:
    """A kohya single-block ``linear1`` (q, k, v, MLP input fused; one shared down weight, as kohya trains it).

    diffusers' converter assumes FLUX.1's 3072/12288 sizes for it; localflux splits other widths itself.
    """
    gen = torch.Generator().manual_seed(seed)
    down, up = _pair(gen, rank, width, 3 * width + 4 * width)
    return {"lora_unet_single_blocks_0_linear1.lora_down.weight": down,
            "lora_unet_single_blocks_0_linear1.lora_up.weight": up,
            "lora_unet_single_blocks_0_linear1.alpha": torch.tensor(alpha)}


def write_kohya_single_block(path, seed=3, rank=4, width=WIDTH, alpha=4.0) -> Path:
    save_file(kohya_single_block_tensors(seed, rank, width, alpha), str(path))
    return Path(path)


def write_dora(path, seed=4, rank=4) -> Path:
    tensors = kohya_tensors(seed, rank)
    tensors["lora_unet_double_blocks_0_img_attn_proj.dora_scale"] = torch.ones(1, WIDTH)
    save_file(tensors, str(path))
    return Path(path)


def write_partial(path, seed=5, rank=4) -> Path:
    """Half of it targets blocks the tiny model does not have (a LoRA for a deeper model)."""
    tensors = diffusers_tensors(seed, rank, modules={"attn.to_q": (WIDTH, WIDTH), "attn.to_k": (WIDTH, WIDTH)})
    for key, value in list(tensors.items()):
        tensors[key.replace("transformer_blocks.0.", "transformer_blocks.7.")] = value.clone()
    save_file(tensors, str(path))
    return Path(path)


def write_foreign(path, seed=6) -> Path:
    """An SDXL-style kohya LoRA: nothing in it belongs to FLUX."""
    gen = torch.Generator().manual_seed(seed)
    down, up = _pair(gen, 4, 320, 320)
    base = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{base}.lora_down.weight": down, f"{base}.lora_up.weight": up, f"{base}.alpha": torch.tensor(4.0)},
              str(path))
    return Path(path)


def write_wrong_size(path, seed=7) -> Path:
    """A LoRA for real-size FLUX.1 (width 3072) offered to the tiny model."""
    gen = torch.Generator().manual_seed(seed)
    down, up = _pair(gen, 2, 3072, 3072)
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": down,
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": up}, str(path))
    return Path(path)


def write_corrupt(path) -> Path:
    good = Path(str(path) + ".good")
    write_diffusers(good)
    data = good.read_bytes()
    good.unlink()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)
