"""What a FLUX-style transformer file's tensor shapes say about its config, for every family.

FLUX.1 and FLUX.2 transformers share the skeleton (an input projection, double- and single-stream blocks, RMS
norms one head wide, a context projection): both families read block counts, width, head size and the text
width the same way; each adds its own fields (``families/*/single_file.py``).
"""

from __future__ import annotations

import re

import torch

COMFY_PREFIX = "model.diffusion_model."  # ComfyUI full checkpoints prefix the transformer's keys


def strip_prefix(shapes: dict) -> dict:
    return {k.removeprefix(COMFY_PREFIX): v for k, v in shapes.items()}


def layout_of(shapes: dict) -> str:
    """``bfl`` (BFL/ComfyUI key names) or ``diffusers``."""
    keys = strip_prefix(shapes)
    return "bfl" if any(k.startswith("double_blocks.") or k == "img_in.weight" for k in keys) else "diffusers"


def block_count(shapes: dict, prefix: str) -> int:
    """How many numbered blocks ``prefix0.``, ``prefix1.`` … the file holds."""
    found = {int(m.group(1)) for k in shapes for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    return max(found) + 1 if found else 0


def linear_names(blocks) -> set[str]:
    """Names of the linear layers inside ``blocks`` (one of each block kind, tiny, built on the meta device)."""
    return {name for block in blocks for name, module in block.named_modules() if isinstance(module, torch.nn.Linear)}


def skeleton(shapes: dict, names: dict, head_keys: tuple[str, str]) -> dict:
    """The shared config fields; ``names`` maps x, context, double, single, guidance to key names, ``head_keys``
    are a double block's and a single block's query-norm scale (one head wide)."""
    width, in_channels = shapes[names["x"]]
    doubles, singles = block_count(shapes, names["double"]), block_count(shapes, names["single"])
    head_key = head_keys[0] if doubles else head_keys[1]
    if head_key not in shapes:
        raise ValueError(f"no {head_key} tensor")
    head_dim = shapes[head_key][0]
    return {
        "in_channels": in_channels,
        "num_layers": doubles,
        "num_single_layers": singles,
        "attention_head_dim": head_dim,
        "num_attention_heads": width // head_dim,
        "joint_attention_dim": shapes[names["context"]][1],
        "guidance_embeds": any(k.startswith(names["guidance"]) for k in shapes),
    }
