"""The recipe as typed data: its fields, a strict reader for untrusted JSON, and ``migrate()``.

A recipe travels inside PNGs that people download and replay, so reading one is parsing hostile
input: every value is checked against its declared type before anything acts on it (no NaN, no
booleans posing as numbers, bounded strings, lists and nesting), and any problem is one
``RecipeError`` line. ``migrate`` turns every older schema into the current one, so callers never
special-case a version.

Schema history:
- 1 (localflux 0.1): the keys of ``Recipe`` up to ``loras``; batch / sweep / training-preview
  records were added by callers as top-level ``batch``, ``sweep``, ``training_preview``.
- 2: adds ``task``, ``inputs``, ``family`` (in ``model``) and ``extensions`` (batch, sweep,
  training_preview move there). Every schema-1 key keeps its name, place, type and meaning.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from .errors import RecipeError

SCHEMA_VERSION = 2
MAX_STRING = 1 << 16  # characters: far above any real prompt or path, far below a memory problem
MAX_ITEMS = 4096  # entries of one list or table
MAX_DEPTH = 32  # nesting of free-form tables (configs, decisions)
EXTENSION_KEYS = ("batch", "sweep", "training_preview")  # schema 1 kept these at the top level


@dataclass
class FileRecord:
    path: str
    sha256: str
    size: int


@dataclass
class ModelRecord:
    source: str
    kind: str
    preset: str
    base: str | None
    files: list[FileRecord]
    fingerprint: str | None = None
    family: str = "flux1"  # schema 1 knew FLUX.1 only


@dataclass
class SizeRecord:
    width: int
    height: int
    requested: list[float | None] = field(default_factory=list)


@dataclass
class Recipe:
    schema_version: int
    localflux_version: str
    config: dict[str, Any]
    seed: int
    index: int
    size: SizeRecord
    prompt: dict[str, Any]  # parts, final, negative and the text of each encoder (FLUX.1: clip, t5)
    sigmas: list[float]
    model: ModelRecord
    versions: dict[str, str]
    device: str
    dtype: str
    decisions: dict[str, Any]
    warnings: list[str]
    upscale_steps: list[dict[str, Any]]
    loras: list[dict[str, Any]] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=lambda: {"name": "text"})
    inputs: list[dict[str, Any]] = field(default_factory=list)
    extensions: dict[str, Any] = field(default_factory=dict)  # batch, sweep, training_preview records

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        """A checked ``Recipe`` from current-schema data; a ``RecipeError`` names the first bad value."""
        recipe = _build(cls, data, "")
        _check_semantics(recipe)
        return recipe


def migrate(data: Any) -> dict:
    """Any supported schema's recipe data as the current schema's (a new dict; the input is not changed)."""
    if not isinstance(data, dict):
        raise RecipeError("is not a JSON object; the file was altered")
    version = data.get("schema_version")
    if type(version) is not int:
        raise RecipeError("has no schema_version; the file was altered")
    if version > SCHEMA_VERSION:
        raise RecipeError(f"was made by a newer localflux (recipe schema {version}, this version reads up to "
                          f"{SCHEMA_VERSION}); upgrade localflux to replay it")
    if version < 1:
        raise RecipeError(f"has schema_version {version}, which no localflux ever wrote; the file was altered")
    data = dict(data)
    if version == 1:
        data = _from_1(data)
    return data


def _from_1(data: dict) -> dict:
    extensions = {key: data.pop(key) for key in EXTENSION_KEYS if key in data}
    data["extensions"] = extensions
    data.setdefault("loras", [])
    data.setdefault("task", {"name": "text"})
    data.setdefault("inputs", [])
    data["schema_version"] = 2
    return data


def _check_semantics(recipe: Recipe) -> None:
    if recipe.seed < 0:
        raise RecipeError(f"has seed {recipe.seed}, which is negative; the file was altered")
    if recipe.size.width < 1 or recipe.size.height < 1:
        raise RecipeError("has an image size below 1 pixel; the file was altered")
    for key in ("final",):
        if not isinstance(recipe.prompt.get(key), str):
            raise RecipeError(f"has no prompt.{key} text; the file was altered")


# ---------------------------------------------------------------- the checker


def _fail(where: str, expected: str, value: Any) -> RecipeError:
    shown = repr(value) if not isinstance(value, (str, list, dict)) else type(value).__name__
    return RecipeError(f"is malformed: {where or 'the recipe'} must be {expected}, got {shown}; "
                       "the file was altered")


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise _fail(where, "a table", data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"has an unknown key {_join(where, str(unknown[0])[:80])!r}; the file was altered")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RecipeError(f"lacks {_join(where, f.name)}; the file was altered")
            continue
        kwargs[f.name] = _check(data[f.name], hints[f.name], _join(where, f.name), 0)
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(value: Any, hint, where: str, depth: int):
    if depth > MAX_DEPTH:
        raise RecipeError(f"nests deeper than {MAX_DEPTH} levels at {where}; the file was altered")
    if is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option, where, depth)
            except RecipeError:
                continue
        raise _fail(where, " or ".join(_name(a) for a in typing.get_args(hint)), value)
    if origin is list:
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise _fail(where, f"a list of at most {MAX_ITEMS} {_name(typing.get_args(hint)[0])}", value)
        return [_check(item, typing.get_args(hint)[0], f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or len(value) > MAX_ITEMS:
            raise _fail(where, "a table", value)
        item = typing.get_args(hint)[1]
        return {_check(k, str, where, depth + 1): _check(v, item, f"{where}.{str(k)[:40]}", depth + 1)
                for k, v in value.items()}
    return _scalar(value, hint, where, depth)


def _scalar(value: Any, hint, where: str, depth: int):
    if hint is Any:
        return _json_value(value, where, depth)
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if type(value) is bool:
            return value
    elif hint is int:
        if type(value) is int and abs(value) < 2**63:
            return value
    elif hint is float:
        if type(value) in (int, float) and math.isfinite(value):
            return value
    elif hint is str:
        if type(value) is str and len(value) <= MAX_STRING:
            return value
    else:
        raise TypeError(f"unsupported recipe type {hint!r} at {where}")  # a bug in this module
    raise _fail(where, _name(hint), value)


def _json_value(value: Any, where: str, depth: int):
    """A free-form JSON value (configs, decisions): bounded, finite, of JSON types only."""
    if depth > MAX_DEPTH:
        raise RecipeError(f"nests deeper than {MAX_DEPTH} levels at {where}; the file was altered")
    if value is None or type(value) is bool:
        return value
    if type(value) in (int, float):
        return _scalar(value, float if type(value) is float else int, where, depth)
    if type(value) is str:
        return _scalar(value, str, where, depth)
    if isinstance(value, list):
        return _check(value, list[Any], where, depth)
    if isinstance(value, dict):
        return _check(value, dict[str, Any], where, depth)
    raise _fail(where, "a JSON value", value)


def _name(hint) -> str:
    names = {int: "an integer", float: "a finite number", str: f"a string of at most {MAX_STRING} characters",
             bool: "true or false", type(None): "null", Any: "a JSON value"}
    if hint in names:
        return names[hint]
    if is_dataclass(hint):
        return "a table"
    return str(hint)
