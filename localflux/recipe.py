"""The render recipe: everything needed to reproduce an image, embedded in the PNG itself.

Each PNG carries two text chunks:
- ``localflux``: the recipe as JSON (``schema_version``; stable top-level keys listed in
  ``RECIPE_KEYS``), read back by ``localflux replay``;
- ``parameters``: the A1111-style summary that image viewers and web UIs show.
A ``.json`` sidecar holds the same recipe. Nothing time-dependent goes into the PNG, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from .errors import RecipeError
from .output import atomic_write_bytes
from .recipe_schema import EXTENSION_KEYS, MISSING, SCHEMA_VERSION, Recipe, fields, migrate

CHUNK_RECIPE = "localflux"
CHUNK_PARAMETERS = "parameters"
RECIPE_KEYS = tuple(f.name for f in fields(Recipe) if f.default is MISSING and f.default_factory is MISSING)

def add_extension(recipe: dict, name: str, record: dict) -> dict:
    """Attach a batch / sweep / training-preview record to a recipe (its ``extensions`` table)."""
    if name not in EXTENSION_KEYS:
        raise ValueError(f"unknown recipe extension {name!r}")  # a bug in the caller
    recipe.setdefault("extensions", {})[name] = record
    return recipe


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    from . import __version__

    return {"localflux": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def to_json(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def parameters_text(recipe: dict) -> str:
    """A1111-style ``parameters``: prompt, negative prompt, then one line of settings."""
    config = recipe["config"]
    sampling = config["sampling"]
    lines = [recipe["prompt"]["final"]]
    negative = recipe["prompt"].get("negative")
    if negative:
        lines.append(f"Negative prompt: {negative}")
    settings = [
        f"Steps: {sampling['steps']}",
        "Sampler: Euler",
        "Schedule type: Simple",
        f"CFG scale: {sampling['true_cfg']}",
        f"Distilled CFG Scale: {sampling['guidance']}",
        *([f"Denoising strength: {recipe['task']['strength']}"] if (recipe.get("task") or {}).get("strength") is not None
          else []),
        f"Seed: {recipe['seed']}",
        f"Size: {recipe['size']['width']}x{recipe['size']['height']}",
        f"Model: {Path(recipe['model']['source']).name or recipe['model']['source']}",
        f"Version: localflux {recipe['localflux_version']}",
    ]
    lines.append(", ".join(settings))
    return "\n".join(lines)


def png_bytes(image, recipe: dict | None, extra_text: dict[str, str] | None = None) -> bytes:
    """Encode ``image`` as PNG with the recipe and parameters chunks (deterministic bytes)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (extra_text or {}).items():
        info.add_text(key, value)
    if recipe is not None:
        info.add_text(CHUNK_PARAMETERS, parameters_text(recipe))
        info.add_text(CHUNK_RECIPE, to_json(recipe))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image, path: Path, recipe: dict, *, sidecar: bool = True) -> Path:
    """Write the PNG (and ``.json`` sidecar) atomically; never overwrites."""
    atomic_write_bytes(path, png_bytes(image, recipe))
    if sidecar:
        atomic_write_bytes(path.with_suffix(".json"), sidecar_bytes(recipe))
    return path


def sidecar_bytes(recipe: dict) -> bytes:
    return (json.dumps(recipe, sort_keys=True, indent=2) + "\n").encode()


def read_png_text(path: str | Path) -> dict[str, str]:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return {k: v for k, v in image.text.items()} if hasattr(image, "text") else {}
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise RecipeError(f"{str(path)!r} is not a readable image ({exc.__class__.__name__}); pass a localflux PNG") from None


def read_recipe(path: str | Path) -> dict:
    """The recipe embedded in a localflux PNG, migrated to the current schema and checked for shape and types."""
    text = read_png_text(path).get(CHUNK_RECIPE)
    if text is None:
        raise RecipeError(f"{str(path)!r} has no localflux recipe (no '{CHUNK_RECIPE}' PNG text chunk); "
                          "only images saved by localflux can be replayed")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise RecipeError(f"the recipe in {str(path)!r} is not valid JSON; the file was altered") from None
    try:
        return Recipe.from_dict(migrate(data)).to_dict()
    except RecipeError as exc:
        raise RecipeError(f"the recipe in {str(path)!r} {exc}") from None
