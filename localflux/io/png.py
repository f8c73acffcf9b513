"""PNG text chunks: the one place that writes and reads them.

Each PNG localflux renders carries
- ``localflux``: the recipe as JSON (see :mod:`localflux.recipe`), read back by ``replay``/``inspect``;
- ``parameters``: the A1111/Forge-style summary that image viewers, web UIs and Civitai read;
- ``XML:com.adobe.xmp``: the AI-generation label (:mod:`.xmp`), an uncompressed iTXt chunk as
  exiftool and Adobe expect; ``[output] label = false`` leaves it out.
A ``.json`` sidecar holds the same recipe. Nothing time-dependent goes into the PNG, so the same
inputs give the same bytes (Content Credentials, opt-in, add a signature that differs per run).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..errors import RecipeError
from ..output import atomic_write_bytes
from . import xmp

CHUNK_RECIPE = "localflux"
CHUNK_PARAMETERS = "parameters"
CHUNK_XMP = "XML:com.adobe.xmp"
FROM_RECIPE = "from-recipe"  # png_bytes(label=...): the label the recipe asks for (see label_for)


def to_json(recipe: dict) -> str:
    """The canonical recipe JSON (sorted keys, ASCII, no spaces): what the chunk holds and C2PA hashes."""
    return json.dumps(recipe, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def sidecar_bytes(recipe: dict) -> bytes:
    return (json.dumps(recipe, sort_keys=True, indent=2) + "\n").encode()


def _short_hash(entry: dict, length: int) -> str | None:
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    return digest[:length] if isinstance(digest, str) and len(digest) >= length else None


def model_hash(recipe: dict) -> str | None:
    """A1111's ``Model hash`` (first 10 hex of the sha256): only for a single-file transformer checkpoint."""
    model = recipe.get("model")
    files = model.get("files") if isinstance(model, dict) else None
    if not isinstance(files, list) or model.get("kind") != "single_file" or not files:
        return None
    source = str(model.get("source") or "")
    match = [f for f in files if isinstance(f, dict) and str(f.get("path")) == source] or files[:1]
    return _short_hash(match[0], 10)


def lora_hashes(recipe: dict) -> str | None:
    """A1111's ``Lora hashes`` value: ``name: <AutoV3>, ...`` for the LoRAs whose AutoV3 is recorded."""
    parts = []
    loras = recipe.get("loras")
    for entry in loras if isinstance(loras, list) else []:
        autov3 = entry.get("autov3") if isinstance(entry, dict) else None
        if not isinstance(autov3, str) or not autov3:
            continue
        path = Path(str(entry.get("path") or "lora"))
        name = entry.get("name") or path.stem
        if name == path.name:  # no name was given: the recipe records the file name, A1111 the stem
            name = path.stem
        name = str(name).replace(":", "_").replace(",", "_").replace('"', "'")
        parts.append(f"{name}: {autov3}")
    return ", ".join(parts) or None


def parameters_text(recipe: dict) -> str:
    """A1111/Forge-style ``parameters``: prompt, negative prompt, then one line of settings."""
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
        *([f"Denoising strength: {strength}"] if (strength := _strength(recipe)) is not None else []),
        f"Seed: {recipe['seed']}",
        f"Size: {recipe['size']['width']}x{recipe['size']['height']}",
    ]
    digest = model_hash(recipe)
    if digest:
        settings.append(f"Model hash: {digest}")
    settings.append(f"Model: {Path(recipe['model']['source']).name or recipe['model']['source']}")
    loras = lora_hashes(recipe)
    if loras:
        settings.append(f'Lora hashes: "{loras}"')
    settings.append(f"Version: localflux {recipe['localflux_version']}")
    lines.append(", ".join(settings))
    return "\n".join(lines)


def _strength(recipe: dict):
    """The img2img/inpaint strength a task recorded (A1111's "Denoising strength"), else None."""
    task = recipe.get("task")
    return task.get("strength") if isinstance(task, dict) else None


def label_for(recipe: dict | None) -> str | None:
    """The digital source type a PNG of this recipe is labelled with, or None (``[output] label = false``).

    Generated from a prompt alone: trainedAlgorithmicMedia; with input images (recorded under
    ``inputs``): compositeWithTrainedAlgorithmicMedia.
    """
    if recipe is None:
        return xmp.TRAINED
    output = (recipe.get("config") or {}).get("output") or {}
    if isinstance(output, dict) and output.get("label") is False:
        return None
    return xmp.COMPOSITE if recipe.get("inputs") else xmp.TRAINED


def label_for_upscale(text: dict[str, str]) -> str | None:
    """The label of an upscale of an image with these text chunks.

    A localflux render keeps its recipe's label (none when it asked for none); an image another tool
    already labelled as generated stays trainedAlgorithmicMedia; anything else (a photo) becomes
    compositeWithTrainedAlgorithmicMedia, since a generative network added its detail.
    """
    try:
        recipe = json.loads(text[CHUNK_RECIPE]) if CHUNK_RECIPE in text else None
    except (ValueError, RecursionError):
        recipe = None
    if isinstance(recipe, dict):
        return label_for(recipe)
    if xmp.read_source_type(text.get(CHUNK_XMP)) == xmp.TRAINED:
        return xmp.TRAINED
    return xmp.COMPOSITE


def with_label(text: dict[str, str], source_type: str | None) -> dict[str, str]:
    """``text`` with the XMP label merged into its XMP packet (a photo's own XMP is kept)."""
    if source_type is None:
        return dict(text)
    return dict(text, **{CHUNK_XMP: xmp.merge(text.get(CHUNK_XMP), source_type)})


def pnginfo(text: dict[str, str]):
    """Pillow ``PngInfo`` for ``text``: XMP as uncompressed iTXt, the rest tEXt (iTXt when not Latin-1)."""
    info = PngInfo()
    for key, value in text.items():
        if key == CHUNK_XMP:
            info.add_itxt(key, value, zip=False)
        else:
            info.add_text(key, value)
    return info


def chunk(kind: bytes, body: bytes) -> bytes:
    """One raw PNG chunk (length, type, body, CRC)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def text_chunk(key: str, value: str) -> bytes:
    """A raw text chunk, as :func:`pnginfo` would write it (for the 16-bit encoder)."""
    if key != CHUNK_XMP:
        try:
            return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
        except UnicodeEncodeError:
            pass
    # iTXt: keyword, compression flag 0, method 0, empty language tag and translated keyword.
    return chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))


def png_bytes(image, recipe: dict | None, extra_text: dict[str, str] | None = None, *,
              label: str | None = FROM_RECIPE) -> bytes:
    """Encode ``image`` as PNG with the recipe, parameters and label chunks (deterministic bytes).

    ``label``: a digital source type (:mod:`.xmp`), None for no label, or the recipe's choice.
    """
    text = dict(extra_text or {})
    if recipe is not None:
        text[CHUNK_PARAMETERS] = parameters_text(recipe)
        text[CHUNK_RECIPE] = to_json(recipe)
    text = with_label(text, label_for(recipe) if label == FROM_RECIPE else label)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo(text))
    return buffer.getvalue()


def signer_for(output):
    """The Content Credentials signer an ``[output]`` table asks for, or None (the default: off)."""
    if not getattr(output, "content_credentials", False):
        return None
    from .c2pa import Signer  # cycle: io.c2pa imports this module (to_json, labels, chunk names)

    return Signer.from_output(output)


def save_png(image, path: Path, recipe: dict, *, sidecar: bool = True, credentials=None) -> Path:
    """Write the PNG (and ``.json`` sidecar) atomically; never overwrites.

    ``credentials``: a :class:`localflux.io.c2pa.Signer` to add Content Credentials, or None.
    """
    data = png_bytes(image, recipe)
    if credentials is not None:
        from .c2pa import input_ingredients  # cycle: io.c2pa imports this module

        data = credentials.sign_png(data, recipe, input_ingredients(recipe), title=Path(path).name)
    atomic_write_bytes(path, data)
    if sidecar:
        atomic_write_bytes(path.with_suffix(".json"), sidecar_bytes(recipe))
    return path


def read_png_text(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return {k: v for k, v in image.text.items()} if hasattr(image, "text") else {}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecipeError(f"{str(path)!r} is not a readable image ({exc.__class__.__name__}); pass a localflux PNG") from None
