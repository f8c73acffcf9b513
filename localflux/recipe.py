"""The render recipe: everything needed to reproduce an image, embedded in the PNG itself.

The recipe is JSON (``schema_version``; stable top-level keys listed in ``RECIPE_KEYS``) in the
PNG's ``localflux`` text chunk, read back by ``localflux replay``. Writing and reading the PNG
chunks (recipe, ``parameters``, XMP label) lives in :mod:`localflux.io.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import RecipeError
from .io.png import CHUNK_RECIPE, read_png_text

SCHEMA_VERSION = 1
RECIPE_KEYS = (
    "schema_version", "localflux_version", "config", "seed", "index", "size", "prompt", "sigmas",
    "model", "versions", "device", "dtype", "decisions", "warnings", "upscale_steps",
)


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    from . import __version__

    return {"localflux": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def read_recipe(path: str | Path) -> dict:
    """The recipe embedded in a localflux PNG, checked for shape and schema version."""
    text = read_png_text(path).get(CHUNK_RECIPE)
    if text is None:
        raise RecipeError(f"{str(path)!r} has no localflux recipe (no '{CHUNK_RECIPE}' PNG text chunk); "
                          "only images saved by localflux can be replayed")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError:
        raise RecipeError(f"the recipe in {str(path)!r} is not valid JSON; the file was altered") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("schema_version"), int):
        raise RecipeError(f"the recipe in {str(path)!r} has no schema_version; the file was altered")
    if recipe["schema_version"] > SCHEMA_VERSION:
        raise RecipeError(f"{str(path)!r} was made by a newer localflux (recipe schema {recipe['schema_version']}, "
                          f"this version reads up to {SCHEMA_VERSION}); upgrade localflux to replay it")
    missing = [key for key in RECIPE_KEYS if key not in recipe]
    if missing:
        raise RecipeError(f"the recipe in {str(path)!r} lacks {', '.join(missing)}; the file was altered")
    return recipe
