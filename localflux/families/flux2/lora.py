"""FLUX.2 LoRA files to diffusers/PEFT keys, through diffusers' FLUX.2 loader (``Flux2LoraLoaderMixin``).

Layouts (diffusers 0.42.1 ``Flux2KleinPipeline.lora_state_dict``):

- diffusers/PEFT: ``transformer.<module>.lora_A/B.weight`` (PEFT metadata or ``.alpha`` tensors for strength);
- ai-toolkit: ``diffusion_model.<BFL module>.lora_A/B.weight`` (``double_blocks.N.img_attn.qkv``,
  ``single_blocks.N.linear1``, ``double_stream_modulation_img.lin`` …) — diffusers' BFL converter;
- fal: the same BFL names under PEFT's ``base_model.model.`` (diffusers renames it to ``diffusion_model.``);
- musubi-tuner (kohya names): ``lora_unet_double_blocks_N_img_attn_qkv.lora_down/lora_up.weight`` and
  ``.alpha`` — diffusers' kohya FLUX.2 converter, which folds alpha/rank into the weights.

What diffusers leaves out: an ``.alpha`` beside ``lora_A/B`` keys (its non-kohya paths refuse them as
"Invalid adapter checkpoint"): folded into lora_A here, so the strength is the file's. PEFT metadata
(``lora_adapter_metadata``) is folded by ``lora/`` after this conversion, as for FLUX.1.
"""

from __future__ import annotations

import re

import torch
from diffusers import Flux2KleinPipeline

from ...errors import LoraError

# Module names only FLUX.2 transformers have (diffusers, BFL and kohya spellings): a LoRA using them is FLUX.2's.
MARKERS = (
    r"double_stream_modulation", r"single_stream_modulation", r"to_qkv_mlp_proj", r"ff(_context)?\.linear_(in|out)",
    r"time_guidance_embed", r"single_transformer_blocks\.\d+\.attn\.to_out",
)
_KOHYA = "lora_unet_"


def to_diffusers(lora, tensors: dict) -> dict:
    """``tensors`` (a LoRA file's) as ``transformer.*.lora_A/B.weight`` in float32, every alpha folded in."""

    state = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in tensors.items()}
    if not any(k.startswith(_KOHYA) for k in state):
        state = _fold_alphas(state)
    try:
        converted = Flux2KleinPipeline.lora_state_dict(state)
    except (ValueError, KeyError, IndexError, RuntimeError, AssertionError, NotImplementedError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise LoraError(f"LoRA {str(lora.path)!r} is not a FLUX.2 LoRA diffusers can read ({first}); "
                        "it is for another model") from None
    if isinstance(converted, tuple):
        converted = converted[0]
    return {(k if k.startswith(("transformer.", "text_encoder.")) else "transformer." + k): v
            for k, v in converted.items()}


def _fold_alphas(state: dict) -> dict:
    """``<module>.alpha`` folded into ``<module>.lora_A`` (or ``lora_down``) as alpha / rank; the alpha removed."""
    out = dict(state)
    for key in [k for k in out if k.endswith(".alpha")]:
        module = key.removesuffix(".alpha")
        for side in (".lora_A.weight", ".lora_down.weight"):
            down = out.get(module + side)
            if down is not None and down.ndim == 2:
                out[module + side] = down * (float(out.pop(key)) / down.shape[0])
                break
    return out


def is_flux2_lora_key(key: str) -> bool:
    return any(re.search(marker, key) for marker in MARKERS)
