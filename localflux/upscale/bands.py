"""From the engine's float bands to the integer output, one band at a time (bounded memory).

The engine hands over finished horizontal bands of the native-scale result (see
:meth:`.engine.Engine.stream`).  Each writer turns them into integer samples in place in the final
``uint8``/``uint16`` array, so no full-size float image is ever kept:

* :class:`NativeWriter` -- output at the model's native scale (``--scale 4`` with an x4 model):
  each band is converted and written at once; the float band is then dropped.
* :class:`ResizeWriter` -- any other scale.  Lanczos is separable and Pillow's horizontal pass
  treats rows independently, so each band is resized horizontally as it arrives (bit-identical to
  one whole-image resize, checked in tests); the vertical pass needs every row, so the
  horizontally resized planes (4 bytes x output width x native height, per channel) are kept until
  :meth:`ResizeWriter.finish`.

Both write colour (three channels, or one luma channel for grey pictures) starting at channel
``first`` of ``out``, so the same writers serve an alpha plane run through the network as grey.
"""

from __future__ import annotations

import numpy as np
import torch

from .engine import to_integer
from .images import LUMA, resize


def write_rows(out: np.ndarray, y0: int, color: np.ndarray, first: int, gray: bool, max_value: int) -> None:
    """Integer samples of float ``color`` (n x W x 3) into ``out[y0:y0+n, :, first:...]``, plane by plane."""
    target = out[y0 : y0 + color.shape[0]]
    if gray:
        target[:, :, first] = to_integer(color @ LUMA, max_value)
        return
    for c in range(3):
        target[:, :, first + c] = to_integer(color[:, :, c], max_value)


class NativeWriter:
    """Bands at the final size: convert and write each one as it comes."""

    def __init__(self, out: np.ndarray, first: int, gray: bool, max_value: int):
        self.out, self.first, self.gray, self.max_value = out, first, gray, max_value

    def __call__(self, y0: int, band: torch.Tensor) -> None:
        # The channels-last view of the channels-first band: the same memory layout as the former
        # whole-image buffer, so numpy's luma product rounds exactly as before.
        write_rows(self.out, y0, band.permute(1, 2, 0).numpy(), self.first, self.gray, self.max_value)

    def finish(self) -> None:
        pass


class ResizeWriter:
    """Bands at the native scale, Lanczos to ``out``'s size: horizontal pass per band, vertical at the end."""

    def __init__(self, out: np.ndarray, first: int, gray: bool, max_value: int, native_height: int):
        self.out, self.first, self.gray, self.max_value = out, first, gray, max_value
        height, width = out.shape[:2]
        self.size = (width, height)
        self.planes = [np.empty((native_height, width), dtype=np.float32) for _ in range(3)]

    def __call__(self, y0: int, band: torch.Tensor) -> None:
        rows = band.shape[1]
        for c, plane in enumerate(self.planes):
            plane[y0 : y0 + rows] = resize(np.ascontiguousarray(band[c].numpy()), (self.size[0], rows))

    def finish(self) -> None:
        planes, self.planes = self.planes, []
        if self.gray:
            # luma of the three resized planes stacked channels-last, as the whole-image path did
            write_rows(self.out, 0, np.stack([resize(p, self.size) for p in planes], axis=2), self.first, True, self.max_value)
            return
        for c in range(3):
            self.out[:, :, self.first + c] = to_integer(resize(planes[c], self.size), self.max_value)
            planes[c] = None  # free each horizontally resized plane as soon as it is written
