"""Input images for image-conditioned tasks: read once, exactly as diffusers' ``load_image`` reads them.

``load_image`` opens the file, applies the EXIF orientation (``ImageOps.exif_transpose``) and converts to
RGB (an alpha channel is dropped, not composited). localflux does the same, and before decoding checks
the picture against Pillow's decompression-bomb limit (89,478,485 pixels by default): a larger file
stops with one line; ``LOCALFLUX_MAX_IMAGE_PIXELS=N`` raises the limit (``0``: no limit) for files you
trust. A file that is missing, not an image or truncated stops with one line naming it.

Every input gets a record for the recipe: role, path, sha256 of the file's bytes (a PIL image given
through the Python API: of its PNG-encoded pixels, path None), the original (upright) size, every
preprocessing step, and the ``source`` / ``license`` notes of an inline table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputImageError, RecipeError
from ..hashing import sha256_file

MAX_PIXELS_ENV = "LOCALFLUX_MAX_IMAGE_PIXELS"
PILLOW_DEFAULT_LIMIT = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS: ~ 0.25 GB of 24-bit pixels


def pixel_limit() -> int | None:
    """The largest picture (in pixels) an input may have; None: no limit."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return PILLOW_DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise InputImageError(f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels; "
                              "set e.g. 200000000, or 0 for no limit") from None
    return None if value <= 0 else value


def check_pixel_limit(size: tuple[int, int], name: str) -> None:
    limit = pixel_limit()
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise InputImageError(f"{name} is {size[0]}x{size[1]} = {pixels:,} pixels, more than the decompression-bomb "
                              f"limit of {limit:,}; if you trust the file, raise it: {MAX_PIXELS_ENV}={pixels}")


def open_checked(path: Path, name: str):
    """``Image.open`` with the pixel limit checked from the header, fully decoded; one-line errors."""

    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise InputImageError(f"{name} {what}; pass an image file (PNG, JPEG, WebP …)")
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit, checked below from the header, in one line
    try:
        image = Image.open(path)
        check_pixel_limit(image.size, name)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            detail = "not an image Pillow can read"
        elif "truncated" in str(exc):
            detail = "not a readable image: it is truncated (the file ends early)"
        else:
            detail = f"not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        raise InputImageError(f"{name} is {detail}; pass a complete PNG, JPEG or WebP file") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def load_rgb(image):
    """diffusers' ``load_image`` on an opened image: EXIF-upright, then RGB."""

    return ImageOps.exif_transpose(image).convert("RGB")


@dataclass
class InputImage:
    """One input, read: the RGB pixels (upright) and its recipe record."""

    role: str
    image: Image.Image  # RGB
    record: dict = field(default_factory=dict)

    def step(self, op: str, **facts) -> None:
        self.record["steps"].append({"op": op, **facts})


def sha256_of_pil(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def read_input(ref, role: str) -> InputImage:
    """Read ``ref`` (a ``config.ImageInput``) as ``role`` ("image", "mask", "reference 2", …)."""

    name = f"input {role}"
    if ref.pixels is not None:
        image = load_rgb(ref.pixels)
        check_pixel_limit(image.size, f"{name} (a PIL image)")
        path, digest = None, sha256_of_pil(image)
    else:
        path = Path(ref.path)
        name = f"{name} {str(path)!r}"
        with open_checked(path, name) as opened:
            image = load_rgb(opened)
        path, digest = str(path), sha256_file(path, progress=False)
    record = {"role": role, "path": path, "sha256": digest, "size": list(image.size), "steps": []}
    if ref.source is not None:
        record["source"] = ref.source
    if ref.license is not None:
        record["license"] = ref.license
    return InputImage(role, image, record)


# ---------------------------------------------------------------- hooks used by pipeline.py


def strip_pixels(config_dict: dict) -> dict:
    """A config dict (``Config.to_dict()``) without in-memory pixels: ``input.*`` images keep path and notes."""
    given = config_dict.get("input")
    if not isinstance(given, dict):
        return config_dict

    def clean(value):
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != "pixels"}
        return value

    given = dict(given, image=clean(given.get("image")), mask=clean(given.get("mask")),
                 references=[clean(ref) for ref in given.get("references") or []])
    if "control" in given:
        given["control"] = clean(given.get("control"))
    if "redux" in given:
        given["redux"] = [clean(ref) for ref in given.get("redux") or []]
    return dict(config_dict, input=given)


def absolute_input_paths(config) -> dict:
    """``replace`` changes that make the ``[input]`` image paths absolute (recipes replay from anywhere)."""

    def absolute(ref):
        if ref is None or ref.path is None:
            return ref
        path = str(Path(ref.path).expanduser().resolve())
        return ref if path == ref.path else dataclasses.replace(ref, path=path)

    given = config.input
    changes = {}
    for key in ("image", "mask", "control"):
        ref = getattr(given, key)
        if absolute(ref) is not ref:
            changes[f"input.{key}"] = absolute(ref)
    for key in ("references", "redux"):
        refs = [absolute(ref) for ref in getattr(given, key)]
        if any(a is not b for a, b in zip(refs, getattr(given, key))):
            changes[f"input.{key}"] = refs
    return changes


def describe_task(prepared) -> list[str]:
    """``--dry-run`` lines: the task, its facts and each input."""
    facts = ", ".join(f"{k} {v}" for k, v in prepared.record.items() if not isinstance(v, (dict, list)) and v is not None)
    lines = [f"task: {prepared.task}" + (f": {facts}" if facts else "")]
    for record in prepared.inputs:
        steps = "; ".join(step["op"] + (f" to {step['to'][0]}x{step['to'][1]}" if "to" in step else "")
                          for step in record["steps"])
        where = record["path"] or "PIL image"
        lines.append(f"input {record['role']}: {where} ({record['size'][0]}x{record['size'][1]}, "
                     f"sha256 {record['sha256'][:12]}…){': ' + steps if steps else ''}")
    return lines


def check_recorded_inputs(recipe: dict, suffixes: tuple[str, ...]) -> None:
    """Replay: every recorded input image must still be there with the same bytes (sha256).

    A path without an image suffix (``suffixes``) is refused without being read: a recipe is data.
    """

    inputs = recipe.get("inputs") or []  # recipes from before image inputs have none
    for record in inputs if isinstance(inputs, list) else []:
        if not isinstance(record, dict):
            continue
        role, path = record.get("role", "image"), record.get("path")
        if path is None:
            raise InputImageError(f"input {role} of this image was an in-memory PIL image (sha256 "
                                  f"{str(record.get('sha256'))[:12]}…); replay needs a file: save it and render with its path")
        if not isinstance(path, str) or "\0" in path or Path(path).suffix.lower() not in suffixes:
            raise RecipeError(f"the recipe names {str(path)[:200]!r} as input {role}, but it is not an image file "
                              f"({', '.join(suffixes)}); refused without reading it")
        if not Path(path).is_file():
            raise InputImageError(f"input {role} {path!r} used by this image is missing; restore it to replay")
        digest = sha256_file(path, progress=False)
        if digest != record.get("sha256"):
            raise InputImageError(f"input {role} {path!r} has sha256 {digest[:12]}… but the image was rendered from "
                                  f"{str(record.get('sha256'))[:12]}…; the file changed, restore the original to replay")
