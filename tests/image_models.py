"""Test helper: tiny Fill and Kontext models of two shapes each, as diffusers folders, plus input pictures."""

from __future__ import annotations

from pathlib import Path


def save_task_model(kind: str, shape: str, folder: Path) -> None:
    """``kind``: base | fill | kontext; ``shape``: "tiny" (localflux.tiny) or a tests/shape_models.py name."""
    import torch
    from diffusers import FluxTransformer2DModel

    from localflux.families.flux1.pipelines import pipeline_class

    if shape == "tiny":
        from localflux.families.flux1.tiny import build_tiny_components

        components = build_tiny_components({"base": "dev"}.get(kind, kind))
    else:
        from shape_models import SHAPES, build_shape_pipeline

        components = dict(build_shape_pipeline(shape).components)
        if kind == "fill":  # [noisy 64 | masked-image latents 64 | mask f*f pixels x 2x2 patches]
            f = 2 ** (len(SHAPES[shape]["vae"]["block_out_channels"]) - 1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(5)
                components["transformer"] = FluxTransformer2DModel(
                    patch_size=1, in_channels=128 + 4 * f * f, out_channels=64, **SHAPES[shape]["transformer"]).eval()
    role = {"base": "text"}.get(kind, kind)
    cls = pipeline_class(role)
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    cls(**{k: v for k, v in components.items() if k in accepted}).save_pretrained(folder)


def noise_picture(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8")).save(path)
    return path


def box_mask(path: Path, size: tuple[int, int], box: tuple[int, int, int, int]) -> Path:
    import numpy as np
    from PIL import Image

    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(mask).save(path)
    return path
