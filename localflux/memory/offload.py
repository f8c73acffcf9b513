"""Placing a loaded pipeline: everything on the device, or one of diffusers' offload modes.

- ``model``: each component moves to the GPU while it runs (``enable_model_cpu_offload``);
- ``resident``: the same, except the transformer never leaves the GPU (diffusers'
  ``_exclude_from_cpu_offload``) — with an fp8 transformer this is "fp8 resident, offload the rest";
- ``group``: the transformer and VAE stream block by block, the text encoders layer by layer; on CUDA a
  side stream prefetches the next group while the current one computes;
- ``sequential``: every layer streams, one at a time, no prefetch (smallest, slowest). Built on
  diffusers' leaf-level group offload: accelerate's ``enable_sequential_cpu_offload`` fails on the
  CLIP embedding with transformers 5 (a plain tensor replaces the parameter; seen with accelerate 1.15).
With ``t5_device = "cpu"`` the T5 encoder stays in system memory and never enters the GPU.

Families name their big text encoder (``big_text``): FLUX.1's T5 is ``text_encoder_2``, FLUX.2's Qwen3 /
Mistral encoder is ``text_encoder`` (the memory plan's "t5" slot means "the big text encoder").
"""

from __future__ import annotations

import torch
from diffusers.hooks import apply_group_offloading


def place(pipe, device: str, offload: str, *, t5_on_cpu: bool = False, group_blocks: int = 1,
          big_text: str = "text_encoder_2") -> None:
    keep_t5 = [big_text] if t5_on_cpu else []
    if offload == "none":
        pipe.to(device)
    elif offload in ("model", "resident"):
        # an instance list: the class attribute is shared by every FluxPipeline
        pipe._exclude_from_cpu_offload = keep_t5 + (["transformer"] if offload == "resident" else [])
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        _group_offload(pipe, torch.device(device), group_blocks, exclude=keep_t5, leaf=True)
    elif offload == "group":
        _group_offload(pipe, torch.device(device), group_blocks, exclude=keep_t5)
    else:
        raise ValueError(f"unknown offload mode {offload!r}")  # config validation prevents this
    if t5_on_cpu:
        getattr(pipe, big_text).to("cpu")


def _group_offload(pipe, device: torch.device, blocks: int, exclude: list[str], leaf: bool = False) -> None:

    stream = device.type == "cuda" and not leaf
    common = dict(onload_device=device, offload_device=torch.device("cpu"), use_stream=stream)
    if leaf:
        for name in ("transformer", "vae"):
            apply_group_offloading(getattr(pipe, name), offload_type="leaf_level", **common)
    else:
        pipe.transformer.enable_group_offload(offload_type="block_level", num_blocks_per_group=blocks, **common)
        pipe.vae.enable_group_offload(offload_type="block_level", num_blocks_per_group=1, **common)
    # T5's blocks sit one level down (encoder.block), out of block-level reach: stream it by layer
    for name in ("text_encoder", "text_encoder_2"):
        if name not in exclude and getattr(pipe, name, None) is not None:
            apply_group_offloading(getattr(pipe, name), offload_type="leaf_level", **common)
