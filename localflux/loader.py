"""Model sources -> a loaded pipeline on a device (through its family), plus the files it came from.

Sources (``model.source``):
- a built-in random-weight miniature (``tiny``, ``tiny-dev``, …: each family lists its own);
- a local diffusers folder (``model_index.json``, ``transformer/``, ``vae/``, ...);
- a Hugging Face hub id, looked up in the HF cache first; downloaded only when not cached and the
  hub is reachable (``HF_TOKEN`` for the gated FLUX.1-dev repo);
- a single-file transformer checkpoint (BFL/ComfyUI ``.safetensors`` or diffusers keys, fp8-stored
  weights are upcast on load) with ``model.base`` naming where the other components come from.

``load_model`` always loads; ``model_cache.MODELS`` keeps loaded pipelines per process, keyed by
``model_key`` (everything that changes the loaded weights), and hands them out clean.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import huggingface_hub  # called as huggingface_hub.snapshot_download, so tests can stand in for the hub
from huggingface_hub import errors as hf_errors

from .config import ModelConfig, looks_like_hub_id
from .device import Placement
from .errors import ModelSourceError
from .families import catalog
from .memory.formats import check_runnable
from .memory.plan import MemoryPlan
from .source import Source
from .speed import apply_speed, prepare_lora_hotswap

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from .lora.state import LoraState

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".sft")


@dataclass
class LoadedModel:
    pipe: DiffusionPipeline
    source: Source
    placement: Placement
    preset: str
    offload: str
    family: str = ""  # the family's name (families/)
    files: list[Path] = field(default_factory=list)  # every file whose bytes feed the pixels
    fingerprint: str | None = None  # tiny: sha256 of its in-memory weights
    lora_state: LoraState | None = None  # the LoRAs now in the pipe (None: clean base weights)
    memory_plan: dict | None = None  # the MemoryPlan applied (memory/plan.py), recorded in recipes
    speed: dict | None = None  # what speed.apply_speed applied, recorded in recipes


# ---------------------------------------------------------------- sources


def describe_source(text: str, base: str | None = None, revision: str | None = None, *, download: bool = False) -> Source:
    """Classify ``text`` and check it exists, without loading weights. Built-in names win over paths."""

    if text in catalog.builtin_names():
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
    patterns = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True))
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
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
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




# ---------------------------------------------------------------- loading


def model_key(model: ModelConfig, placement: Placement, preset: str, memory_plan, speed) -> tuple:
    """Everything that changes the loaded weights: the model cache's key for ``load_model``'s result."""
    return (model.source, model.base, model.revision, placement.device, placement.dtype, preset, memory_plan, speed)


def load_model(model: ModelConfig, placement: Placement, *, family, preset: str, memory_plan: MemoryPlan | None = None,
               speed=None) -> LoadedModel:
    """Load the pipeline for ``model`` on ``placement`` afresh (``model_cache.MODELS`` keeps loaded ones).

    ``family`` and ``preset`` come from the plan (detected once, never again here). ``memory_plan``
    picks weight formats and offload; ``speed`` (a ``SpeedConfig``) the fast path. Without them:
    full precision, no offload, eager.
    """
    plan = memory_plan or MemoryPlan()
    source = describe_source(model.source, model.base, model.revision, download=True)
    check_runnable(plan.transformer, placement.device)
    loaded = family.load(source, placement, preset, plan)
    loaded.family = family.name
    loaded.offload = plan.offload
    family.place(loaded.pipe, placement, plan)
    loaded.memory_plan = plan.to_dict()
    if speed is not None:
        prepare_lora_hotswap(loaded.pipe, speed)  # LoRAs, when loaded here, go between these two calls
        loaded.speed = apply_speed(loaded.pipe, speed, placement.device)
    return loaded














def source_files(source: Source) -> list[Path]:
    """The files whose bytes feed the pixels (``LoadedModel.files``), known before loading; none for tiny."""
    if source.kind == "single_file":
        return [source.path] + component_files(source.base.path, exclude=("transformer",))
    return [] if source.kind == "tiny" else component_files(source.path)


def component_files(root: Path | None, exclude: tuple[str, ...] = ()) -> list[Path]:
    """model_index.json and the files of every component folder it names (diffusers' own list)."""
    if root is None:
        return []
    files = [root / "model_index.json"]
    for folder in _component_folders(root):
        if folder in exclude or not (root / folder).is_dir():
            continue
        files += sorted(p for p in (root / folder).iterdir() if p.is_file() and not p.name.startswith("."))
    return files


def _component_folders(root: Path) -> list[str]:
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(index, dict):
        return []
    return sorted(name for name, value in index.items()
                  if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[1])
