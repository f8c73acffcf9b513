"""Run an upscaler network over an image, tile by tile, with realesrgan-ncnn-vulkan's conventions.

Conventions (matched against the ncnn engine's output, see tests/test_upscale_golden.py):

* the input is scaled to [0, 1] and reflect-padded by ``BORDER`` = 10 px before the network runs,
  and ``BORDER * scale`` px are cropped from each side of the output;
* inside the image a tile's 10 px context comes from real neighbouring pixels, so reflection only
  ever happens at the image border;
* floats go back to integers as ``trunc(clamp(x * max + 0.5, 0, max))`` (``max`` = 255 or 65535).

Tiling: ``tile`` is the core size in input pixels and is honoured exactly; every tile also computes
``overlap`` extra pixels on each side that are blended with linear (feathered) weights.  The
default overlap of 32 px was chosen by measurement on a real photo with x4plus (9 tiles of 64 px):
overlap 16 -> 49.6 dB, 24 -> 52.4 dB, 32 -> 54.3 dB tiled vs untiled; x4plus's receptive field is
wide, so 16 px falls short of the 50 dB requirement (see docs/upscale.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .. import device as policy
from ..device import available_ram
from ..errors import UpscaleError
from ..progress import progress_bar
from .tiling import Span, axis_weights, plan_axis

log = logging.getLogger(__name__)

BORDER = 10
DEFAULT_OVERLAP = 32
MIN_TILE = 32
CPU_TILE_CAP = 1024  # x4plus needs ~16 KB of activations per input px in fp32: 1024^2 is ~17 GB
GPU_TILE_CAP = 2048


@dataclass
class RunInfo:
    """What actually happened; recorded in the PNG recipe so a run can be reproduced."""

    tile: int
    overlap: int
    tiles: int
    device: str
    dtype: str


def pick_device(name: str = "auto") -> torch.device:
    """The house policy (``localflux.device``), as a torch device."""
    return torch.device(policy.pick_device(name))


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """The house policy for upscaling (``localflux.device``): float16 on GPUs, float32 on the CPU."""
    return getattr(torch, policy.pick_dtype(str(device), name, work=policy.UPSCALING))


def _bytes_per_input_pixel(model: torch.nn.Module, scale: int, elem: int) -> int:
    # Peak activations live at the output resolution: about 4 feature maps of num_feat channels
    # (RRDBNet's conv_up2/conv_hr stage) or the pixel-shuffle input (SRVGG).  Rough, but on the safe side.
    num_feat = next(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return elem * (4 * scale * scale * num_feat + 12 * num_feat)


def auto_tile(model: torch.nn.Module, scale: int, device: torch.device, dtype: torch.dtype, height: int, width: int, overlap: int = DEFAULT_OVERLAP) -> int:
    """Tile size from free memory: the whole image if it fits, else the fewest balanced tiles.

    Budget: half the free CUDA memory, or a quarter of the available RAM on CPU/MPS; the window a
    tile computes is ``tile + 2*overlap + 2*BORDER`` px wide.  Capped (1024 px CPU, 2048 px GPU) so
    a wrong memory reading cannot ask for absurd allocations.
    """
    elem = torch.finfo(dtype).bits // 8
    per_pixel = _bytes_per_input_pixel(model, scale, elem)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget, cap = free * 0.5, GPU_TILE_CAP
    else:
        budget, cap = (available_ram() or 4 * 1024**3) * 0.25, CPU_TILE_CAP  # unknown: assume 4 GiB
    longest = max(height, width)
    if (height + 2 * BORDER) * (width + 2 * BORDER) * per_pixel <= budget and longest <= cap:
        return longest  # one pass: no overlap recomputation at all
    window = int((budget / per_pixel) ** 0.5)
    core = max(MIN_TILE, min(cap, window - 2 * (BORDER + overlap)))
    count = -(-longest // core)  # ceil: fewest tiles per axis, then spread the pixels evenly over them
    return max(MIN_TILE, -(-longest // count))


class Engine:
    """A loaded network on a device, ready to upscale float RGB arrays."""

    def __init__(self, model: torch.nn.Module, scale: int, device: torch.device, dtype: torch.dtype, pad_multiple: int = 1):
        self.scale = scale
        self.device = device
        self.dtype = dtype
        self.pad_multiple = pad_multiple
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = model.eval().to(device=device, dtype=dtype, memory_format=self.memory_format)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network on one padded tile (1x3xHxW float32 on CPU) -> float32 CPU output."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        extra_h, extra_w = (-h) % m, (-w) % m
        if extra_h or extra_w:  # pixel-unshuffle models (x2plus) need sizes divisible by 2 (or 4)
            x = F.pad(x, (0, extra_w, 0, extra_h), mode="reflect")
        x = x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)
        y = self.model(x)
        y = y[..., : h * self.scale, : w * self.scale]
        return y.to(device="cpu", dtype=torch.float32)

    def upscale(self, rgb: np.ndarray, *, tile: int | None = None, overlap: int = DEFAULT_OVERLAP, progress: bool = True) -> tuple[np.ndarray, RunInfo]:
        """Upscale ``rgb`` (HxWx3 float32 in [0, 1]) by the model's native scale, into one float buffer.

        Returns the raw float output (not clamped) and the tile/overlap/device actually used.  Costs
        12 bytes per native pixel: the stage streams with :meth:`stream` instead; this is for tests
        and small images.
        """
        height, width = rgb.shape[:2]
        full = torch.empty((3, height * self.scale, width * self.scale), dtype=torch.float32)

        def keep(y0: int, band: torch.Tensor) -> None:
            full[:, y0 : y0 + band.shape[1]] = band

        info = self.stream(rgb, keep, tile=tile, overlap=overlap, progress=progress)
        return full.permute(1, 2, 0).numpy(), info

    def stream(self, rgb: np.ndarray, sink: Callable[[int, torch.Tensor], None], *, tile: int | None = None,
               overlap: int = DEFAULT_OVERLAP, progress: bool = True) -> RunInfo:
        """Upscale ``rgb`` by the native scale, handing finished horizontal bands to ``sink``.

        ``sink(y0, band)`` gets output rows ``y0 .. y0 + band.shape[1]`` as a float32 ``3 x n x W``
        tensor (raw, not clamped), top to bottom, each row exactly once per attempt; the band is only
        valid during the call (its memory is reused), so the sink copies what it keeps.  On a CUDA out-of-memory error the whole image is redone with half the tile
        size (said on stderr), so the sink must accept rows it has seen before.
        """
        if overlap < 0:
            raise UpscaleError(f"overlap must be 0 or more pixels, not {overlap}")
        if tile is not None and tile < 1:
            raise UpscaleError(f"tile must be at least 1 pixel, not {tile}")
        if tile is None:
            tile = auto_tile(self.model, self.scale, self.device, self.dtype, rgb.shape[0], rgb.shape[1], overlap)
        while True:
            try:
                with torch.inference_mode():
                    count = self._run_bands(rgb, tile, overlap, progress, sink)
                return RunInfo(tile, overlap, count, self.device.type, str(self.dtype).replace("torch.", ""))
            except torch.OutOfMemoryError:
                if tile <= MIN_TILE:
                    raise UpscaleError(f"out of GPU memory even with {tile} px tiles; close other GPU programs or use --device cpu") from None
                tile = max(MIN_TILE, tile // 2)
                log.warning("out of GPU memory; retrying with --tile %d", tile)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _run_bands(self, rgb: np.ndarray, tile: int, overlap: int, progress: bool, sink) -> int:
        height, width = rgb.shape[:2]
        s = self.scale
        # Reflect-pad once; tiles then slice their context from it, so reflection happens only at the border.
        padded = np.pad(rgb, ((BORDER, BORDER), (BORDER, BORDER), (0, 0)), mode="reflect").transpose(2, 0, 1)
        source = torch.from_numpy(np.ascontiguousarray(padded))[None]
        del padded  # only the channels-first copy is kept
        rows, cols = plan_axis(height, tile, overlap), plan_axis(width, tile, overlap)
        if len(rows) * len(cols) == 1:
            sink(0, self._forward(source)[0, :, BORDER * s : -BORDER * s, BORDER * s : -BORDER * s])
            return 1
        # The tiles form a grid and each one's weights are wy x wx, so their sum is (sum of wy) x (sum
        # of wx): two vectors instead of a full-size plane.
        row_sum, col_sum = _weight_sums(rows, height, overlap, s), _weight_sums(cols, width, overlap, s)
        col_weights = [torch.from_numpy(axis_weights(x, width, overlap, s)) for x in cols]
        # Every tile computes a window of the same size (shifted inward at the image border, where it
        # just takes more real context): on CPU, oneDNN compiles kernels per input shape, and a
        # new shape costs seconds for x4plus, so one shape per image keeps tiling cheap.
        win_y, win_x = min(height, tile + 2 * overlap), min(width, tile + 2 * overlap)
        # While tile row i runs, ``acc`` holds its extended span of output rows, [ext0, ext1) x scale;
        # the top rows already hold what the rows above added.  Once the row is done, every row above
        # the next tile row's span is final: it goes to the sink, and the rest moves to the top.  One
        # buffer for the whole image: allocating one per band fragments the heap (RSS grows).
        buffer = torch.zeros((3, max(t.ext1 - t.ext0 for t in rows) * s, width * s), dtype=torch.float32)
        bar = _progress_bar(len(rows) * len(cols), progress)
        try:
            for i, ty in enumerate(rows):
                acc0, size = ty.ext0 * s, (ty.ext1 - ty.ext0) * s
                acc = buffer[:, :size]
                wy = torch.from_numpy(axis_weights(ty, height, overlap, s))
                y0 = max(0, min(ty.ext0, height - win_y))
                for tx, wx in zip(cols, col_weights):
                    x0 = max(0, min(tx.ext0, width - win_x))
                    piece = source[:, :, y0 : y0 + win_y + 2 * BORDER, x0 : x0 + win_x + 2 * BORDER]
                    out = self._forward(piece)
                    top, left = (ty.ext0 - y0 + BORDER) * s, (tx.ext0 - x0 + BORDER) * s
                    out = out[0, :, top : top + size, left : left + (tx.ext1 - tx.ext0) * s]
                    acc[:, :, _out_slice(tx, s)] += out * (wy[:, None] * wx[None, :])
                    bar.update(1)
                done = rows[i + 1].ext0 * s - acc0 if i + 1 < len(rows) else size
                if done > 0:
                    band = acc[:, :done]
                    band /= row_sum[acc0 : acc0 + done][None, :, None]  # in place, as a whole-image division did
                    band /= col_sum[None, None, :]
                    sink(acc0, band)
                    buffer[:, : size - done] = acc[:, done:size].clone()  # clone: the two ranges may overlap
                    buffer[:, size - done :] = 0
        finally:
            bar.close()
        return len(rows) * len(cols)


def _weight_sums(spans: list[Span], length: int, overlap: int, scale: int) -> torch.Tensor:
    """Summed feather weights along one axis (the normaliser of the blend)."""
    total = torch.zeros(length * scale, dtype=torch.float32)
    for span in spans:
        total[_out_slice(span, scale)] += torch.from_numpy(axis_weights(span, length, overlap, scale))
    return total


def _out_slice(span: Span, scale: int) -> slice:
    return slice(span.ext0 * scale, span.ext1 * scale)


def _progress_bar(total: int, enabled: bool):
    return progress_bar(total, "upscale", "tile", enabled=enabled)


def to_integer(values: np.ndarray, max_value: int) -> np.ndarray:
    """ncnn-vulkan's float -> integer rule: ``trunc(clamp(x * max + 0.5))``."""
    dtype = np.uint8 if max_value == 255 else np.uint16
    scaled = values * max_value  # one float temporary, then in place: the same float32 operations
    scaled += 0.5
    np.clip(scaled, 0, max_value, out=scaled)
    return scaled.astype(dtype)
