"""Re-render an image from the recipe embedded in it, with the decisions recorded there."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import config as config_mod
from . import pipeline
from .errors import ConfigError, ModelSourceError, RecipeError, WeightsMismatchError
from .families.registry import FAMILIES
from .hashing import sha256_file
from .loader import describe_source, no_downloads, source_files
from .memory.resolve import plan_to_config_keys
from .output import ensure_output_dir
from .recipe import read_recipe
from .tasks.images import check_recorded_inputs
from .upscale import upscale_pil
from .upscale.detail import check_step, replay_detail
from .upscale.stage import ALPHA_MODES, MAX_SCALE, MIN_SCALE, RECORDLESS_ALPHA

log = logging.getLogger(__name__)


@dataclass
class Replay:
    image: Image.Image
    recipe: dict
    path: Path | None
    max_difference: int  # largest per-channel difference from the original file, in levels
    differing_pixels: int

    @property
    def identical(self) -> bool:
        return self.max_difference == 0


def recipe_config(recipe: dict, device: str | None = None) -> config_mod.Config:
    """The config that reproduces the recipe's forward pass (its whole batch when it was batched)."""
    batch_seeds = recipe["decisions"].get("batch_seeds") or [recipe["seed"]]
    data = dict(recipe["config"])
    # where the original was saved is never where a replay goes (that is --out): only the label setting is kept
    output = data.get("output")
    data["output"] = {"label": output["label"]} if isinstance(output, dict) and "label" in output else {}
    overrides = {
        "sampling.seed": batch_seeds[0],
        "sampling.count": len(batch_seeds),
        "sampling.batch_size": len(batch_seeds),
        "memory.vae_tiling": "on" if recipe["decisions"]["vae_tiling"] else "off",
        "memory.offload": recipe["decisions"]["offload"],
        "model.device": device or recipe["device"],
        "model.dtype": recipe["dtype"],
        "upscale.enabled": False,  # every recorded upscale step is redone from its record instead
    }
    # the recorded final texts, not the parts: a later phrase library must not change the prompt
    family = FAMILIES.by_name(recipe["model"]["family"])
    overrides.update(family.recorded_prompt_keys(recipe["prompt"]))
    if recipe.get("loras"):  # replay with the recorded fuse mode (fused and unfused differ by rounding)
        overrides["lora_options.fuse"] = recipe["loras"][0]["fuse"]
    if recipe["decisions"].get("memory"):  # the recorded plan, never a new automatic choice

        overrides.update(plan_to_config_keys(recipe["decisions"]["memory"]))
    return config_mod.replace(config_mod.config_from_dict(data, origin="recipe"), **overrides)


# What a recipe may name, by role: a file of another kind is refused without being opened or hashed.
# weights, configs, tokenizers (vocabularies, merges, SentencePiece models, chat templates)
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".gguf", ".bin", ".json", ".txt", ".model", ".jinja", ".tiktoken")
LORA_SUFFIXES = (".safetensors", ".sft", ".pt", ".ckpt", ".pth", ".bin")
UPSCALER_SUFFIXES = (".safetensors", ".pth", ".pt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".avif")


def _never_downloads(recipe: dict) -> str:
    source = recipe["model"].get("source")
    return (f"replay never downloads: get the model with `hf download {source}` (or render once with "
            f"`localflux generate --model {source}`), or restore the files, and replay again")


def _named_path(what: str, entry, suffixes: tuple[str, ...]) -> Path:
    """The path a recipe entry names, refused (unread) unless it has a suffix its role allows."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("sha256"), str):
        raise RecipeError(f"a {what} entry of the recipe is malformed (needs a path and a sha256); the file was altered")
    path = Path(os.path.abspath(entry["path"]))
    if "\0" in entry["path"] or path.suffix.lower() not in suffixes:
        raise RecipeError(f"the recipe names {entry['path']!r} as a {what}, but it is not one "
                          f"({', '.join(suffixes)}); refused without reading it")
    return path


def model_files_allowed(recipe: dict, config: config_mod.Config) -> list[tuple[str, dict]]:
    """The recipe's model files, each checked to be one the config's model consists of (nothing is read
    but folder listings), so only files named in the recipe are loaded and only model files are named."""

    entries = recipe["model"]["files"]
    if not isinstance(entries, list):
        raise RecipeError("the recipe's model.files must be a list; the file was altered")
    named = {_named_path("model file", entry, MODEL_FILE_SUFFIXES): entry for entry in entries}
    if config.model.source in FAMILIES.builtin_names():
        if named:
            raise RecipeError(f"the recipe names {str(next(iter(named)))!r} as a file of built-in model "
                              f"{config.model.source!r}, which has none; refused without reading it")
        return []
    if not named:
        raise ModelSourceError(f"this image's recipe records no files for model {config.model.source!r}; "
                               + _never_downloads(recipe))
    try:
        source = describe_source(config.model.source, config.model.base, config.model.revision, download=False)
    except ModelSourceError as exc:
        raise ModelSourceError(f"{str(exc).rstrip('.')}; " + _never_downloads(recipe)) from None
    if source.path is None or (source.base is not None and source.base.path is None):
        raise ModelSourceError(f"model {config.model.source!r} is not in the Hugging Face cache; " + _never_downloads(recipe))
    roots = [Path(os.path.abspath(p)) for p in (source.path, source.base.path if source.base else None) if p]
    loads = {Path(os.path.abspath(p)) for p in source_files(source)}
    for path in named:
        missing_inside = not path.exists() and any(path.is_relative_to(root) for root in roots)  # said below
        if path not in loads and not missing_inside:
            raise RecipeError(f"the recipe names {str(path)!r}, which is not a file of model {config.model.source!r}; "
                              "refused without reading it")
    for path in named:
        if not path.is_file():
            raise ModelSourceError(f"model file {str(path)!r} used by this image is missing; " + _never_downloads(recipe))
    unnamed = sorted(str(p) for p in loads if p not in named)
    if unnamed:
        raise WeightsMismatchError(f"model {config.model.source!r} has {unnamed[0]!r}, which this image's recipe does "
                                   "not record; only files named in the recipe are loaded, restore the model as it was")
    return [("weight file", entry) for entry in entries]


def check_replayable(recipe: dict, image_path) -> None:
    """Refuse, in one line, an image whose recipe says why it cannot be rendered again (never "different")."""
    extensions = recipe.get("extensions") or {}
    for record in extensions.values() if isinstance(extensions, dict) else ():
        reason = record.get("not_replayable") if isinstance(record, dict) else None
        if reason:
            raise RecipeError(f"{str(image_path)!r} cannot be replayed: {reason}")


def check_weights(recipe: dict, config: config_mod.Config | None = None) -> None:
    """Refuse early when a file is not one the recipe may name, is gone, or its bytes differ from the recipe's.

    Never touches the network; reads (hashes) only files that passed the checks of their role.
    """

    config = config if config is not None else recipe_config(recipe)
    checks = model_files_allowed(recipe, config)
    loras = recipe.get("loras") or []  # older recipes have no "loras"
    lora_paths = [str(_named_path("LoRA", entry, LORA_SUFFIXES)) for entry in loras]
    configured = [os.path.abspath(str(Path(entry.path).expanduser())) for entry in config.lora]
    if configured != lora_paths:
        raise RecipeError("the recipe's LoRA list and its config's [[lora]] entries differ; the file was altered")
    checks += [("LoRA", entry) for entry in loras]
    for step in recipe["upscale_steps"]:
        if step.get("kind") == "detail":  # the detail pass's FLUX model files
            for entry in step["files"]:
                _named_path("detail-pass weight file", entry, MODEL_FILE_SUFFIXES)
                checks.append(("detail-pass weight file", entry))
        else:
            _named_path("upscaler", step, UPSCALER_SUFFIXES)
            checks.append(("upscaler", step))
    for what, entry in checks:
        path = Path(entry["path"])
        if not path.is_file():
            raise WeightsMismatchError(f"{what} {str(path)!r} used by this image is missing; restore it to replay "
                                       "(replay never downloads)")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise WeightsMismatchError(f"{what} {str(path)!r} has sha256 {digest[:12]}… but the image was rendered "
                                       f"with {entry['sha256'][:12]}…; the file changed, restore the original to replay")


_UPSCALE_STEP_KEYS = ("path", "sha256", "scale", "tile", "overlap", "device", "dtype")  # what replay reads


def check_upscale_steps(steps) -> None:
    """Each recorded upscale step is checked before the render, not found broken after it (recipe data is data)."""

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(steps, list):
        raise ConfigError(f"upscale_steps must be a list, got {type(steps).__name__}")
    for n, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            raise ConfigError(f"upscale_steps[{n}] must be a table, got {type(step).__name__}")
        if step.get("kind") == "detail":

            check_step(n, step)
            continue
        missing = [key for key in _UPSCALE_STEP_KEYS if key not in step]
        if missing:
            raise ConfigError(f"upscale_steps[{n}] lacks {', '.join(missing)}")
        for key in ("path", "sha256", "device"):
            if not isinstance(step[key], str):
                raise ConfigError(f"upscale_steps[{n}].{key} must be a string, got {step[key]!r}")
        if not (number(step["scale"]) and MIN_SCALE < step["scale"] <= MAX_SCALE):
            raise ConfigError(f"upscale_steps[{n}].scale must be a number with 1 < scale <= 8, got {step['scale']!r}")
        for key, low in (("tile", 1), ("overlap", 0)):
            value = step[key]
            if value is not None and not (number(value) and isinstance(value, int) and value >= low):
                raise ConfigError(f"upscale_steps[{n}].{key} must be an integer of at least {low}, got {value!r}")
        if step["dtype"] is not None and not isinstance(step["dtype"], str):
            raise ConfigError(f"upscale_steps[{n}].dtype must be a string, got {step['dtype']!r}")
        if step.get("alpha", RECORDLESS_ALPHA) not in ALPHA_MODES:
            raise ConfigError(f"upscale_steps[{n}].alpha must be \"model\" or \"resize\", got {step['alpha']!r}")


def replay(image_path: str | Path, *, out_dir: str | Path | None = None,
           device: str | None = None, progress: bool = True) -> Replay:


    recipe = read_recipe(image_path)
    check_replayable(recipe, image_path)
    try:
        check_upscale_steps(recipe["upscale_steps"])
        config = recipe_config(recipe, device=device)
        check_weights(recipe, config)
        check_recorded_inputs(recipe, IMAGE_SUFFIXES)  # a changed or missing input image stops replay, naming it
    except ConfigError as exc:  # recipe data is only data: a bad value is a damaged file, named as such
        raise RecipeError(f"the recipe in {str(image_path)!r} has an invalid value ({exc}); the file was altered") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecipeError(f"the recipe in {str(image_path)!r} is malformed (bad or missing {exc}); "
                          "the file was altered") from None
    with no_downloads():  # checked above already; this makes sure no later step reaches the hub either
        plan = pipeline.plan(config)
        model = pipeline.load(plan)
    expected_fp = recipe["model"].get("fingerprint")
    if expected_fp and model.fingerprint != expected_fp:
        raise WeightsMismatchError(f"built-in model {recipe['model']['source']!r} differs from the one this image was "
                                   "rendered with (another localflux/torch version); it cannot be replayed exactly")
    seeds = plan.seeds
    results = pipeline.render_batch(plan, model, seeds, recipe["warnings"], progress=progress)
    result = results[seeds.index(recipe["seed"])]
    result.image = apply_upscale_steps(result.image, recipe["upscale_steps"], device=device, progress=progress)
    replayed = Replay(result.image, result.recipe, None, *compare_images(image_path, result.image))
    if out_dir is not None:

        folder = ensure_output_dir(out_dir)
        if replayed.identical:
            result.recipe = recipe  # the same pixels from the same recipe: the file comes out byte-identical
        replayed.path = pipeline.save_result(result, folder, plan.config)
    return replayed


def apply_upscale_steps(image, steps: list[dict], *, device: str | None, progress: bool):
    """Redo each recorded upscale (chained or standalone) with its recorded model, tile, overlap and alpha mode."""
    if not steps:
        return image

    for step in steps:
        if step.get("kind") == "detail":

            image = replay_detail(image, step, device=device, progress=progress)
            continue
        # steps recorded before the alpha option existed had their alpha Lanczos-resized
        image, _ = upscale_pil(image, model=step["path"], scale=step["scale"], tile=step["tile"],
                               overlap=step["overlap"], device=device or step["device"], dtype=step["dtype"],
                               alpha=step.get("alpha", RECORDLESS_ALPHA), progress=progress)
    return image


def compare_images(path: str | Path, image) -> tuple[int, int]:
    """(largest per-channel difference, number of differing pixels) between a file and an image."""

    with Image.open(path) as original:
        a = np.asarray(original.convert(image.mode), dtype=np.int64)
    b = np.asarray(image, dtype=np.int64)
    if a.shape != b.shape:
        return 255, int(np.prod(a.shape[:2]))
    diff = np.abs(a - b)
    per_pixel = diff.max(axis=-1) if diff.ndim == 3 else diff
    return int(diff.max()), int((per_pixel > 0).sum())
