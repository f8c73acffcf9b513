"""Image modes, bit depths, resampling and PNG text chunks around the upscaler network.

The network only sees RGB floats in [0, 1].  Everything else is handled here:

* grey (L, I;16) is fed as three equal channels and turned back into grey with ITU-R 601 luma;
* alpha is upscaled by the stage (:mod:`.stage`): through the network as grey, or resized with
  Lanczos straight to the final size (``alpha = "resize"``);
* 16-bit input (I;16, and 48/64-bit RGB/RGBA or 32-bit LA PNGs, read by :mod:`.pngio`) gives
  16-bit output; 8-bit gives 8-bit.  Palette images become RGB(A), 1-bit becomes L;
* text chunks (the ``localflux`` JSON recipe, A1111's ``parameters``, any others) are kept;
* photos are read upright (EXIF orientation applied, see :mod:`localflux.photos`); an ICC profile
  that describes the output's colour model (RGB for colour, GRAY for grey) is embedded in the
  output unchanged, since the network keeps the picture in its colour space; CMYK is converted to
  RGB (through its profile when it has one);
* colour-key transparency (a PNG ``tRNS`` on an RGB or grey image) becomes an alpha channel.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import photos
from ..errors import UpscaleError
from ..io import png
from ..io.png import CHUNK_RECIPE as RECIPE_KEY  # one name for the recipe chunk, defined with the PNG chunks
from ..tasks.images import open_checked
from . import pngio

log = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Picture:
    """An image split the way the upscaler needs it."""

    color: np.ndarray  # float32 HxWx3 in [0, 1] (grey replicated to 3 channels)
    alpha: np.ndarray | None  # float32 HxW in [0, 1], or None
    gray: bool
    bits: int  # 8 or 16
    text: dict[str, str] = field(default_factory=dict)
    icc: bytes | None = None  # ICC profile to embed in the output (matches the output's colour model)

    @property
    def size(self) -> tuple[int, int]:
        return self.color.shape[1], self.color.shape[0]

    @property
    def max_value(self) -> int:
        return 65535 if self.bits == 16 else 255


def _from_samples(samples: np.ndarray, bits: int, text: dict[str, str], icc: bytes | None = None) -> Picture:
    """``samples``: integer HxWxC with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)."""
    scale = np.float32(65535.0 if bits == 16 else 255.0)
    values = samples.astype(np.float32) / scale
    channels = values.shape[2]
    gray = channels in (1, 2)
    color = np.repeat(values[:, :, :1], 3, axis=2) if gray else values[:, :, :3]
    alpha = values[:, :, channels - 1] if channels in (2, 4) else None
    if photos.icc_colour_space(icc) != ("GRAY" if gray else "RGB"):
        icc = None  # a profile for another colour model would mislabel the output's numbers
    return Picture(np.ascontiguousarray(color), alpha, gray, bits, text, icc)


# Text chunks that can carry an EXIF orientation; after rotating, Pillow's scrubbed copies are kept.
ORIENTATION_TEXT = ("Raw profile type exif", "XML:com.adobe.xmp")


def picture_from_pil(image: Image.Image, text: dict[str, str] | None = None, *, name: str = "the image") -> Picture:
    """Split a Pillow image (8-bit modes, or 16-bit grey ``I;16``/``I``) into a :class:`Picture`.

    The picture is upright (EXIF orientation applied); ``name`` is used in error messages.
    """
    text = dict(text if text is not None else getattr(image, "text", None) or {})
    image = photos.upright(image)
    for key in ORIENTATION_TEXT:
        if key in text and isinstance(image.info.get(key), str):
            text[key] = image.info[key]
    icc = image.info.get("icc_profile")
    mode = image.mode
    if mode in ("L", "RGB") and image.info.get("transparency") is not None:
        image = image.convert("LA" if mode == "L" else "RGBA")  # a tRNS colour key is transparency too
    elif mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "CMYK":
        image = photos.cmyk_to_rgb(image)
        icc = None
    elif mode in ("YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            # 32-bit integer TIFFs: clipping would silently flatten the picture
            raise UpscaleError(f"{name} holds 32-bit integer values outside 0..65535, which have no 16-bit meaning; "
                               "save it as an 8- or 16-bit image first")
        return _from_samples(values.astype(np.uint16)[:, :, None], 16, text, icc)
    if mode in ("L", "LA", "RGB", "RGBA"):
        samples = np.asarray(image)
        if samples.ndim == 2:
            samples = samples[:, :, None]
        return _from_samples(samples, 8, text, icc)
    kind = "32-bit float" if mode == "F" else mode
    raise UpscaleError(f"{name} has image mode {kind}, which cannot be upscaled; convert it to 8- or 16-bit RGB, "
                       "RGBA or grey first")


def read_picture(path: Path) -> Picture:
    """Load an image file, upright; 16-bit PNGs keep their full depth.  Raises UpscaleError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UpscaleError(f"input image {str(path)!r} not found")

    try:
        with open_checked(path, f"input {str(path)!r}") as image:
            text = dict(getattr(image, "text", None) or {})
            header = pngio.png_header(path) if image.format == "PNG" else None
            if header and header[2] == 16 and header[3] != 0:
                # Pillow would drop the low byte of 16-bit colour/alpha samples: decode them ourselves.
                samples = photos.orient_array(pngio.read_png16(path), photos.orientation(image))
                for key in ORIENTATION_TEXT:
                    if key in text:
                        text[key] = photos.upright(image).info.get(key, text[key])
                return _from_samples(samples, 16, text, image.info.get("icc_profile"))
            return picture_from_pil(image, text, name=f"input {str(path)!r}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        detail = "not an image Pillow can read" if isinstance(exc, UnidentifiedImageError) else f"not a readable image ({exc})"
        raise UpscaleError(f"input {str(path)!r} is {detail}; pass PNG, JPEG, WebP or another image file") from None


def resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-resample float HxW or HxWxC to ``size`` = (width, height), channel by channel."""
    if (values.shape[1], values.shape[0]) == size:
        return values
    if values.ndim == 2:
        # no copy for a contiguous float32 plane (the engine's output planes are): Pillow maps it
        plane = np.ascontiguousarray(values, dtype=np.float32)
        return np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.LANCZOS))
    planes = [resize(values[:, :, c], size) for c in range(values.shape[2])]
    return np.stack(planes, axis=2)


def target_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """round(w*s) x round(h*s) (Python rounding, at least 1 px)."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def samples_to_pil(samples: np.ndarray, bits: int) -> Image.Image:
    """A Pillow image for 8-bit samples or 16-bit grey; other 16-bit layouts have no Pillow mode."""
    channels = samples.shape[2]
    if bits == 8:
        # Pillow infers L / LA / RGB / RGBA from the uint8 array shape.
        return Image.fromarray(samples[:, :, 0] if channels == 1 else samples)
    if channels == 1:
        return Image.fromarray(samples[:, :, 0].astype(np.uint16))
    raise UpscaleError("16-bit colour or grey+alpha results have no Pillow mode; write them with encode_png instead")


def encode_png(samples: np.ndarray, bits: int, text: dict[str, str], icc: bytes | None = None) -> bytes:
    """PNG bytes with the given text chunks (and ICC profile); 16-bit goes through :mod:`.pngio`, 8-bit through Pillow."""
    if bits == 16:
        return pngio.encode_png16(samples.astype(np.uint16), text, icc=icc)
    buffer = io.BytesIO()
    samples_to_pil(samples, 8).save(buffer, format="PNG", pnginfo=png.pnginfo(text), icc_profile=icc)
    return buffer.getvalue()


# Images without a localflux recipe (photos, other tools' PNGs) get their steps here instead:
# no recipe is invented for them (replay would have nothing to render), but the output still says
# how it was made.
STEPS_KEY = "localflux-upscale"


def add_upscale_step(text: dict[str, str], record: dict) -> dict[str, str]:
    """Copy of ``text`` with ``record`` appended to an ``upscale_steps`` list.

    Shape (documented in docs/upscale.md): the ``localflux`` recipe JSON object gains a list
    ``upscale_steps``, one record per upscale applied, oldest first; every other key is left as it
    was.  Images without a ``localflux`` chunk get no recipe invented for them: their steps go to a
    ``localflux-upscale`` chunk holding ``{"upscale_steps": [...]}``.
    """
    text = dict(text)
    key = RECIPE_KEY if RECIPE_KEY in text else STEPS_KEY
    if key not in text:
        text[key] = json.dumps({"upscale_steps": [record]}, ensure_ascii=False)
        return text
    try:
        recipe = json.loads(text[key])
    except json.JSONDecodeError:
        recipe = None
    if not isinstance(recipe, dict):
        log.warning("the image's %s chunk is not a JSON object; kept unchanged", key)
        return text
    steps = recipe.get("upscale_steps")
    recipe["upscale_steps"] = (list(steps) if isinstance(steps, list) else []) + [record]
    text[key] = json.dumps(recipe, ensure_ascii=False)
    return text
