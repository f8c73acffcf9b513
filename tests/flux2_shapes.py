"""Test helper: tiny FLUX.2 [klein] models whose geometry differs from the built-in ``tiny-flux2``.

localflux must not assume the miniature's shapes: these change block counts, head count and size (RoPE
axes summing to it), the Qwen3 width (so ``joint_attention_dim`` = 3 x width), the MLP ratio, and the VAE's
widths. Saved as diffusers folders whose names say the opposite of what they are (the preset must come
from ``model_index.json``'s ``is_distilled``, never from a name).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SHAPES = {
    # distilled klein: 2 double + 2 single blocks, 3 heads of 8, Qwen3 width 24, a three-wide VAE
    "klein-base-named-distilled": {
        "distilled": True,
        "transformer": dict(num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=3,
                            axes_dims_rope=(2, 2, 2, 2), mlp_ratio=2.0, timestep_guidance_channels=64),
        "text_hidden": 24,
        "vae": dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=8),
    },
    # klein base (CFG): 1 double + 3 single blocks, 2 heads of 24
    "klein-named-base": {
        "distilled": False,
        "transformer": dict(num_layers=1, num_single_layers=3, attention_head_dim=24, num_attention_heads=2,
                            axes_dims_rope=(6, 6, 6, 6), mlp_ratio=3.0, timestep_guidance_channels=128),
        "text_hidden": 8,
        "vae": dict(block_out_channels=(4, 8, 8, 8), norm_num_groups=4),
    },
}


def build_components(name: str) -> dict:
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from localflux.families.flux2 import tiny

    shape = SHAPES[name]
    hidden = shape["text_hidden"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
        transformer = Flux2Transformer2DModel(patch_size=1, in_channels=128, joint_attention_dim=3 * hidden,
                                              rope_theta=2000, guidance_embeds=False, **shape["transformer"])
        vae = AutoencoderKLFlux2(layers_per_block=1, latent_channels=32, sample_size=64, patch_size=(2, 2),
                                 **shape["vae"])
        channels = vae.bn.running_mean.shape[0]
        vae.bn.running_mean.copy_(0.05 * torch.randn(channels))
        vae.bn.running_var.copy_(0.7 + torch.rand(channels))
        text_encoder = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=len(tiny._qwen_vocab()) + len(tiny.QWEN_SPECIALS), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=tiny.QWEN_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
            max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=None,
            eos_token_id=tiny._qwen_special_id("<|im_end|>"), pad_token_id=tiny._qwen_special_id("<|endoftext|>")))
    for module in (transformer, vae, text_encoder):
        module.eval()
        module.requires_grad_(False)
    return {"transformer": transformer, "vae": vae, "text_encoder": text_encoder, "tokenizer": tiny.qwen_tokenizer(),
            "scheduler": tiny._scheduler("FLUX.2-klein-4B"), "is_distilled": shape["distilled"]}


def build_pipeline(name: str, task: str = "text"):
    from diffusers import Flux2KleinInpaintPipeline, Flux2KleinPipeline

    cls = Flux2KleinInpaintPipeline if task == "inpaint" else Flux2KleinPipeline
    return cls(**build_components(name))


def save(name: str, folder) -> Path:
    """The shape as a diffusers folder (``Flux2KleinPipeline.from_pretrained`` reads it back)."""
    build_pipeline(name).save_pretrained(folder)
    return Path(folder)
