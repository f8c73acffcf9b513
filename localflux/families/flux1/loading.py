"""Loading FLUX.1 weights: built-in miniatures, diffusers folders, hub snapshots, single files, NF4.

The generic loader (``loader.py``) resolves the source and owns the cache; this module turns a
source into a ``FluxPipeline`` and places it (weight formats, offload, the T5 embedding cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING

from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors.torch import load_file

from ...device import Placement
from ...errors import ModelSourceError, first_line
from ...hashing import sha256_state_dict
from ...loader import LoadedModel, Source, component_files, describe_source
from ...memory import formats
from ...memory import offload as offload_mod
from ...memory.formats import load_gguf_transformer, nf4_config
from ...weightfile import safetensors_keys
from . import single_file, text_cache
from .presets import BUILTIN, config_root
from .tiny import build_tiny_pipeline

if TYPE_CHECKING:
    from ...memory.plan import MemoryPlan

_BFL_KEY = "double_blocks.0.img_attn.norm.key_norm.scale"
_DIFFUSERS_KEY = "x_embedder.weight"


def load(source: Source, placement: Placement, preset: str, memory_plan: MemoryPlan | None = None) -> LoadedModel:
    if memory_plan is not None and memory_plan.transformer == "nf4":
        return _load_nf4(source, placement, preset)
    if source.kind == "tiny":
        pipe = build_tiny_pipeline(BUILTIN[source.text])
        if placement.dtype != "float32":  # built in float32
            pipe.to(dtype=placement.torch_dtype)
        fingerprint = sha256_state_dict({f"{name}.{k}": v for name in ("transformer", "vae", "text_encoder", "text_encoder_2")
                                         for k, v in getattr(pipe, name).state_dict().items()})
        return LoadedModel(pipe, source, placement, preset, "none", fingerprint=fingerprint)
    if source.kind == "single_file":
        transformer = _load_single_file_transformer(source, placement, preset)
        pipe = _from_pretrained(source.base, placement, transformer=transformer)
        files = [source.path] + component_files(source.base.path, exclude=("transformer",))
        return LoadedModel(pipe, source, placement, preset, "none", files=files)
    pipe = _from_pretrained(source, placement)
    return LoadedModel(pipe, source, placement, preset, "none", files=component_files(source.path))


def _from_pretrained(source: Source, placement: Placement, **components):
    if source.kind == "tiny":
        raise ModelSourceError("model.base cannot be 'tiny'; use a diffusers folder or hub id")
    if source.path is None:
        source = describe_source(source.text, download=True)
    try:
        return FluxPipeline.from_pretrained(str(source.path), dtype=placement.torch_dtype, **components)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(f"could not load the FLUX model in {str(source.path)!r}: {exc}".split("\n")[0].rstrip(". ")
                               + "; a file may be truncated or corrupt: download the model again") from None


def _load_single_file_transformer(source: Source, placement: Placement, preset: str, **quantization):
    gguf = source.path.suffix.lower() == ".gguf"
    if not gguf:
        require_flux_keys(source.path, safetensors_keys(source.path))
    base_root = _transformer_config_root(source, preset)
    base_config = json.loads((base_root / "transformer" / "config.json").read_text())
    # the file's own shape (block counts, widths, guidance) with the base config for the rest
    config = single_file.transformer_config(source.path, base_config, source.base.path if source.base else None)
    with TemporaryDirectory(prefix="localflux-config-") as folder:
        (Path(folder) / "transformer").mkdir()
        (Path(folder) / "transformer" / "config.json").write_text(json.dumps(dict(config, _class_name="FluxTransformer2DModel")))
        if gguf:
            return load_gguf_transformer(source.path, Path(folder), placement.torch_dtype)
        return _from_single_file(source, config, folder, placement, quantization)


def _from_single_file(source: Source, config: dict, config_root: str, placement: Placement, quantization: dict):
    checkpoint = str(source.path)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    try:
        if single_file.layout_of(single_file.tensor_shapes(source.path)) == "bfl" and width != single_file.FLUX1_WIDTH:
            checkpoint = single_file.bfl_to_diffusers(load_file(str(source.path)), config)  # diffusers' assumes 3072
        return FluxTransformer2DModel.from_single_file(
            checkpoint, config=config_root, subfolder="transformer", torch_dtype=placement.torch_dtype,
            **quantization,
        )
    except (OSError, ValueError, KeyError, RuntimeError, IndexError) as exc:
        raise ModelSourceError(f"could not load transformer checkpoint {str(source.path)!r}: "
                               f"{first_line(exc)}; is it a FLUX.1 transformer matching model.base?") from None


def require_flux_keys(path: Path, keys: list[str]) -> None:
    if not any(k.endswith((_BFL_KEY, _DIFFUSERS_KEY)) for k in keys):
        raise ModelSourceError(f"{str(path)!r} is not a FLUX.1 transformer checkpoint (no FLUX transformer keys "
                               "found); pass the transformer file, not a VAE, LoRA or text encoder")


def _transformer_config_root(source: Source, preset: str) -> Path:
    """The base model's own transformer config when it has one, else the packaged published config."""
    base = source.base.path if source.base else None
    if base is not None and (base / "transformer" / "config.json").is_file():
        return base
    return config_root(preset, "transformer")


def _load_nf4(source: Source, placement: Placement, preset: str) -> LoadedModel:
    """NF4 is quantized while loading (bitsandbytes), so it has its own path."""
    quantization = {"quantization_config": nf4_config(placement.torch_dtype)}
    if source.kind == "tiny":
        raise ModelSourceError("memory.transformer = 'nf4' needs weights from a folder, hub id or single file, not 'tiny'")
    if source.kind == "single_file":
        transformer = _load_single_file_transformer(source, placement, preset, **quantization)
        pipe = _from_pretrained(source.base, placement, transformer=transformer)
        files = [source.path] + component_files(source.base.path, exclude=("transformer",))
        return LoadedModel(pipe, source, placement, preset, "none", files=files)
    if source.path is None:
        source = describe_source(source.text, download=True)
    transformer = FluxTransformer2DModel.from_pretrained(str(source.path), subfolder="transformer",
                                                         torch_dtype=placement.torch_dtype, **quantization)
    pipe = _from_pretrained(source, placement, transformer=transformer)
    return LoadedModel(pipe, source, placement, preset, "none", files=component_files(source.path))


def place(pipe, placement: Placement, offload: str, memory_plan: MemoryPlan | None = None) -> None:
    """Weight formats first (fp8 casts on the CPU shrink what moves), then placement (memory/offload.py)."""
    if memory_plan is not None:
        formats.apply_transformer_format(pipe.transformer, memory_plan.transformer, placement.torch_dtype, placement.device)
        formats.apply_t5_format(pipe.text_encoder_2, memory_plan.t5, placement.torch_dtype)
    t5_on_cpu = memory_plan is not None and memory_plan.t5_device == "cpu"
    # diffusers wants an explicit device for offload when there is no accelerator (CPU wiring tests).
    offload_mod.place(pipe, placement.device, offload, t5_on_cpu=t5_on_cpu,
                      group_blocks=memory_plan.group_blocks if memory_plan is not None else 1)
    if memory_plan is not None:
        text_cache.install(pipe, cache=memory_plan.cache_t5, t5_dtype=placement.torch_dtype if memory_plan.t5 != "full" else None)
