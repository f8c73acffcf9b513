"""Model sources -> a ready ``FluxPipeline`` on a device, plus the list of files it came from.

Sources (``model.source``):
- ``tiny`` / ``tiny-schnell`` / ``tiny-dev``: the built-in random-weight miniature (``tiny.py``);
- a local diffusers folder (``model_index.json``, ``transformer/``, ``vae/``, ...);
- a Hugging Face hub id, looked up in the HF cache first; downloaded only when not cached and the
  hub is reachable (``HF_TOKEN`` for the gated FLUX.1-dev repo);
- a single-file transformer checkpoint (BFL/ComfyUI ``.safetensors`` or diffusers keys, fp8-stored
  weights are upcast on load) with ``model.base`` naming where the other components come from.

Loaded pipelines are kept per process, keyed by everything that changes the loaded weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .config import ModelConfig, looks_like_hub_id
from .device import Placement
from .errors import ModelSourceError
from .tiny import TINY_SOURCES, is_tiny

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".sft")
COMPONENT_FOLDERS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
_BFL_KEY = "double_blocks.0.img_attn.norm.key_norm.scale"
_BFL_GUIDANCE = "guidance_in.in_layer.weight"
_DIFFUSERS_KEY = "x_embedder.weight"
_DIFFUSERS_GUIDANCE = "time_text_embed.guidance_embedder.linear_1.weight"


@dataclass(frozen=True)
class Source:
    """Where a model comes from, resolved to local paths where possible."""

    kind: str  # "tiny" | "folder" | "hub" | "single_file"
    text: str  # what the user wrote
    path: Path | None = None  # folder or file on disk (hub: the cached snapshot)
    base: "Source | None" = None  # single_file: the source of the other components


@dataclass
class LoadedModel:
    pipe: object
    source: Source
    placement: Placement
    preset: str
    offload: str
    files: list[Path] = field(default_factory=list)  # every file whose bytes feed the pixels
    fingerprint: str | None = None  # tiny: sha256 of its in-memory weights
    lora_state: object = None  # lora.apply.LoraState: the LoRAs now in the pipe (None: clean base weights)
    memory_plan: dict | None = None  # the MemoryPlan applied (memory/plan.py), recorded in recipes
    speed: dict | None = None  # what speed.apply_speed applied, recorded in recipes


_PIPELINES: dict[tuple, LoadedModel] = {}


# ---------------------------------------------------------------- sources


def describe_source(text: str, base: str | None = None, revision: str | None = None, *, download: bool = False) -> Source:
    """Classify ``text`` and check it exists, without loading weights."""
    if is_tiny(text):
        return Source("tiny", text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            missing = "model_index.json"
            raise ModelSourceError(f"model folder {text!r} is not a diffusers FLUX folder (no {missing}); "
                                   "point --model at the folder that holds model_index.json, transformer/ and vae/")
        for part in ("transformer", "vae"):
            if not (path / part).is_dir():
                raise ModelSourceError(f"model folder {text!r} has no {part}/ folder; it is not a complete diffusers FLUX model")
        return Source("folder", text, path)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES + (".gguf",):
            raise ModelSourceError(f"model file {text!r} is not a .safetensors or .gguf checkpoint; localflux loads "
                                   "single files, diffusers folders or hub ids")
        if not base:
            raise ModelSourceError(f"single-file checkpoint {text!r} needs model.base (--base): a diffusers FLUX folder "
                                   "or hub id that provides the VAE, text encoders and tokenizers")
        return Source("single_file", text, path, base=describe_source(base, revision=revision, download=download))
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES + (".gguf",):
        raise ModelSourceError(f"model file {text!r} does not exist; check the path, or download the checkpoint there")
    if path.parent != Path(".") and path.parent.is_dir():
        # "weights/FLUX.1-dev" where weights/ exists is a folder the user meant, not a hub id
        raise ModelSourceError(f"model folder {text!r} does not exist; put a diffusers FLUX folder there "
                               f"(e.g. `hf download black-forest-labs/FLUX.1-dev --local-dir {text}`) or pass a hub id")
    if looks_like_hub_id(text) and not text.startswith((".", "/", "~")):
        return Source("hub", text, _cached_snapshot(text, revision, download=download))
    raise ModelSourceError(f"model {text!r} was not found: it is neither an existing folder or file nor a hub id "
                           "(org/name); check the path")


# Set while replaying: nothing may be downloaded, whatever the recipe names (see replay.py).
_NO_DOWNLOADS: contextvars.ContextVar[bool] = contextvars.ContextVar("localflux_no_downloads", default=False)


@contextlib.contextmanager
def no_downloads():
    """Within this block a model missing from the Hugging Face cache is an error, never a download."""
    token = _NO_DOWNLOADS.set(True)
    try:
        yield
    finally:
        _NO_DOWNLOADS.reset(token)


def _cached_snapshot(repo_id: str, revision: str | None, *, download: bool) -> Path | None:
    """The local snapshot folder of a hub repo: from the cache, or downloaded when allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    patterns = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True))
    except (hf_errors.LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if not download:
        return None  # dry runs and descriptions must not download anything
    if _NO_DOWNLOADS.get():
        raise ModelSourceError(f"model {repo_id!r} is not in the Hugging Face cache and replay never downloads; "
                               f"get it with `hf download {repo_id}` (or `localflux generate --model {repo_id} ...` "
                               "once) and replay again")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    how = (f"download it where a network is available (`hf download {repo_id}`) and copy the Hugging Face cache here, "
           "or pass a local diffusers folder with --model")
    if offline:
        raise ModelSourceError(f"model {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {how}")
    try:
        log.warning("downloading %s into the Hugging Face cache (tens of GB for FLUX)", repo_id)
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except hf_errors.GatedRepoError:
        raise ModelSourceError(f"model {repo_id!r} is gated: accept its license on huggingface.co and set HF_TOKEN "
                               "to a token of that account, then run again") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelSourceError(f"model {repo_id!r} was not found on the hub (or it is private and HF_TOKEN is not set); "
                               "check the id") from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise ModelSourceError(f"the hub refused {repo_id!r} (401): set HF_TOKEN to a token that may read it") from None
        raise ModelSourceError(f"could not download {repo_id!r} ({exc.__class__.__name__}); {how}") from None
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model {repo_id!r} is not cached and the hub cannot be reached "
                               f"({exc.__class__.__name__}); {how}") from None


def detect_preset(source: Source) -> str:
    """``schnell`` or ``dev``: from the transformer's guidance embedding, else from the name."""
    if source.kind == "tiny":
        return TINY_SOURCES[source.text]
    if source.kind == "single_file" and source.path.suffix.lower() == ".gguf":
        from .memory.formats import gguf_has_guidance, inspect_gguf

        inspect_gguf(source.path)  # refuses a GGUF that is not a FLUX transformer, in one line
        return "dev" if gguf_has_guidance(source.path) else "schnell"
    if source.kind == "single_file":
        keys = _safetensors_keys(source.path)
        _require_flux_keys(source.path, keys)  # refuse a VAE/LoRA/encoder file before anything is written
        return "dev" if any(k.endswith((_BFL_GUIDANCE, _DIFFUSERS_GUIDANCE)) for k in keys) else "schnell"
    if source.path is not None:
        config_file = source.path / "transformer" / "config.json"
        if config_file.is_file():
            return "dev" if json.loads(config_file.read_text()).get("guidance_embeds") else "schnell"
    return "schnell" if "schnell" in source.text.lower() else "dev"


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # safetensors raises several types for truncated/corrupt headers
        raise ModelSourceError(f"{str(path)!r} is not a readable .safetensors file ({exc}); re-download it") from None


# ---------------------------------------------------------------- loading


def load_model(model: ModelConfig, placement: Placement, offload: str = "none", *, memory_plan=None,
               speed=None, cache: bool = True) -> LoadedModel:
    """The pipeline for ``model`` on ``placement``; reused within the process when already loaded.

    ``memory_plan`` (a ``memory.plan.MemoryPlan``) picks weight formats and offload; ``speed`` (a
    ``SpeedConfig``) the fast path. Without them: full precision, ``offload``, eager.
    ``cache=False`` loads a private copy, neither taken from nor kept in the cache (training
    attaches adapters to it, which later renders in the same process must not see).
    """
    from .memory.formats import check_runnable
    from .memory.plan import MemoryPlan

    plan = memory_plan or MemoryPlan(offload=offload)
    key = (model.source, model.base, model.revision, placement.device, placement.dtype, plan, speed)
    if cache and key in _PIPELINES:
        return _PIPELINES[key]
    source = describe_source(model.source, model.base, model.revision, download=True)
    preset = detect_preset(source)
    check_runnable(plan.transformer, placement.device)
    loaded = _load(source, placement, preset, plan)
    loaded.offload = plan.offload
    _place(loaded.pipe, placement, plan.offload, plan)
    loaded.memory_plan = plan.to_dict()
    if speed is not None:
        from .speed import apply_speed, prepare_lora_hotswap

        prepare_lora_hotswap(loaded.pipe, speed)  # LoRAs, when loaded here, go between these two calls
        loaded.speed = apply_speed(loaded.pipe, speed, placement.device)
    if cache:
        _PIPELINES[key] = loaded
    return loaded


def clear_cache() -> None:
    _PIPELINES.clear()


def discard(model: LoadedModel) -> None:
    """Forget a cached pipeline whose weights were changed (fused LoRAs): the next load reads it afresh."""
    for key, cached in list(_PIPELINES.items()):
        if cached is model:
            del _PIPELINES[key]


def _load(source: Source, placement: Placement, preset: str, plan=None) -> LoadedModel:
    from .hashing import sha256_state_dict

    if plan is not None and plan.transformer == "nf4":
        return _load_nf4(source, placement, preset)
    if source.kind == "tiny":
        from .tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(TINY_SOURCES[source.text])
        if placement.dtype != "float32":  # built in float32
            pipe.to(dtype=placement.torch_dtype)
        fingerprint = sha256_state_dict({f"{name}.{k}": v for name in ("transformer", "vae", "text_encoder", "text_encoder_2")
                                         for k, v in getattr(pipe, name).state_dict().items()})
        return LoadedModel(pipe, source, placement, preset, "none", fingerprint=fingerprint)
    if source.kind == "single_file":
        transformer = _load_single_file_transformer(source, placement, preset)
        pipe = _from_pretrained(source.base, placement, transformer=transformer)
        files = [source.path] + _component_files(source.base.path, exclude=("transformer",))
        return LoadedModel(pipe, source, placement, preset, "none", files=files)
    pipe = _from_pretrained(source, placement)
    return LoadedModel(pipe, source, placement, preset, "none", files=_component_files(source.path))


def _from_pretrained(source: Source, placement: Placement, **components):
    from diffusers import FluxPipeline

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
    from tempfile import TemporaryDirectory

    from . import single_file

    gguf = source.path.suffix.lower() == ".gguf"
    if not gguf:
        _require_flux_keys(source.path, _safetensors_keys(source.path))
    base_root = _transformer_config_root(source, preset)
    base_config = json.loads((base_root / "transformer" / "config.json").read_text())
    # the file's own shape (block counts, widths, guidance) with the base config for the rest
    config = single_file.transformer_config(source.path, base_config, source.base.path if source.base else None)
    with TemporaryDirectory(prefix="localflux-config-") as folder:
        (Path(folder) / "transformer").mkdir()
        (Path(folder) / "transformer" / "config.json").write_text(json.dumps(dict(config, _class_name="FluxTransformer2DModel")))
        if gguf:
            from .memory.formats import load_gguf_transformer

            return load_gguf_transformer(source.path, Path(folder), placement.torch_dtype)
        return _from_single_file(source, config, folder, placement, quantization)


def _from_single_file(source: Source, config: dict, config_root: str, placement: Placement, quantization: dict):
    from diffusers import FluxTransformer2DModel

    from . import single_file

    checkpoint = str(source.path)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    try:
        if single_file.layout_of(single_file.tensor_shapes(source.path)) == "bfl" and width != single_file.FLUX1_WIDTH:
            from safetensors.torch import load_file

            checkpoint = single_file.bfl_to_diffusers(load_file(str(source.path)), config)  # diffusers' assumes 3072
        return FluxTransformer2DModel.from_single_file(
            checkpoint, config=config_root, subfolder="transformer", torch_dtype=placement.torch_dtype,
            **quantization,
        )
    except (OSError, ValueError, KeyError, RuntimeError, IndexError) as exc:
        raise ModelSourceError(f"could not load transformer checkpoint {str(source.path)!r}: "
                               f"{str(exc).splitlines()[0]}; is it a FLUX.1 transformer matching model.base?") from None


def _require_flux_keys(path: Path, keys: list[str]) -> None:
    if not any(k.endswith((_BFL_KEY, _DIFFUSERS_KEY)) for k in keys):
        raise ModelSourceError(f"{str(path)!r} is not a FLUX.1 transformer checkpoint (no FLUX transformer keys "
                               "found); pass the transformer file, not a VAE, LoRA or text encoder")


def _transformer_config_root(source: Source, preset: str) -> Path:
    """The base model's own transformer config when it has one, else the packaged published config."""
    base = source.base.path if source.base else None
    if base is not None and (base / "transformer" / "config.json").is_file():
        return base
    name = "FLUX.1-dev" if preset == "dev" else "FLUX.1-schnell"
    return Path(str(resources.files("localflux").joinpath("flux_configs", name)))


def source_files(source: Source) -> list[Path]:
    """The files whose bytes feed the pixels (``LoadedModel.files``), known before loading; none for tiny."""
    if source.kind == "single_file":
        return [source.path] + _component_files(source.base.path, exclude=("transformer",))
    return [] if source.kind == "tiny" else _component_files(source.path)


def _component_files(root: Path | None, exclude: tuple[str, ...] = ()) -> list[Path]:
    if root is None:
        return []
    files = [root / "model_index.json"]
    for folder in COMPONENT_FOLDERS:
        if folder in exclude or not (root / folder).is_dir():
            continue
        files += sorted(p for p in (root / folder).iterdir() if p.is_file() and not p.name.startswith("."))
    return files


def _load_nf4(source: Source, placement: Placement, preset: str) -> LoadedModel:
    """NF4 is quantized while loading (bitsandbytes), so it has its own path."""
    from diffusers import FluxTransformer2DModel

    from .memory.formats import nf4_config

    quantization = {"quantization_config": nf4_config(placement.torch_dtype)}
    if source.kind == "tiny":
        raise ModelSourceError("memory.transformer = 'nf4' needs weights from a folder, hub id or single file, not 'tiny'")
    if source.kind == "single_file":
        transformer = _load_single_file_transformer(source, placement, preset, **quantization)
        pipe = _from_pretrained(source.base, placement, transformer=transformer)
        files = [source.path] + _component_files(source.base.path, exclude=("transformer",))
        return LoadedModel(pipe, source, placement, preset, "none", files=files)
    if source.path is None:
        source = describe_source(source.text, download=True)
    transformer = FluxTransformer2DModel.from_pretrained(str(source.path), subfolder="transformer",
                                                         torch_dtype=placement.torch_dtype, **quantization)
    pipe = _from_pretrained(source, placement, transformer=transformer)
    return LoadedModel(pipe, source, placement, preset, "none", files=_component_files(source.path))


def _place(pipe, placement: Placement, offload: str, plan=None) -> None:
    """Weight formats first (fp8 casts on the CPU shrink what moves), then placement (memory/offload.py)."""
    from .memory import formats, offload as offload_mod, text

    if plan is not None:
        formats.apply_transformer_format(pipe.transformer, plan.transformer, placement.torch_dtype, placement.device)
        formats.apply_t5_format(pipe.text_encoder_2, plan.t5, placement.torch_dtype)
    t5_on_cpu = plan is not None and plan.t5_device == "cpu"
    # diffusers wants an explicit device for offload when there is no accelerator (CPU wiring tests).
    offload_mod.place(pipe, placement.device, offload, t5_on_cpu=t5_on_cpu,
                      group_blocks=plan.group_blocks if plan is not None else 1)
    if plan is not None:
        text.install(pipe, cache=plan.cache_t5, t5_dtype=placement.torch_dtype if plan.t5 != "full" else None)
