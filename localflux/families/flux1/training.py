"""What LoRA training needs from FLUX.1 (train/ asks the family; see families/flux2/training.py for FLUX.2).

Latents: the VAE's latent mean, ``(mean - shift_factor) * scaling_factor`` (16, H/8, W/8); text: T5's sequence
and CLIP's pooled embedding per caption; the transformer call on 2x2-packed latents with 3-axis ids
(diffusers' ``train_dreambooth_lora_flux.py``); sigma shift by image tokens from the scheduler config.
"""

from __future__ import annotations

import torch
from diffusers import FluxPipeline
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

from ... import schedule
from ..shapes import linear_names

HELPERS = ("text_encoder", "text_encoder_2", "vae")  # modules that visit the accelerator only to fill the cache


def text_dtype(pipe) -> str:
    return str(pipe.text_encoder_2.dtype)


def encode_latent(pipe, pixels):
    """One image (1, 3, H, W) on the VAE's device and dtype -> its normalised latent (16, H/8, W/8)."""
    mean = pipe.vae.encode(pixels).latent_dist.mean
    config = pipe.vae.config
    return ((mean - config.shift_factor) * config.scaling_factor)[0]


def encode_text(pipe, caption: str, device: str, max_sequence_length: int) -> dict:
    t5, pooled, _ = pipe.encode_prompt(prompt=caption, prompt_2=caption, device=device,
                                       num_images_per_prompt=1, max_sequence_length=max_sequence_length)
    return {"t5": t5[0], "pooled": pooled[0]}


def mu(seq_len: int, scheduler_config) -> float:

    return schedule.mu_for(seq_len, dict(scheduler_config))


def default_targets(configured: list[str]) -> list[str]:
    return configured


def block_linears() -> set[str]:
    """Names of the linear layers inside diffusers' FLUX double and single blocks (built on the meta device)."""
    with torch.device("meta"):
        return linear_names((FluxTransformerBlock(dim=8, num_attention_heads=1, attention_head_dim=8),
                             FluxSingleTransformerBlock(dim=8, num_attention_heads=1, attention_head_dim=8)))


def predict(model, noisy, sigmas, text: dict, *, device: str, dtype, guidance: float | None, vae_scale_factor: int):
    """The transformer's velocity for ``noisy`` (B, 16, h, w), in the same layout."""

    b, c, h, w = noisy.shape
    packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype)
    t5 = text["t5"]
    txt_ids = torch.zeros(t5.shape[1], 3, device=device, dtype=dtype)
    pred = model(hidden_states=packed, timestep=sigmas.to(device, dtype),
                 guidance=None if guidance is None else torch.full((b,), guidance, device=device, dtype=dtype),
                 pooled_projections=text["pooled"].to(device, dtype), encoder_hidden_states=t5.to(device, dtype),
                 txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    return FluxPipeline._unpack_latents(pred, h * vae_scale_factor, w * vae_scale_factor, vae_scale_factor)
