"""Realistic photo files made in code: phone orientations, ICC profiles, CMYK, odd modes.

The test pattern is asymmetric so that a rotation or mirror is visible: on a grey field, red in the
top-left, green in the top-right, blue in the bottom-left corner (the bottom-right stays grey).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 200, 30), (30, 30, 220), (128, 128, 128)

# How a camera stores the upright picture for each EXIF orientation (exif_transpose undoes it).
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def pattern(width: int = 24, height: int = 16) -> Image.Image:
    a = np.full((height, width, 3), GREY, np.uint8)
    a[: height // 2, : width // 3] = RED
    a[: height // 2, -(width // 3):] = GREEN
    a[height // 2:, : width // 3] = BLUE
    return Image.fromarray(a)


def corners(image: Image.Image) -> tuple[str, str, str, str]:
    """Nearest named colour at the top-left, top-right, bottom-left, bottom-right corners (2 px in)."""
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    names = {"red": RED, "green": GREEN, "blue": BLUE, "grey": GREY}

    def name(y, x):
        return min(names, key=lambda n: sum((rgb[y, x, c] - names[n][c]) ** 2 for c in range(3)))

    return name(2, 2), name(2, -3), name(-3, 2), name(-3, -3)


UPRIGHT = ("red", "green", "blue", "grey")


def oriented(orientation: int, image: Image.Image | None = None) -> tuple[Image.Image, Image.Exif]:
    """(stored pixels, EXIF with the Orientation tag) that a viewer shows as ``image`` upright."""
    image = image or pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    return (image.transpose(_STORED[orientation]) if orientation in _STORED else image.copy()), exif


def save_phone_jpeg(path: Path, orientation: int, image: Image.Image | None = None, **kwargs) -> Path:
    stored, exif = oriented(orientation, image)
    stored.save(path, quality=95, exif=exif, **kwargs)
    return path


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# Display P3 colorants (D50-adapted, as in Apple's "Display P3" profile); the sRGB tone curve is the same.
_P3_XYZ = {b"rXYZ": (0.515121, 0.241196, -0.001053), b"gXYZ": (0.291977, 0.692245, 0.041885),
           b"bXYZ": (0.157104, 0.066574, 0.784073)}


def p3_profile() -> bytes:
    """A Display-P3-like RGB profile: littlecms' sRGB profile with the P3 primaries patched in."""
    data = bytearray(srgb_profile())
    (count,) = struct.unpack(">I", data[128:132])
    for i in range(count):
        sig, offset, _size = struct.unpack(">4sII", data[132 + 12 * i: 144 + 12 * i])
        if sig in _P3_XYZ:
            data[offset + 8: offset + 20] = b"".join(struct.pack(">i", round(v * 65536)) for v in _P3_XYZ[sig])
    data[84:100] = bytes(16)  # profile ID (an MD5 of the old content) no longer applies
    return bytes(data)
