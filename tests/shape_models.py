"""Test helper: tiny random-weight FLUX models whose geometry differs from ``localflux.tiny``.

localflux must not assume the tiny model's shapes (or FLUX.1's real ones). Each variant here
changes what a FLUX-architecture model may change: block counts (no single blocks at all, or a
single double block), head size and count (RoPE axes summing to the head size), text widths
(CLIP pooled and T5 sequence), guidance embedding on or off, a VAE with another downsampling
factor and other latent scaling/shift, and a scheduler config with its own shift settings.

The folder names deliberately say the opposite of what the models are: the preset must come
from the weights (guidance embedding), never from a name.
"""

from __future__ import annotations

import json

SHAPES = {
    # dev-like: guidance embedding, two double blocks and no single blocks, 3 heads of 8, a
    # three-block VAE (factor 4: sizes are multiples of 8), dynamic shifting with its own mu line.
    "schnell-named-dev": {
        "transformer": dict(num_layers=2, num_single_layers=0, attention_head_dim=8, num_attention_heads=3,
                            axes_dims_rope=(2, 2, 4), joint_attention_dim=20, pooled_projection_dim=24,
                            guidance_embeds=True),
        "vae": dict(block_out_channels=(8, 16, 16), scaling_factor=0.62, shift_factor=-0.05, use_quant_conv=False),
        "clip_hidden": 24,
        "t5": dict(d_model=20, d_kv=10, num_heads=2),
        "t5_max_length": 128,
        "scheduler": {"use_dynamic_shifting": True, "base_shift": 0.3, "max_shift": 1.6,
                      "base_image_seq_len": 64, "max_image_seq_len": 1024, "shift": 3.0},
    },
    # schnell-like: no guidance embedding, one double and three single blocks, 2 heads of 24,
    # a four-block VAE with quant convs and other scaling/shift, a static shift of 2.
    "dev-named-schnell": {
        "transformer": dict(num_layers=1, num_single_layers=3, attention_head_dim=24, num_attention_heads=2,
                            axes_dims_rope=(8, 8, 8), joint_attention_dim=40, pooled_projection_dim=36,
                            guidance_embeds=False),
        "vae": dict(block_out_channels=(8, 8, 16, 32), scaling_factor=1.3, shift_factor=0.2, use_quant_conv=True),
        "clip_hidden": 36,
        "t5": dict(d_model=40, d_kv=8, num_heads=5),
        "t5_max_length": 512,
        "scheduler": {"use_dynamic_shifting": False, "shift": 2.0, "base_shift": 0.5, "max_shift": 1.15,
                      "base_image_seq_len": 256, "max_image_seq_len": 4096},
    },
}


def build_shape_pipeline(name: str, seed: int = 7):
    """A FluxPipeline of shape ``name`` (see ``SHAPES``), float32, eval mode, no gradients."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    from localflux.families.flux1 import tiny

    shape = SHAPES[name]
    blocks = len(shape["vae"]["block_out_channels"])
    vae_args = {k: v for k, v in shape["vae"].items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, **shape["transformer"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                            up_block_types=("UpDecoderBlock2D",) * blocks, layers_per_block=1, latent_channels=16,
                            norm_num_groups=4, sample_size=64, use_post_quant_conv=vae_args["use_quant_conv"],
                            **vae_args)
        vocab, _ = tiny._clip_vocab()
        clip = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=shape["clip_hidden"], intermediate_size=40, num_hidden_layers=1,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=shape["clip_hidden"],
            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"]))
        t5 = T5EncoderModel(T5Config(vocab_size=len(tiny._t5_vocab()), d_ff=44, num_layers=1,
                                     relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                     pad_token_id=0, eos_token_id=1, **shape["t5"]))
    for module in (transformer, vae, clip, t5):
        module.eval()  # built from configs: train mode (T5 dropout) until told otherwise
        module.requires_grad_(False)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **shape["scheduler"])
    t5_tokenizer = T5TokenizerFast(vocab=tiny._t5_vocab(), extra_ids=0, model_max_length=shape["t5_max_length"])
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tiny._clip_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer)


def save_shape_model(name: str, folder) -> None:
    build_shape_pipeline(name).save_pretrained(folder)


def transformer_config(folder) -> dict:
    return json.loads((folder / "transformer" / "config.json").read_text())
