"""Shared pieces of the training tests: a synthetic subject, a config, a prompt-sensitive tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

# The subject: an orange square on blue, a little different in every image (64x64).
SQUARES = [(16, 16, 28), (20, 14, 26), (12, 20, 30), (18, 18, 24)]
TRIGGER = "zqx"

BASE_TOML = """
[model]
source = "{source}"
device = "cpu"

[dataset]
folder = "{folder}"
trigger = "zqx"
resolutions = [64]

[lora]
rank = 8
alpha = 8

[optimizer]
lr = 1e-2

[training]
steps = {steps}
seed = 1

[checkpoint]
every = {every}
keep = 2

[samples]
every = 0
prompts = ["photo of [trigger]", "photo of a mountain lake"]
seeds = [42]

[output]
dir = "{out}"
name = "zqx"
"""


def make_subject(folder: Path, captions: bool = False) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i, (x, y, s) in enumerate(SQUARES):
        image = Image.new("RGB", (64, 64), (30, 60, 200))
        ImageDraw.Draw(image).rectangle([x, y, x + s, y + s], fill=(255, 140, 0))
        image.save(folder / f"img{i}.png")
        if captions:
            (folder / f"img{i}.txt").write_text("photo of [trigger]")
    return folder


def write_config(tmp_path: Path, *, source: str = "tiny", steps: int = 6, every: int = 3, name: str = "train.toml",
                 folder: Path | None = None, out: str = "run", extra: str = "") -> Path:
    folder = folder or make_subject(tmp_path / "data")
    path = tmp_path / name
    path.write_text(BASE_TOML.format(source=source, folder=folder, steps=steps, every=every, out=out) + extra)
    return path


@pytest.fixture(scope="session")
def listening_tiny(tmp_path_factory) -> Path:
    """The tiny schnell model with its text pathway amplified x10, saved as a diffusers folder.

    The random tiny model barely listens to its prompt (two prompts change a 4-step render's latent
    by ~3% of its norm), so no LoRA could make a trigger word matter more than any other prompt.
    Scaling the two text projections (T5 -> context tokens, CLIP pooled -> modulation) by 10 makes the
    prompt move the render by ~40%, like a real text-to-image model.
    """
    import torch

    from localflux.families.flux1.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("schnell")
    with torch.no_grad():
        pipe.transformer.time_text_embed.text_embedder.linear_2.weight.mul_(10)
        pipe.transformer.context_embedder.weight.mul_(10)
    folder = tmp_path_factory.mktemp("models") / "tiny-listening"
    pipe.save_pretrained(folder)
    return folder


def lora_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
