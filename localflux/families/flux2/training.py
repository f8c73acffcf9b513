"""What LoRA training needs from FLUX.2 [klein] base (train/ asks the family; FLUX.1: families/flux1/training.py).

The math of diffusers' ``examples/dreambooth/train_dreambooth_lora_flux2_klein.py``, read from the pipeline:
- latents: the VAE's latent *mode* (as ``Flux2KleinPipeline`` encodes references), patchified 2x2 to
  (128, H/16, W/16) and normalised with the VAE's batch-norm running statistics ``(x - mean) / sqrt(var + eps)``
  (no shift/scaling factor as in FLUX.1); the cache stores them in that space, so noise is drawn there too;
- text: ``pipe.encode_prompt`` (Qwen3 chat template, hidden-state layers (9, 18, 27) stacked) per caption;
  text ids (0, 0, 0, l), latent ids (0, h, w, 0) — 4-D RoPE coordinates as the pipeline builds them;
- the transformer sees ``timestep = sigma`` (the pipeline passes t/1000), ``guidance=None`` on klein (its
  transformer has no guidance embedder; FLUX.2 [dev] gets the configured guidance);
- target ``noise - x0`` (flow matching), the same ``(1 - sigma) x0 + sigma noise`` interpolation as FLUX.1;
- ``timesteps = "flux_shift"`` shifts the logit-normal draw by diffusers' empirical FLUX.2 mu for the bucket's
  token count at the base model's 50 sampling steps (``compute_empirical_mu``), as its sampler does.
"""

from __future__ import annotations

import torch
from diffusers import Flux2KleinPipeline
from diffusers.models.transformers.transformer_flux2 import Flux2SingleTransformerBlock, Flux2TransformerBlock
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

from ...train.config import DEFAULT_TARGETS as FLUX1_DEFAULTS
from ..shapes import linear_names

HELPERS = ("text_encoder", "vae")
SHIFT_STEPS = 50  # klein base's sampling steps: the mu its own schedule uses at this size
# Linear layers in diffusers' Flux2TransformerBlock / Flux2SingleTransformerBlock (0.42.1); the single block's
# attention is one fused QKV+MLP projection.
DEFAULT_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                   "attn.add_v_proj", "attn.to_add_out", "ff.linear_in", "ff.linear_out", "ff_context.linear_in",
                   "ff_context.linear_out", "attn.to_qkv_mlp_proj", "attn.to_out")


def text_dtype(pipe) -> str:
    return str(pipe.text_encoder.dtype)


def encode_latent(pipe, pixels):
    """One image (1, 3, H, W) -> (128, H/16, W/16): mode, patchified, batch-norm normalised."""

    latents = pipe.vae.encode(pixels).latent_dist.mode()
    patched = pipe._patchify_latents(latents)
    mean = pipe.vae.bn.running_mean.view(1, -1, 1, 1).to(patched.device, patched.dtype)
    std = torch.sqrt(pipe.vae.bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(
        patched.device, patched.dtype)
    return ((patched - mean) / std)[0]


def encode_text(pipe, caption: str, device: str, max_sequence_length: int) -> dict:
    embeds, _ids = pipe.encode_prompt(prompt=caption, device=device, num_images_per_prompt=1,
                                      max_sequence_length=max_sequence_length)
    return {"embeds": embeds[0]}


def mu(seq_len: int, scheduler_config) -> float:

    return float(compute_empirical_mu(seq_len, SHIFT_STEPS))


def default_targets(configured: list[str]) -> list[str]:
    """FLUX.1's default target list (the config's default) means "the default": FLUX.2's layer names."""

    return list(DEFAULT_TARGETS) if tuple(configured) == tuple(FLUX1_DEFAULTS) else configured


def block_linears() -> set[str]:
    """Names of the linear layers inside diffusers' FLUX.2 double and single blocks."""
    with torch.device("meta"):
        return linear_names((Flux2TransformerBlock(dim=8, num_attention_heads=1, attention_head_dim=8),
                             Flux2SingleTransformerBlock(dim=8, num_attention_heads=1, attention_head_dim=8)))


def predict(model, noisy, sigmas, text: dict, *, device: str, dtype, guidance: float | None, vae_scale_factor: int):
    """The transformer's velocity for ``noisy`` (B, 128, h, w) in the same (patchified, normalised) layout."""

    b, c, h, w = noisy.shape
    packed = Flux2KleinPipeline._pack_latents(noisy)  # (B, h*w, C), row-major
    img_ids = Flux2KleinPipeline._prepare_latent_ids(noisy).to(device)
    embeds = text["embeds"].to(device, dtype)
    txt_ids = Flux2KleinPipeline._prepare_text_ids(embeds).to(device)
    pred = model(hidden_states=packed, timestep=sigmas.to(device, dtype),
                 guidance=None if guidance is None else torch.full((b,), guidance, device=device, dtype=dtype),
                 encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    return pred[:, : h * w].permute(0, 2, 1).reshape(b, c, h, w)
