"""Real photographs, read the same way by the upscaler and the trainer.

Camera and phone files differ from rendered PNGs in three ways that change pixels:

* **EXIF orientation**: phones store a portrait as a landscape sensor readout plus an Orientation
  tag (3, 6, 8 ...) that every viewer applies.  :func:`upright` applies it, and Pillow also removes
  the tag from the XMP and ImageMagick "Raw profile type exif" text that would otherwise carry it
  into an output file and make a viewer rotate the picture a second time;
* **ICC profiles**: the numbers mean different colours under a Display P3 or Adobe RGB profile
  than under sRGB.  :func:`icc_colour_space` tells which kind of profile a file carries,
  :func:`to_srgb` converts to sRGB (for training: FLUX learned sRGB pictures);
* **CMYK** (print JPEGs): :func:`cmyk_to_rgb` uses the embedded CMYK profile when there is one.

Nothing here raises for a bad profile: a profile littlecms cannot use is ignored (the pixels are
then taken as sRGB, which is what most software does with such files).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from . import optional

ORIENTATION_TAG = 0x0112


def orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1..8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block must not make the picture unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """``image`` as a viewer shows it (EXIF orientation applied; the tag removed from its info)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unreadable EXIF: show it as stored, like viewers that cannot parse it
        return image.copy()


def orient_array(samples: np.ndarray, value: int) -> np.ndarray:
    """The numpy equivalent of :func:`upright` for HxW[xC] samples (16-bit PNGs Pillow cannot hold)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(value)
    return samples if op is None else np.ascontiguousarray(op(samples))


def icc_colour_space(icc: bytes | None) -> str | None:
    """'RGB', 'GRAY', 'CMYK' (or another ICC colour space name) of a profile; None if absent or unreadable."""
    if not icc or len(icc) < 20:
        return None
    try:
        return icc[16:20].decode("ascii").strip() or None  # the header's colour-space signature
    except UnicodeDecodeError:
        return None


def _image_cms():
    """Pillow's littlecms binding, or None where Pillow was built without it."""
    if not optional.is_available("PIL._imagingcms"):
        return None
    from PIL import ImageCms  # optional part of Pillow, after optional.is_available

    return ImageCms


def _srgb_profile():
    ImageCms = _image_cms()
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _transform(image: Image.Image, icc: bytes, mode: str) -> Image.Image | None:
    """``image`` converted from the profile ``icc`` to sRGB in ``mode``; None if littlecms refuses."""
    ImageCms = _image_cms()
    if ImageCms is None:
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, _srgb_profile(), renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                         outputMode=mode)
    except Exception:  # PyCMSError (bad profile, mode mismatch), OSError (unreadable profile)
        return None


def cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """A CMYK image as RGB: through its CMYK ICC profile to sRGB when it has one, else Pillow's formula."""
    icc = image.info.get("icc_profile")
    if icc_colour_space(icc) == "CMYK":
        converted = _transform(image, icc, "RGB")
        if converted is not None:
            converted.info.pop("icc_profile", None)
            return converted
    result = image.convert("RGB")
    result.info.pop("icc_profile", None)  # a CMYK profile does not describe RGB numbers
    return result


def to_srgb(image: Image.Image) -> Image.Image:
    """An RGB or RGBA image with its RGB ICC profile (Display P3, Adobe RGB ...) converted to sRGB.

    Images without a profile, or with a profile of another kind, are returned unchanged (taken as
    sRGB).  Alpha is carried over untouched.
    """
    icc = image.info.get("icc_profile")
    if image.mode not in ("RGB", "RGBA") or icc_colour_space(icc) != "RGB":
        return image
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    converted = _transform(image.convert("RGB"), icc, "RGB")
    if converted is None:
        return image
    converted.info.pop("icc_profile", None)
    if alpha is not None:
        converted.putalpha(alpha)
    return converted
