"""The trained LoRA as a file: diffusers/PEFT layout, strength folded in, the training record in its metadata.

diffusers writes the tensors (``transformer.<module>.lora_A/B.weight``) and the adapter config
(rank, alpha, targets) as ``lora_adapter_metadata`` via ``FluxPipeline.save_lora_weights``. Loaders
that ignore that header (ComfyUI reads only ``.alpha`` tensors, and without one takes alpha = rank)
would apply a file trained with alpha != rank at the wrong strength, so the strength alpha/r is
folded into the tensors (the same fold ``lora convert --to diffusers`` applies: ``lora.to_diffusers``) and
the header says ``lora_alpha = r``: every loader reads the same weights. localflux adds plain str -> str
metadata (``localflux.*`` keys: training config, dataset and base-model hashes, trigger, steps,
seed) and writes the result atomically. The same bytes back the previews, so a preview renders
exactly what a user who loads the file renders.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import FluxPipeline
from diffusers.training_utils import _collate_lora_metadata
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load, load_file

from .. import __version__
from ..lora.files import peft_metadata
from ..lora.kohya import write_kohya
from ..lora.to_diffusers import fold_metadata_alphas
from ..output import atomic_write_bytes
from ..weightfile import safetensors_bytes

META_PREFIX = "localflux."


def lora_state_dict(transformer, dtype: str, adapter_name: str = "default") -> dict:
    """The adapter's tensors in diffusers/PEFT names (without the ``transformer.`` prefix), cast to ``dtype``."""

    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    return {k: v.detach().to("cpu", dtype=getattr(torch, dtype)).contiguous() for k, v in state.items()}


def lora_file_bytes(transformer, dtype: str, metadata: dict[str, str]) -> bytes:
    """The .safetensors bytes of the current adapter, as ``FluxPipeline.save_lora_weights`` lays it out."""


    with tempfile.TemporaryDirectory(prefix="localflux-lora-") as folder:
        FluxPipeline.save_lora_weights(folder, transformer_lora_layers=lora_state_dict(transformer, dtype),
                                       weight_name="lora.safetensors",
                                       **_collate_lora_metadata({"transformer": transformer}))
        path = Path(folder) / "lora.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            merged = dict(handle.metadata() or {})
        tensors = load(path.read_bytes())
    tensors, merged = unit_strength(tensors, merged)
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"safetensors metadata must be str -> str; {key!r} is {type(value).__name__}")  # a bug
        merged[key] = value
    return safetensors_bytes(tensors, merged)


def unit_strength(tensors: dict, metadata: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """``(tensors, metadata)`` with each module's PEFT strength folded into its weights and the
    ``lora_adapter_metadata`` config rewritten to strength 1 (lora_alpha = r per module, no rsLoRA)."""


    config = peft_metadata(metadata)
    if not config:
        return tensors, metadata
    dtypes = {k: v.dtype for k, v in tensors.items()}
    folded = fold_metadata_alphas({k: v.to(torch.float64) for k, v in tensors.items()}, config)
    tensors = {k: v.to(dtypes[k]).contiguous() for k, v in folded.items()}
    for prefix in {k.split(".", 1)[0] for k in config if "." in k}:
        if f"{prefix}.r" in config:
            config[f"{prefix}.lora_alpha"] = config[f"{prefix}.r"]
            config[f"{prefix}.alpha_pattern"] = dict(config.get(f"{prefix}.rank_pattern") or {})
            config[f"{prefix}.use_rslora"] = False
    return tensors, dict(metadata, lora_adapter_metadata=json.dumps(config, sort_keys=True))


def training_metadata(*, config, dataset_sha256: str, base_model_sha256: str, step: int) -> dict[str, str]:

    return {
        f"{META_PREFIX}version": __version__,
        f"{META_PREFIX}kind": "subject-lora",
        f"{META_PREFIX}training_config": config.to_json(),
        f"{META_PREFIX}dataset_sha256": dataset_sha256,
        f"{META_PREFIX}base_model": config.model.source,
        f"{META_PREFIX}base_model_sha256": base_model_sha256,
        f"{META_PREFIX}trigger": config.dataset.trigger,
        f"{META_PREFIX}steps": str(step),
        f"{META_PREFIX}seed": str(config.training.seed),
        f"{META_PREFIX}rank": str(config.lora.rank),
        f"{META_PREFIX}alpha": json.dumps(config.lora.alpha),
    }


def write_lora(path: Path, transformer, dtype: str, metadata: dict[str, str]) -> Path:
    """Write the final LoRA; never overwrites."""
    return atomic_write_bytes(Path(path), lora_file_bytes(transformer, dtype, metadata))


def read_metadata(path: Path) -> dict[str, str]:

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def kohya_writer():
    """The LoRA feature's kohya writer (``lora/kohya.py``), asked for before training."""
    return write_kohya


def write_kohya_copy(lora_path: Path, kohya_path: Path, *, metadata: dict[str, str]) -> Path:
    """A kohya-format copy (``lora_unet_*`` keys with ``.alpha`` tensors) for ComfyUI and Forge.

    The strength is already folded into ``lora_path``'s tensors (see :func:`unit_strength`): alpha = rank."""

    write_kohya = kohya_writer()
    return write_kohya(load_file(str(lora_path)), kohya_path, alpha=None, metadata=metadata)
