"""The FLUX noise schedule as pure math (what diffusers' FlowMatchEulerDiscreteScheduler does).

Used to show the schedule before rendering (``--dry-run``) and to test that the sigmas the
sampler reports are the ones the model folder's ``scheduler_config`` implies. The sampler
itself lets diffusers compute them.

- Base sigmas: ``linspace(1, 1/N, N)`` (FluxPipeline).
- dev (``use_dynamic_shifting``): ``mu`` grows linearly with the image token count from
  ``base_shift`` at ``base_image_seq_len`` tokens to ``max_shift`` at ``max_image_seq_len``, and
  ``sigma' = e^mu / (e^mu + (1/sigma - 1))`` (BFL ``time_shift``, exponential form).
- schnell: a static ``shift`` (1.0: unchanged).
"""

from __future__ import annotations

import math

from .geometry import image_tokens


def image_seq_len(width: int, height: int, vae_scale_factor: int = 8) -> int:
    """Transformer image tokens: the VAE latent (8x smaller for FLUX.1) packed into 2x2 patches."""
    return image_tokens(width, height, vae_scale_factor)


def mu_for(seq_len: int, config: dict) -> float:
    x1, x2 = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    y1, y2 = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (y2 - y1) / (x2 - x1)
    return seq_len * slope + (y1 - slope * x1)


def time_shift(mu: float, sigma):
    """FLUX's resolution shift of a noise level: a float, or a tensor of them (the trainer's draws)."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigma - 1))


def flux_sigmas(config: dict, steps: int, width: int, height: int, vae_scale_factor: int = 8) -> list[float]:
    base = [1.0 - i * (1.0 - 1.0 / steps) / max(steps - 1, 1) for i in range(steps)] if steps > 1 else [1.0]
    if config.get("use_dynamic_shifting"):
        mu = mu_for(image_seq_len(width, height, vae_scale_factor), config)
        return [time_shift(mu, s) for s in base]
    shift = config.get("shift", 1.0)
    return [shift * s / (1 + (shift - 1) * s) for s in base]
