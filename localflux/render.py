"""Seeds -> images: the one place that calls a diffusers pipeline, for every family and task.

The seed contract: image k of a run with base seed s uses seed s+k, and its random draws come
from its own ``torch.Generator("cpu").manual_seed(s+k)``. Passing one CPU generator per image makes
diffusers draw each image's noise separately, so an image rendered in a batch gets the same noise
as when rendered alone. The global RNG is never used.

The sampler loop itself is diffusers' (the scheduler configured by the model folder): the family
gives the prompt arguments, the task its inputs (image, mask, strength, references).
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass

import torch

from .tasks.base import Prepared

log = logging.getLogger(__name__)

# VAE tiling "auto" switches on above this many pixels: decoding 4 MP at once needs several GB.
VAE_TILING_AUTO_PIXELS = 2 * 1024 * 1024


@dataclass(frozen=True)
class RenderRequest:
    """Everything that determines the pixels of one forward pass (besides the model and task inputs)."""

    prompts: dict  # the text each encoder reads, keyed as the family records it (FLUX.1: clip, t5)
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


def prompt_warnings(family, pipe, request: RenderRequest) -> list[str]:
    """The family's warnings for this prompt (too long for an encoder …), logged and returned for the recipe."""
    warnings = family.prompt_warnings(pipe, request)
    for text in warnings:
        log.warning(text)
    return warnings


def render(pipe, family, request: RenderRequest, seeds: list[int], prepared: Prepared | None = None, *,
           progress: bool = True, desc: str = ""):
    """Render one image per seed in a single forward pass; returns (PIL images, sigmas used).

    ``prepared`` (a ``tasks.Prepared``): the task's pipeline role (built by the family over ``pipe``'s
    modules) and its keyword arguments; the per-image ones (input images) are given once per seed, so
    each seed's generator makes its own draws (VAE sample, then noise) in a batch exactly as alone.
    """
    extra = {}
    if prepared is not None:
        if prepared.role != "text":
            pipe = family.task_pipeline(pipe, prepared.role)
        extra = {key: [value] * len(seeds) if key in prepared.per_image else value
                 for key, value in prepared.kwargs.items()}
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    if request.vae_tiling:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    pipe.set_progress_bar_config(disable=not progress, desc=desc or None, leave=False, file=sys.stderr)
    call = dict(**family.prompt_kwargs(request, pipe), height=request.height, width=request.width,
                num_inference_steps=request.steps, num_images_per_prompt=len(seeds), generator=generators,
                output_type="pil")
    call.update(extra)
    accepted = inspect.signature(pipe.__call__).parameters  # e.g. Fill takes no negative prompt / true CFG
    with torch.inference_mode():
        output = pipe(**{key: value for key, value in call.items() if key in accepted})
    images = output.images
    if prepared is not None and prepared.finish is not None:
        images = [prepared.finish(image) for image in images]  # e.g. paste-back after decoding
    sigmas = [float(s) for s in pipe.scheduler.sigmas[:-1].tolist()]  # the last entry is the terminal 0
    return images, sigmas
