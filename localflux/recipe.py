"""The render recipe: everything needed to reproduce an image, embedded in the PNG itself.

The recipe is JSON (``schema_version``; stable top-level keys listed in ``RECIPE_KEYS``) in the
PNG's ``localflux`` text chunk, read back by ``localflux replay``. Writing and reading the PNG
chunks (recipe, ``parameters``, XMP label) lives in :mod:`localflux.io.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
import transformers

from . import __version__
from .errors import RecipeError
from .io.png import CHUNK_RECIPE, read_png_text
from .recipe_schema import EXTENSION_KEYS, MISSING, Recipe, fields, migrate

RECIPE_KEYS = tuple(f.name for f in fields(Recipe) if f.default is MISSING and f.default_factory is MISSING)


def add_extension(recipe: dict, name: str, record: dict) -> dict:
    """Attach a batch / sweep / training-preview record to a recipe (its ``extensions`` table)."""
    if name not in EXTENSION_KEYS:
        raise ValueError(f"unknown recipe extension {name!r}")  # a bug in the caller
    recipe.setdefault("extensions", {})[name] = record
    return recipe


def versions() -> dict[str, str]:
    return {"localflux": __version__, "torch": str(torch.__version__), "diffusers": str(diffusers.__version__),
            "transformers": str(transformers.__version__)}


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
