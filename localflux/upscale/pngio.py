"""A small PNG codec for 16-bit colour images, which Pillow can only read as 8-bit.

Pillow opens 48-bit RGB, 64-bit RGBA and 32-bit LA PNGs by dropping the low byte of every sample
and cannot write them at all.  Rather than add a dependency (pypng is pure Python too; OpenCV needs
libGL and drops text chunks), this module decodes and encodes those files with zlib + numpy:

* reading handles every filter type; None/Sub/Up rows are vectorised, Average/Paeth rows use a
  plain Python loop (a few seconds for a megapixel image; rare, since it is only used for 16-bit
  input);
* writing uses the Up filter for every row (vectorised, and it compresses photos well) and stores
  text chunks through :func:`localflux.io.png.text_chunk` (tEXt, or iTXt for UTF-8 and XMP).

Interlaced (Adam7) 16-bit files are refused with a clear message.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import UpscaleError
from ..io.png import chunk, text_chunk

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
COLOR_TYPE = {1: 0, 3: 2, 2: 4, 4: 6}


def png_header(path: Path) -> tuple[int, int, int, int, int] | None:
    """``(width, height, bit_depth, colour_type, interlace)`` of a PNG file, or None if not a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, depth, color, _comp, _filt, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, color, interlace


def _chunks(data: bytes, path: Path):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise UpscaleError(f"{str(path)!r} is a truncated PNG file; re-export it")
        yield kind, body
        pos += 12 + length
        if kind == b"IEND":
            return


def read_png16(path: Path) -> np.ndarray:
    """Pixels of a 16-bit PNG as ``uint16`` array HxWxC (C = 1, 2, 3 or 4)."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise UpscaleError(f"{str(path)!r} is not a PNG file")
    ihdr, idat = None, []
    for kind, body in _chunks(data, path):
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if ihdr is None:
        raise UpscaleError(f"{str(path)!r} has no PNG header chunk; re-export it")
    width, height, depth, color, _comp, _filter, interlace = ihdr
    if depth != 16 or color not in CHANNELS:
        raise UpscaleError(f"{str(path)!r}: only 16-bit grey/RGB/RGBA/grey+alpha PNGs go through the 16-bit reader")
    if interlace:
        raise UpscaleError(f"{str(path)!r} is an interlaced 16-bit PNG; save it without interlacing and try again")
    bpp = 2 * CHANNELS[color]
    stride = width * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise UpscaleError(f"{str(path)!r} has corrupt PNG image data ({exc}); re-export it") from None
    if len(raw) < height * (stride + 1):
        raise UpscaleError(f"{str(path)!r} has too little PNG image data; the file is truncated")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: running sum along each byte lane, wrapping mod 256
            cur = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):
            cur = np.frombuffer(_unfilter_slow(kind, line.tobytes(), prev.tobytes(), bpp), dtype=np.uint8)
        else:
            raise UpscaleError(f"{str(path)!r} row {y} uses unknown PNG filter {kind}; the file is corrupt")
        out[y] = cur
        prev = out[y]
    samples = out.view(">u2").reshape(height, width, CHANNELS[color])
    return samples.astype(np.uint16)


def _unfilter_slow(kind: int, line: bytes, prev: bytes, bpp: int) -> bytes:
    cur = bytearray(line)
    n = len(cur)
    if kind == 3:  # Average
        for i in range(n):
            left = cur[i - bpp] if i >= bpp else 0
            cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF
        return bytes(cur)
    for i in range(n):  # Paeth
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + predictor) & 0xFF
    return bytes(cur)


def encode_png16(pixels: np.ndarray, text: dict[str, str] | None = None, icc: bytes | None = None) -> bytes:
    """PNG bytes for a ``uint16`` HxWxC array (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), with an optional ICC profile."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in COLOR_TYPE:
        raise ValueError(f"encode_png16 needs uint16 HxWxC with C in 1..4, got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(height, width * channels * 2)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # Up filter (uint8 arithmetic wraps mod 256 as PNG requires)
    payload = np.concatenate([np.full((height, 1), 2, dtype=np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, COLOR_TYPE[channels], 0, 0, 0)
    parts = [SIGNATURE, chunk(b"IHDR", header)]
    if icc:  # iCCP: profile name, NUL, compression method 0 (zlib), compressed profile; before IDAT
        parts.append(chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    for key, value in (text or {}).items():
        parts.append(text_chunk(key, value))
    parts.append(chunk(b"IDAT", zlib.compress(payload.tobytes(), 6)))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)
