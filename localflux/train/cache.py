"""VAE latents and text embeddings, computed once and kept on disk.

Each entry is one small ``.safetensors`` file named by the sha256 of what determines it: the base
model's hash, the image bytes and bucket (latents) or the caption and T5 length (text), and the
dtype. A rerun, a resume or a second process finds them and skips the VAE and text encoders, which
can then leave the GPU for the whole of training. Files are written atomically (temp + rename); an
unreadable entry is simply computed again.

Latents are the mean of the VAE's latent distribution, normalised as FLUX expects
(``(mean - shift_factor) * scaling_factor``): deterministic, so the cache key says everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load

from ..families.flux1 import training as flux1_training
from ..hashing import sha256_file
from ..output import ensure_output_dir
from ..progress import progress_bar
from ..weightfile import save_safetensors
from .dataset import PIXELS_VERSION, Dataset, pixels_for_bucket

log = logging.getLogger(__name__)

EMPTY_CAPTION = ""  # caption dropout trains on the embedding of the empty prompt


@dataclass
class TrainingCache:
    latents: dict = field(default_factory=dict)  # (sample index, bucket) -> FLUX.1 (16, h/8, w/8), FLUX.2 (128, h/16, w/16)
    text: dict = field(default_factory=dict)  # caption -> the family's tensors (FLUX.1: t5, pooled; FLUX.2: embeds)
    computed: int = 0  # entries computed in this run (0 on a rerun)
    loaded: int = 0


def base_model_hash(loaded) -> str:
    """sha256 over the base model's files (cached per file), or the tiny model's weight fingerprint."""

    if loaded.fingerprint:
        return loaded.fingerprint
    h = hashlib.sha256()
    for path in sorted(loaded.files, key=lambda p: (p.parent.name, p.name)):
        h.update(f"{path.parent.name}/{path.name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def build_cache(pipe, dataset: Dataset, *, cache_dir: Path, model_hash: str, device: str,
                max_sequence_length: int, progress: bool = False, spec=None) -> TrainingCache:
    """Latents for every (image, bucket) and embeddings for every caption plus the empty one."""
    folder = ensure_output_dir(cache_dir)
    cache = TrainingCache()
    latent_jobs = sorted({(item.sample, item.bucket) for item in dataset.items})
    captions = sorted(set(dataset.captions) | {EMPTY_CAPTION})
    bar = _bar(len(latent_jobs) + len(captions), progress)
    if spec is None:
        spec = flux1_training  # the FLUX.1 default of older callers
    vae_dtype = str(pipe.vae.dtype)
    for sample_index, bucket in latent_jobs:
        sample = dataset.samples[sample_index]
        key = _key("latent", model_hash, sample.sha256, bucket, vae_dtype, PIXELS_VERSION)
        cache.latents[(sample_index, bucket)] = _cached(
            cache, folder / "latents" / f"{key}.safetensors",
            lambda sample=sample, bucket=bucket: {"latent": _encode_latent(pipe, sample.path, bucket, device, spec)}
        )["latent"]
        _tick(bar)
    text_dtype = spec.text_dtype(pipe)
    for caption in captions:
        key = _key("text", model_hash, caption, max_sequence_length, text_dtype)
        entry = _cached(cache, folder / "text" / f"{key}.safetensors",
                        lambda caption=caption: _encode_text(pipe, caption, device, max_sequence_length, spec))
        cache.text[caption] = entry
        _tick(bar)
    if bar is not None:
        bar.close()
    return cache


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _cached(cache: TrainingCache, path: Path, compute) -> dict:


    if path.is_file():
        try:
            tensors = load(path.read_bytes())
            cache.loaded += 1
            return tensors
        except Exception as exc:  # safetensors raises several types for damaged files
            log.warning("cache entry %s is unreadable (%s); computing it again", path, exc)
    tensors = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
    ensure_output_dir(path.parent)
    save_safetensors(tensors, path, overwrite=True)
    cache.computed += 1
    # Training reads what a rerun would read, so a cached run and a fresh one see identical bytes.
    return load(path.read_bytes())


def _encode_latent(pipe, path: Path, bucket: tuple[int, int], device: str, spec):

    pixels = pixels_for_bucket(path, bucket)[None].to(device=device, dtype=pipe.vae.dtype)
    with torch.no_grad():
        return spec.encode_latent(pipe, pixels)


def _encode_text(pipe, caption: str, device: str, max_sequence_length: int, spec) -> dict:

    with torch.no_grad():  # outside no_grad the embeddings differed from a render's in a check here
        return spec.encode_text(pipe, caption, device, max_sequence_length)


def _bar(total: int, progress: bool):
    if not progress:
        return None

    return progress_bar(total, "caching latents and captions", "entry")


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)
