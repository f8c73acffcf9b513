"""Re-render an image from the recipe embedded in it, with the decisions recorded there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from .errors import ConfigError, RecipeError, WeightsMismatchError
from .families import FAMILIES
from .tasks.images import check_recorded_inputs

log = logging.getLogger(__name__)


@dataclass
class Replay:
    image: object
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
    data = recipe["config"]
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
        from .memory.resolve import plan_to_config_keys

        overrides.update(plan_to_config_keys(recipe["decisions"]["memory"]))
    return config_mod.replace(config_mod.config_from_dict(data, origin="recipe"), **overrides)


def check_weights(recipe: dict) -> None:
    """Refuse early when a weight file is gone or its bytes differ from the recipe's."""
    from .hashing import sha256_file

    checks = [("weight file", entry) for entry in recipe["model"]["files"]]
    checks += [("LoRA", entry) for entry in recipe.get("loras") or []]  # older recipes have no "loras"
    checks += [("upscaler", entry) for entry in recipe["upscale_steps"]]
    for what, entry in checks:
        path = Path(entry["path"])
        if not path.is_file():
            raise WeightsMismatchError(f"{what} {str(path)!r} used by this image is missing; restore it to replay")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise WeightsMismatchError(f"{what} {str(path)!r} has sha256 {digest[:12]}… but the image was rendered "
                                       f"with {entry['sha256'][:12]}…; the file changed, restore the original to replay")


_UPSCALE_STEP_KEYS = ("path", "sha256", "scale", "tile", "overlap", "device", "dtype")  # what replay reads


def check_upscale_steps(steps) -> None:
    """Each recorded upscale step is checked before the render, not found broken after it (recipe data is data)."""
    from .upscale.stage import ALPHA_MODES, MAX_SCALE, MIN_SCALE, RECORDLESS_ALPHA

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(steps, list):
        raise ConfigError(f"upscale_steps must be a list, got {type(steps).__name__}")
    for n, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            raise ConfigError(f"upscale_steps[{n}] must be a table, got {type(step).__name__}")
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
    from . import pipeline
    from .recipe import read_recipe

    recipe = read_recipe(image_path)
    check_recorded_inputs(recipe)  # a changed or missing input image stops replay, naming it
    try:
        check_upscale_steps(recipe["upscale_steps"])
        check_weights(recipe)
        config = recipe_config(recipe, device=device)
    except ConfigError as exc:  # recipe data is only data: a bad value is a damaged file, named as such
        raise RecipeError(f"the recipe in {str(image_path)!r} has an invalid value ({exc}); the file was altered") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecipeError(f"the recipe in {str(image_path)!r} is malformed (bad or missing {exc}); "
                          "the file was altered") from None
    the_plan = pipeline.plan(config)
    model = pipeline.load(the_plan)
    expected_fp = recipe["model"].get("fingerprint")
    if expected_fp and model.fingerprint != expected_fp:
        raise WeightsMismatchError(f"built-in model {recipe['model']['source']!r} differs from the one this image was "
                                   "rendered with (another localflux/torch version); it cannot be replayed exactly")
    seeds = the_plan.seeds
    results = pipeline.render_batch(the_plan, model, seeds, recipe["warnings"], progress=progress)
    result = results[seeds.index(recipe["seed"])]
    result.image = apply_upscale_steps(result.image, recipe["upscale_steps"], device=device, progress=progress)
    replayed = Replay(result.image, result.recipe, None, *compare_images(image_path, result.image))
    if out_dir is not None:
        from .output import ensure_output_dir

        folder = ensure_output_dir(out_dir)
        if replayed.identical:
            result.recipe = recipe  # the same pixels from the same recipe: the file comes out byte-identical
        replayed.path = pipeline.save_result(result, folder, the_plan.config)
    return replayed


def apply_upscale_steps(image, steps: list[dict], *, device: str | None, progress: bool):
    """Redo each recorded upscale (chained or standalone) with its recorded model, tile, overlap and alpha mode."""
    if not steps:
        return image
    from .upscale import upscale_pil
    from .upscale.stage import RECORDLESS_ALPHA

    for step in steps:
        # steps recorded before the alpha option existed had their alpha Lanczos-resized
        image, _ = upscale_pil(image, model=step["path"], scale=step["scale"], tile=step["tile"],
                               overlap=step["overlap"], device=device or step["device"], dtype=step["dtype"],
                               alpha=step.get("alpha", RECORDLESS_ALPHA), progress=progress)
    return image


def compare_images(path: str | Path, image) -> tuple[int, int]:
    """(largest per-channel difference, number of differing pixels) between a file and an image."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as original:
        a = np.asarray(original.convert(image.mode), dtype=np.int64)
    b = np.asarray(image, dtype=np.int64)
    if a.shape != b.shape:
        return 255, int(np.prod(a.shape[:2]))
    diff = np.abs(a - b)
    per_pixel = diff.max(axis=-1) if diff.ndim == 3 else diff
    return int(diff.max()), int((per_pixel > 0).sum())
