"""Build the right diffusers FLUX.2 pipeline from a model folder, or a single-file transformer + a base folder.

Pure functions, no caches. What decides what:

* klein vs dev: the transformer config's ``guidance_embeds`` (dev has a guidance embedder; diffusers
  defaults the key to true when absent, as in the published FLUX.2-dev config) - never the folder name;
* distilled vs base (klein): ``model_index.json``'s ``is_distilled`` (absent = base, CFG on) - never the name;
* task: ``text`` / ``reference`` -> ``Flux2KleinPipeline`` / ``Flux2Pipeline``; ``inpaint`` ->
  ``Flux2KleinInpaintPipeline`` (klein only: diffusers has no FLUX.2 [dev] inpaint pipeline).

Dev folders are built from components: the published tokenizer entry is ``PixtralProcessor``, which needs
torchvision in transformers 5, so ``Flux2Pipeline.from_pretrained(folder)`` cannot be relied on; the
tokenizer is read with ``AutoTokenizer.from_pretrained(folder / "tokenizer")`` (a ByteLevel tokenizer.json).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinInpaintPipeline,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
)
from transformers import AutoTokenizer, Mistral3ForConditionalGeneration

from ...memory.formats import gguf_quantization
from . import single_file

TASKS = ("text", "reference", "inpaint")
KLEIN_LAYERS = (9, 18, 27)
DEV_LAYERS = (10, 20, 30)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def model_index(folder) -> dict:
    return read_json(Path(folder) / "model_index.json")


def is_distilled(folder) -> bool:
    """klein distilled (4 steps, no CFG) vs base, from model_index.json (absent key = base, as in diffusers)."""
    return bool(model_index(folder).get("is_distilled", False))


def kind_of_transformer_config(config: dict) -> str:
    """``"dev"`` when the transformer has a guidance embedder, else ``"klein"``."""
    return "dev" if config.get("guidance_embeds", True) else "klein"


def kind_of_folder(folder) -> str:
    folder = Path(folder)
    config_file = folder / "transformer" / "config.json"
    if config_file.is_file():
        return kind_of_transformer_config(read_json(config_file))
    # a base folder without a transformer (VAE + text encoder only): the pipeline class says it
    return "dev" if model_index(folder).get("_class_name") == "Flux2Pipeline" else "klein"


def pipeline_class(kind: str, task: str = "text"):

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    if kind == "dev":
        if task == "inpaint":
            raise ValueError("FLUX.2 [dev] has no inpaint pipeline in diffusers (Flux2KleinInpaintPipeline is klein only)")
        return Flux2Pipeline
    return Flux2KleinInpaintPipeline if task == "inpaint" else Flux2KleinPipeline


def default_text_layers(kind: str) -> tuple[int, ...]:
    return DEV_LAYERS if kind == "dev" else KLEIN_LAYERS


def load_pipeline(folder, *, task: str = "text", dtype=None, disable_mmap: bool = False,
                  transformer=None, distilled: bool | None = None):
    """A FLUX.2 pipeline from a local diffusers folder (offline).

    ``transformer`` replaces the folder's (single-file loading); ``distilled`` overrides model_index.json's
    ``is_distilled`` (a single file cannot say which it is). ``disable_mmap`` makes CPU loads bit-exact with
    the in-memory model (it applies to the diffusers models; transformers models load their own way).
    """

    folder = Path(folder)
    dtype = dtype or torch.float32
    kind = kind_of_transformer_config(dict(transformer.config)) if transformer is not None else kind_of_folder(folder)
    cls = pipeline_class(kind, task)
    extra = {} if transformer is None else {"transformer": transformer}
    if kind == "dev":
        return cls(**_dev_components(folder, dtype, disable_mmap, transformer))
    flag = is_distilled(folder) if distilled is None else distilled
    return cls.from_pretrained(folder, dtype=dtype, disable_mmap=disable_mmap, is_distilled=flag,
                               local_files_only=True, **extra)


def _dev_components(folder: Path, dtype, disable_mmap: bool, transformer) -> dict:

    common = {"dtype": dtype, "disable_mmap": disable_mmap, "local_files_only": True}
    if transformer is None:
        transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", **common)
    return {
        "transformer": transformer,
        "vae": AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", **common),
        "text_encoder": Mistral3ForConditionalGeneration.from_pretrained(folder / "text_encoder", dtype=dtype,
                                                                         local_files_only=True),
        "tokenizer": AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        "scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler",
                                                                     local_files_only=True),
    }


def text_width(base_folder) -> int | None:
    """The hidden size of the base's text encoder (Qwen3: ``hidden_size``; Mistral3: ``text_config``)."""
    file = Path(base_folder) / "text_encoder" / "config.json"
    if not file.is_file():
        return None
    config = read_json(file)
    return (config.get("text_config") or {}).get("hidden_size") or config.get("hidden_size")


def single_file_plan(path, base_folder) -> dict:
    """What loading ``path`` with ``base_folder`` will do (no weights read).

    Returns ``kind`` (klein/dev), ``config`` (a local config folder with a ``transformer/`` subfolder:
    the base's own transformer config when it has one, else the shipped published config that matches the
    file's shapes, else the closest of its kind), ``overrides`` (fields where the file differs from that
    config, passed to ``from_single_file`` as keyword arguments) and ``inferred`` (what the shapes say).
    """
    base_folder = Path(base_folder)
    inferred = single_file.infer_config(single_file.tensor_shapes(path))
    kind = "dev" if inferred["guidance_embeds"] else "klein"
    base_kind = kind_of_folder(base_folder)
    if base_kind != kind:
        raise ValueError(f"{str(path)!r} is a FLUX.2 {kind} transformer but the base folder is FLUX.2 {base_kind}")
    width = text_width(base_folder)
    layers = len(default_text_layers(kind))
    if width is not None and width * layers != inferred["joint_attention_dim"]:
        raise ValueError(f"{str(path)!r} reads {inferred['joint_attention_dim']}-wide text features, but the base's "
                         f"text encoder gives {layers} x {width} = {width * layers}; it belongs to another model")
    own = base_folder / "transformer" / "config.json"
    if own.is_file():
        config_dir, config = base_folder, read_json(own)
        overrides = {k: v for k, v in inferred.items() if config.get(k) != v}
    else:
        with resources.as_file(config_root()) as root:
            name, overrides = single_file.pick_config(inferred, Path(root))
            config_dir = Path(root) / name
            config = read_json(config_dir / "transformer" / "config.json")
    axes = config.get("axes_dims_rope", (32, 32, 32, 32))
    if sum(axes) != inferred["attention_head_dim"]:
        raise ValueError(f"{str(path)!r} has attention heads of {inferred['attention_head_dim']} channels, but the "
                         f"RoPE axes of {config_dir} sum to {sum(axes)}; use a base whose transformer config "
                         "matches the checkpoint")
    return {"kind": kind, "config": str(config_dir), "overrides": overrides, "inferred": inferred}


def load_single_file_transformer(path, *, config: str, overrides: dict, dtype=None, disable_mmap: bool = False):
    """``Flux2Transformer2DModel.from_single_file`` offline: ``config`` is a folder with ``transformer/config.json``.

    diffusers detects every FLUX.2 file as "flux-2-dev"; ``config=`` decides the shape, and keyword arguments
    that name config fields (``overrides``) replace the loaded config's values. BFL keys are converted by
    diffusers (width-agnostic); a file already in diffusers keys is loaded as is.
    """

    extra = {}
    if str(path).lower().endswith(".gguf"):  # diffusers 0.42.1 loads FLUX.2 GGUF files (checked on tiny-flux2)

        extra = {"quantization_config": gguf_quantization(dtype or torch.float32), "torch_dtype": dtype or torch.float32}
    else:
        extra = {"dtype": dtype or torch.float32, "disable_mmap": disable_mmap}
    return Flux2Transformer2DModel.from_single_file(
        str(path), config=str(config), subfolder="transformer", local_files_only=True, **extra, **overrides)


def load_single_file_pipeline(path, base_folder, *, task: str = "text", dtype=None, disable_mmap: bool = False,
                              distilled: bool | None = None):
    """A BFL (or diffusers-key) single-file FLUX.2 transformer with the VAE / text encoder / tokenizer of
    ``base_folder``. The config comes from the file's shapes; ``distilled`` defaults to the base's flag."""
    plan = single_file_plan(path, base_folder)
    transformer = load_single_file_transformer(path, config=plan["config"], overrides=plan["overrides"],
                                               dtype=dtype, disable_mmap=disable_mmap)
    return load_pipeline(base_folder, task=task, dtype=dtype, disable_mmap=disable_mmap, transformer=transformer,
                         distilled=distilled)


def switch_task(pipe, task: str):
    """The same components under another task's pipeline class (no copies; ``is_distilled`` carried over)."""
    kind = kind_of_transformer_config(dict(pipe.transformer.config))
    cls = pipeline_class(kind, task)
    if type(pipe) is cls:
        return pipe
    components = {name: getattr(pipe, name) for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}
    if kind == "klein":
        components["is_distilled"] = bool(pipe.config.is_distilled)
    return cls(**components)


def config_root():
    return resources.files("localflux.families.flux2").joinpath("configs")
