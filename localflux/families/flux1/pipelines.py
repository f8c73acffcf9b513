"""FLUX.1: which diffusers pipeline class runs which task, and how a model says what it is.

The one table of role -> class (``PIPELINE_CLASSES``) and the one place that builds a task's
pipeline from the already loaded base pipeline (``task_pipeline``): no weight is read twice, and
the offload hooks, memory formats, LoRA adapters and prompt cache that were put on the base
pipeline's modules keep working, because the task pipeline holds the very same modules.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import diffusers

# role (a task's ``pipeline_role``) -> diffusers class name; diffusers 0.42.1
PIPELINE_CLASSES = {
    "text": "FluxPipeline",
    "img2img": "FluxImg2ImgPipeline",
    "inpaint": "FluxInpaintPipeline",
    "fill": "FluxFillPipeline",
    "kontext": "FluxKontextPipeline",
    "control": "FluxControlPipeline",
}

KONTEXT_CLASS = "FluxKontextPipeline"  # model_index.json's _class_name of a Kontext model (its weights have dev's shape)
PACKED_CHANNELS = 64  # 16 latent channels packed 2x2: a plain FLUX.1 transformer's input and output width

# Pipeline-level state that diffusers and localflux keep on the pipeline object rather than on its
# modules: model-offload bookkeeping (``maybe_free_model_hooks`` reads ``_all_hooks``) and
# ``memory.text.install``'s prompt-embedding cache (an instance ``encode_prompt``).
_PIPELINE_STATE = ("_all_hooks", "_offload_device", "_offload_gpu_id", "_exclude_from_cpu_offload", "encode_prompt")


def pipeline_class(role: str):

    try:
        return getattr(diffusers, PIPELINE_CLASSES[role])
    except KeyError:
        raise ValueError(f"FLUX.1 has no pipeline for task role {role!r}") from None


def task_pipeline(pipe, role: str):
    """The pipeline of ``role`` over ``pipe``'s components (the same module objects; nothing reloaded).

    ``cls(**pipe.components)`` rather than ``cls.from_pipe(pipe)``: ``from_pipe`` ends with
    ``new.to(dtype=...)``, which fails on group-offloaded modules and would upcast fp8-stored
    weights, and it copies no pipeline-level offload state. Hooks live on the modules, so
    model/group/sequential offload carries over; the few pipeline-level attributes are copied.
    """
    cls = pipeline_class(role)
    if type(pipe) is cls:
        return pipe
    cached = getattr(pipe, "_localflux_task_pipes", None)
    if cached is None:
        cached = {}
        pipe._localflux_task_pipes = cached
    if role not in cached:

        accepted = inspect.signature(cls.__init__).parameters  # Fill has no IP-adapter image encoder slots
        new = cls(**{name: module for name, module in pipe.components.items() if name in accepted})
        for name in _PIPELINE_STATE:
            if name in pipe.__dict__:
                setattr(new, name, pipe.__dict__[name])
        cached[role] = new
    return cached[role]


def transformer_kind(in_channels: int, out_channels: int | None) -> str:
    """``fill`` (noisy + masked-image latents + mask: 384 = 64 + 64 + 256 for FLUX.1 Fill), ``control``
    (noisy + control latents: 128) or ``base`` (64), from the transformer's input and output widths."""
    out = out_channels or in_channels
    if in_channels >= 3 * out:
        return "fill"
    if in_channels == 2 * out:
        return "control"
    return "base"


def preset_of_folder(root: Path) -> str | None:
    """``fill`` / ``control`` / ``kontext`` from a diffusers folder's own configs, or None (then schnell/dev by guidance)."""
    index = root / "model_index.json"
    if index.is_file():
        try:
            if json.loads(index.read_text()).get("_class_name") == KONTEXT_CLASS:
                return "kontext"
        except (ValueError, OSError):
            pass
    config_file = root / "transformer" / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (ValueError, OSError):
            return None
        return _preset_of_transformer(config.get("in_channels", PACKED_CHANNELS), config.get("out_channels"), root)
    return None


def preset_of_config(config: dict, where: str = "") -> str | None:
    """``fill`` / ``control`` from a transformer config (a single file's inferred shape), else None."""
    return _preset_of_transformer(config.get("in_channels", PACKED_CHANNELS), config.get("out_channels"), where)


def _preset_of_transformer(in_channels: int, out_channels: int | None, where) -> str | None:
    kind = transformer_kind(in_channels, out_channels)
    return kind if kind in ("fill", "control") else None
