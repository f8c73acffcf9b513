"""Seeds -> images through diffusers' ``FluxPipeline`` rectified-flow sampler.

The seed contract: image k of a run with base seed s uses seed s+k, and its initial noise is
exactly what ``FluxPipeline`` draws from ``torch.Generator("cpu").manual_seed(s+k)``. Passing
one CPU generator per image makes diffusers draw each image's noise separately, so an image
rendered in a batch gets the same noise as when rendered alone. The global RNG is never used.

The Euler loop itself is diffusers' (``FlowMatchEulerDiscreteScheduler`` configured by the model
folder): re-implementing it would only add a second place for the schedule to drift.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from .presets import CLIP_MAX_TOKENS

log = logging.getLogger(__name__)

# VAE tiling "auto" switches on above this many pixels: decoding 4 MP at once needs several GB.
VAE_TILING_AUTO_PIXELS = 2 * 1024 * 1024


@dataclass(frozen=True)
class RenderRequest:
    """Everything that determines the pixels of one forward pass (besides the model)."""

    clip_prompt: str
    t5_prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance: float
    true_cfg: float
    max_sequence_length: int
    vae_tiling: bool


def vae_tiling_enabled(setting: str, width: int, height: int) -> bool:
    if setting == "auto":
        return width * height > VAE_TILING_AUTO_PIXELS
    return setting == "on"


def warn_if_truncated(pipe, request: RenderRequest) -> list[str]:
    """Warn (and return the warnings) when a prompt is longer than CLIP's window (77 tokens) or the T5 limit."""
    warnings = []
    # FluxPipeline truncates CLIP input at its tokenizer's model_max_length (77 for FLUX.1's CLIP-L)
    clip_limit = getattr(pipe, "tokenizer_max_length", None) or CLIP_MAX_TOKENS
    clip_tokens = len(pipe.tokenizer(request.clip_prompt, truncation=False).input_ids)
    if clip_tokens > clip_limit:
        warnings.append(
            f"prompt is {clip_tokens} CLIP tokens; CLIP reads only the first {clip_limit} "
            f"(T5 still reads up to {request.max_sequence_length}): put the key words first"
        )
    t5_tokens = len(pipe.tokenizer_2(request.t5_prompt, truncation=False).input_ids)
    if t5_tokens > request.max_sequence_length:
        warnings.append(
            f"prompt is {t5_tokens} T5 tokens; only the first {request.max_sequence_length} are used "
            "(raise sampling.max_sequence_length, up to 512)"
        )
    for text in warnings:
        log.warning(text)
    return warnings


def render(pipe, request: RenderRequest, seeds: list[int], *, progress: bool = True, desc: str = "", prepared=None):
    """Render one image per seed in a single forward pass; returns (PIL images, sigmas used).

    ``prepared`` (a ``tasks.Prepared``): the task's pipeline (built over ``pipe``'s components) and its
    keyword arguments; the per-image ones (input images) are given once per seed, so each seed's
    generator makes its own draws (VAE sample, then noise) in a batch exactly as alone.
    """
    import inspect

    import torch

    extra = {}
    if prepared is not None and prepared.role != "text":
        from .flux1_pipelines import task_pipeline

        pipe = task_pipeline(pipe, prepared.role)
    if prepared is not None:
        extra = {key: [value] * len(seeds) if key in prepared.per_image else value
                 for key, value in prepared.kwargs.items()}
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    if request.vae_tiling:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    pipe.set_progress_bar_config(disable=not progress, desc=desc or None, leave=False, file=sys.stderr)
    use_cfg = request.true_cfg > 1 and bool(request.negative_prompt)
    with torch.inference_mode():
        call = dict(
            prompt=request.clip_prompt,
            prompt_2=request.t5_prompt,
            negative_prompt=request.negative_prompt if use_cfg else None,
            true_cfg_scale=request.true_cfg,
            height=request.height,
            width=request.width,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            num_images_per_prompt=len(seeds),
            generator=generators,
            max_sequence_length=request.max_sequence_length,
            output_type="pil",
        )
        call.update(extra)
        accepted = inspect.signature(pipe.__call__).parameters
        output = pipe(**{key: value for key, value in call.items() if key in accepted})  # Fill has no true CFG
    images = output.images
    if prepared is not None and prepared.finish is not None:
        images = [prepared.finish(image) for image in images]
    sigmas = [float(s) for s in pipe.scheduler.sigmas[:-1].tolist()]  # the last entry is the terminal 0
    return images, sigmas
