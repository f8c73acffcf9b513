"""FLUX.2 weights to a placed pipeline: built-in miniatures, diffusers folders, hub snapshots, BFL single files.

The pure building blocks are ``loading.py`` (which class, which config, single-file plans); this module
turns a ``loader.Source`` into a ``LoadedModel`` and places it (weight formats, offload), as
``flux1/loading.py`` does for FLUX.1. The memory plan's "t5" slot is FLUX.2's one big text encoder
(Qwen3 for klein, Mistral for dev): ``memory.t5 = "fp8-storage"`` and ``memory.t5_device = "cpu"`` apply to it.
"""

from __future__ import annotations

from diffusers import Flux2Transformer2DModel

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
    if plan is not None and plan.transformer == "nf4" and source.kind in ("tiny", "single_file"):
        raise ModelSourceError("memory.transformer = 'nf4' for FLUX.2 needs a diffusers folder or hub id (it is "
                                   "quantized while loading); for a single file use a GGUF transformer instead")
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
        transformer = _nf4_transformer(folder, placement) if plan is not None and plan.transformer == "nf4" else None
        pipe = loading.load_pipeline(folder, dtype=placement.torch_dtype, distilled=distilled_flag(preset),
                                     transformer=transformer)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"could not load the FLUX.2 model in {str(folder)!r}: {_first_line(exc)}; a file may "
                               "be truncated or corrupt: download the model again") from None
    return LoadedModel(pipe, source, placement, preset, "none", files=component_files(folder))


def _nf4_transformer(folder, placement: Placement):
    """The folder's transformer quantized to NF4 while loading (bitsandbytes, CUDA; formats.check_runnable
    has refused it elsewhere before this point)."""

    return Flux2Transformer2DModel.from_pretrained(str(folder), subfolder="transformer",
                                                   torch_dtype=placement.torch_dtype,
                                                   quantization_config=formats.nf4_config(placement.torch_dtype))


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
    text_on_cpu = plan is not None and plan.t5_device == "cpu"
    offload_mod.place(pipe, placement.device, offload, t5_on_cpu=text_on_cpu,
                      group_blocks=plan.group_blocks if plan is not None else 1, big_text=BIG_TEXT_ENCODER)
    if text_on_cpu:
        encode_on_cpu(pipe)
    if plan is not None and plan.t5 != "full":
        embeds_in(pipe, placement.torch_dtype)


_EMBEDDERS = ("_get_qwen3_prompt_embeds", "_get_mistral_3_small_prompt_embeds")


def embeds_in(pipe, dtype) -> None:
    """Prompt embeddings in the compute dtype when the text encoder's weights are stored in fp8.

    Both FLUX.2 pipelines cast the embeddings to ``text_encoder.dtype``, which layerwise casting reports as
    the fp8 storage dtype (a second rounding, and fp8 noise that CPU kernels cannot draw).
    """
    for name in _EMBEDDERS:
        original = getattr(pipe, name, None)
        if original is not None:
            def embedder(*args, _original=original, **kwargs):
                kwargs["dtype"] = dtype
                return _original(*args, **kwargs)

            setattr(pipe, name, embedder)


def encode_on_cpu(pipe) -> None:
    """Prompts encoded by the text encoder where it sits (system memory), embeddings moved to the denoiser.

    Flux2Pipeline / Flux2KleinPipeline move the token ids to the execution device before calling the text
    encoder; with the encoder kept on the CPU (``memory.t5_device = "cpu"``) they must stay there instead.
    """
    original = pipe.encode_prompt

    def encode_prompt(prompt=None, device=None, *args, **kwargs):
        target = device or pipe._execution_device
        embeds, ids = original(prompt, getattr(pipe, BIG_TEXT_ENCODER).device, *args, **kwargs)
        return embeds.to(target), ids.to(target)

    pipe.encode_prompt = encode_prompt


def task_pipeline(pipe, task: str):
    """The pipeline class of ``task`` over the same components (inpaint: Flux2KleinInpaintPipeline)."""
    return loading.switch_task(pipe, "inpaint" if task == "inpaint" else "text")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0].rstrip(". ")
