"""FLUX.2 LoRA files for the tiny klein transformer (``tiny-flux2``), in each layout users bring.

The tiny klein transformer: width 32 (2 heads x 16), MLP 96 (SwiGLU: linear_in gives 2 x 96), one double and
one single block, 128 latent channels in, 48-wide text features. BFL module names (ai-toolkit, fal,
musubi-tuner) and diffusers names (PEFT) for the same layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

W, MLP = 32, 96

# BFL module -> (in, out) on the tiny klein transformer
BFL = {
    "double_blocks.0.img_attn.qkv": (W, 3 * W), "double_blocks.0.txt_attn.qkv": (W, 3 * W),
    "double_blocks.0.img_attn.proj": (W, W), "double_blocks.0.txt_attn.proj": (W, W),
    "double_blocks.0.img_mlp.0": (W, 2 * MLP), "double_blocks.0.img_mlp.2": (MLP, W),
    "double_blocks.0.txt_mlp.0": (W, 2 * MLP), "double_blocks.0.txt_mlp.2": (MLP, W),
    "single_blocks.0.linear1": (W, 3 * W + 2 * MLP), "single_blocks.0.linear2": (W + MLP, W),
}
# layers diffusers' ai-toolkit converter also maps (its kohya converter does not: modulation)
BFL_EXTRA = {"double_stream_modulation_img.lin": (W, 6 * W), "single_stream_modulation.lin": (W, 3 * W),
             "img_in": (128, W), "txt_in": (48, W), "final_layer.linear": (W, 128)}
# diffusers module -> (in, out)
DIFFUSERS = {
    "transformer_blocks.0.attn.to_q": (W, W), "transformer_blocks.0.attn.to_k": (W, W),
    "transformer_blocks.0.attn.to_v": (W, W), "transformer_blocks.0.attn.to_out.0": (W, W),
    "transformer_blocks.0.attn.add_q_proj": (W, W), "transformer_blocks.0.attn.to_add_out": (W, W),
    "transformer_blocks.0.ff.linear_in": (W, 2 * MLP), "transformer_blocks.0.ff.linear_out": (MLP, W),
    "single_transformer_blocks.0.attn.to_qkv_mlp_proj": (W, 3 * W + 2 * MLP),
    "single_transformer_blocks.0.attn.to_out": (W + MLP, W),
    "double_stream_modulation_img.linear": (W, 6 * W),
}


def _pair(gen, rank, fan_in, fan_out, strength=0.3):
    return torch.randn(rank, fan_in, generator=gen) * strength, torch.randn(fan_out, rank, generator=gen) * strength


def _tensors(modules: dict, seed: int, rank: int, prefix: str, sides=("lora_A", "lora_B"), alpha=None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for module, (fan_in, fan_out) in modules.items():
        down, up = _pair(gen, rank, fan_in, fan_out)
        out[f"{prefix}{module}.{sides[0]}.weight"] = down
        out[f"{prefix}{module}.{sides[1]}.weight"] = up
        if alpha is not None:
            out[f"{prefix}{module}.alpha"] = torch.tensor(float(alpha))
    return out


def write_ai_toolkit(path, seed=1, rank=4) -> Path:
    """ai-toolkit: ``diffusion_model.`` + BFL names, lora_A/lora_B, no alphas (strength 1)."""
    save_file(_tensors({**BFL, **BFL_EXTRA}, seed, rank, "diffusion_model."), str(path),
              metadata={"software": json.dumps({"name": "ai-toolkit"})})
    return Path(path)


def write_fal(path, seed=2, rank=4) -> Path:
    """fal: BFL names under PEFT's ``base_model.model.``."""
    save_file(_tensors(BFL, seed, rank, "base_model.model."), str(path))
    return Path(path)


def write_musubi(path, seed=3, rank=4, alpha=2.0, modulation=False) -> Path:
    """musubi-tuner: kohya names (``lora_unet_`` + BFL path with ``_``), lora_down/lora_up and an alpha each."""
    modules = {**BFL, **({"double_stream_modulation_img.lin": (W, 6 * W)} if modulation else {})}
    kohya = {"lora_unet_" + k.replace(".", "_"): v for k, v in modules.items()}
    save_file(_tensors(kohya, seed, rank, "", sides=("lora_down", "lora_up"), alpha=alpha), str(path),
              metadata={"ss_network_module": "networks.lora_flux_2", "ss_base_model_version": "flux2_klein_4b"})
    return Path(path)


def write_diffusers(path, seed=4, rank=4, alpha=None) -> Path:
    """diffusers/PEFT keys (``transformer.``), optionally an ``.alpha`` per module."""
    save_file(_tensors(DIFFUSERS, seed, rank, "transformer.", alpha=alpha), str(path))
    return Path(path)


def write_peft_metadata(folder, seed=5, rank=4, alpha=8) -> Path:
    """What ``Flux2KleinPipeline.save_lora_weights`` writes: PEFT keys, the LoraConfig (alpha) in the metadata."""
    from diffusers import Flux2KleinPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from localflux.families.flux2.tiny import build_tiny_components

    transformer = build_tiny_components("tiny-flux2")["transformer"]
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj", "linear_in"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config)
    Flux2KleinPipeline.save_lora_weights(str(folder), transformer_lora_layers=get_peft_model_state_dict(transformer),
                                         transformer_lora_adapter_metadata=config.to_dict())
    return Path(folder) / "pytorch_lora_weights.safetensors"


def write_flux1(path, seed=6, rank=4) -> Path:
    """A FLUX.1 LoRA (kohya names with per-block modulation, FLUX.1's 4x MLP) for the refusal tests."""
    modules = {"lora_unet_double_blocks_0_img_mod_lin": (W, 6 * W), "lora_unet_double_blocks_0_img_attn_qkv": (W, 3 * W),
               "lora_unet_single_blocks_0_modulation_lin": (W, 3 * W)}
    save_file(_tensors(modules, seed, rank, "", sides=("lora_down", "lora_up"), alpha=rank), str(path))
    return Path(path)
