"""FLUX.2 weights to a placed pipeline: built-in miniatures, diffusers folders, hub snapshots, BFL single files.

The pure building blocks are ``loading.py`` (which class, which config, single-file plans); this module
turns a ``loader.Source`` into a ``LoadedModel`` and places it (weight formats, offload), as
``flux1/loading.py`` does for FLUX.1. The memory plan's "t5" slot is FLUX.2's one big text encoder
(Qwen3 for klein, Mistral for dev): ``memory.t5 = "fp8-storage"`` and ``memory.t5_device = "cpu"`` apply to it.
"""

from __future__ import annotations

from ...device import Placement
from ...errors import ModelSourceError
from ...loader import LoadedModel, Source, component_files
from ...memory import formats
from ...memory import offload as offload_mod
from . import loading, tiny

BIG_TEXT_ENCODER = "text_encoder"  # FLUX.2 has one text encoder: the memory plan's "t5" slot


def distilled_flag(preset: str) -> bool | None:
    """``is_distilled`` for a klein pipeline from the preset (detected from model_index.json, or set by hand)."""
    return {"klein": True, "klein-base": False}.get(preset)


def load(source: Source, placement: Placement, preset: str, plan=None) -> LoadedModel:
    if plan is not None and (plan.transformer == "nf4" or plan.transformer.startswith("gguf")):
        raise ModelSourceError(f"memory.transformer = {plan.transformer!r} is not available for FLUX.2 models yet; "
                               "use 'full', 'fp8-storage' or 'fp8'")
    if source.kind == "tiny":
        components = tiny.build_tiny_components(source.text)
        fingerprint = tiny.fingerprint(components)
        pipe = tiny.pipeline_class(source.text)(**_with_flag(components, preset))
        if placement.dtype != "float32":  # built in float32
            pipe.to(dtype=placement.torch_dtype)
        return LoadedModel(pipe, source, placement, preset, "none", fingerprint=fingerprint)
    if source.kind == "single_file":
        base = _local(source.base, "model.base")
        try:
            pipe = loading.load_single_file_pipeline(source.path, base, dtype=placement.torch_dtype,
                                                     distilled=distilled_flag(preset))
        except ModelSourceError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelSourceError(f"could not load the FLUX.2 transformer {str(source.path)!r} with base "
                                   f"{str(base)!r}: {_first_line(exc)}") from None
        files = [source.path] + component_files(base, exclude=("transformer",))
        return LoadedModel(pipe, source, placement, preset, "none", files=files)
    folder = _local(source, "model.source")
    try:
        pipe = loading.load_pipeline(folder, dtype=placement.torch_dtype, distilled=distilled_flag(preset))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"could not load the FLUX.2 model in {str(folder)!r}: {_first_line(exc)}; a file may "
                               "be truncated or corrupt: download the model again") from None
    return LoadedModel(pipe, source, placement, preset, "none", files=component_files(folder))


def _with_flag(components: dict, preset: str) -> dict:
    flag = distilled_flag(preset)
    if "is_distilled" in components and flag is not None:
        components = dict(components, is_distilled=flag)
    return components


def _local(source: Source, key: str):
    if source is None or source.kind == "tiny":
        raise ModelSourceError(f"{key} must be a FLUX.2 diffusers folder or hub id for a single-file transformer, "
                               "not a built-in miniature")
    if source.path is None:
        raise ModelSourceError(f"{key} {source.text!r} is not on this machine; download it (`hf download "
                               f"{source.text}`) or pass a local diffusers folder")
    return source.path


def place(pipe, placement: Placement, plan=None) -> None:
    """Weight formats first (fp8 casts on the CPU shrink what moves), then placement (memory/offload.py)."""
    if plan is not None:
        formats.apply_transformer_format(pipe.transformer, plan.transformer, placement.torch_dtype, placement.device)
        formats.apply_t5_format(getattr(pipe, BIG_TEXT_ENCODER), plan.t5, placement.torch_dtype)
    offload = plan.offload if plan is not None else "none"
    offload_mod.place(pipe, placement.device, offload, t5_on_cpu=plan is not None and plan.t5_device == "cpu",
                      group_blocks=plan.group_blocks if plan is not None else 1, big_text=BIG_TEXT_ENCODER)


def task_pipeline(pipe, task: str):
    """The pipeline class of ``task`` over the same components (inpaint: Flux2KleinInpaintPipeline)."""
    return loading.switch_task(pipe, "inpaint" if task == "inpaint" else "text")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0].rstrip(". ")
