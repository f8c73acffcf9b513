"""Vary an image: FLUX.1 Redux (``FluxPriorReduxPipeline``) -> the base pipeline's prompt embeddings.

The Redux prior (SigLIP vision model + ``ReduxImageEncoder``) turns each ``input.redux`` picture into
tokens in T5's space. localflux gives the prior the base pipeline's own text encoders and tokenizers
(without them diffusers uses zeros of FLUX.1's full size, (1, 512, 4096) and (1, 768), which breaks every
other shape and drops the prompt), so the prior encodes the prompt itself — at 512 T5 tokens, whatever
the base's ``max_sequence_length`` — and returns, per picture, [512 text tokens | image tokens] x
``redux_scale`` and the pooled CLIP vector x ``redux_scale``; several pictures are summed, as diffusers
does. The base pipeline then gets only ``prompt_embeds`` / ``pooled_prompt_embeds`` (not the prompt text:
``Prepared.replaces_prompt``). The prior draws nothing from the generator, so the embeddings are computed
once per run (``Prepared.encode``) and shared by every seed.

Pictures are read as ``load_image`` reads them (EXIF-upright RGB); the prior's SigLIP processor resizes
them (bicubic) to its input size. The recipe records each picture (sha256) and the prior's folder with
the sha256 of its weight files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import FluxPriorReduxPipeline
from huggingface_hub import snapshot_download

from ..errors import ConfigError
from ..hashing import sha256_file
from .base import Prepared, Task
from .images import read_input

log = logging.getLogger(__name__)

REDUX_HUB_ID = "black-forest-labs/FLUX.1-Redux-dev"
# what the prior puts on the accelerator before denoising (memory plans): SigLIP-so400m's vision tower (≈ 0.43 B)
# + the Redux embedder (1152 -> 12288 -> 4096: ≈ 0.065 B); it encodes with the base's own text encoders
PRIOR_PARAMS = 493_000_000
PRIOR_T5_TOKENS = 512  # FluxPriorReduxPipeline encodes the prompt at 512 T5 tokens (diffusers 0.42.1)
_PRIORS: dict = {}  # (folder, device, dtype) -> FluxPriorReduxPipeline without text encoders (process-wide)


class ReduxTask(Task):
    name = "redux"
    role = "text"  # the base FluxPipeline, given embeddings

    def select(self, config, family, preset) -> bool:
        return bool(config.input.redux)

    def validate(self, config, family, preset) -> None:
        given = config.input
        if config.model.redux is None:
            raise ConfigError("--redux needs a FLUX.1 Redux prior: give --redux-model (a diffusers folder such as "
                              f"{REDUX_HUB_ID}) or set [model] redux")
        for present, flag in ((given.image is not None, "--image"), (given.mask is not None, "--mask"),
                              (given.strength is not None, "--strength"), (given.outpaint is not None, "--outpaint"),
                              (bool(given.references), "--reference")):
            if present:
                raise ConfigError(f"{flag} does not combine with --redux (the Redux prior conditions a text-to-image "
                                  "render through its prompt embeddings); drop one of them")
        prior_folder(config.model.redux)

    def prepare(self, config, family, preset, size) -> Prepared:
        folder = prior_folder(config.model.redux)
        refs = config.input.redux
        images = [read_input(ref, f"redux {n + 1}" if len(refs) > 1 else "redux") for n, ref in enumerate(refs)]
        side = _processor_size(folder)
        for image in images:
            if side is not None and tuple(image.image.size) != side:
                image.step("resize", to=list(side), filter="bicubic", keep_aspect=False, by="diffusers (SigLIP processor)")
        scale = float(config.input.redux_scale)
        record = {"redux_images": len(images), "redux_scale": scale, "redux_model": str(folder),
                  "redux_files": _weight_records(folder), "t5_tokens": PRIOR_T5_TOKENS, "combine": "sum"}
        pictures = [image.image for image in images]
        return Prepared(self.name, {}, [image.record for image in images], record, size, role=self.role,
                        encode=lambda pipe, request: redux_embeddings(pipe, folder, pictures, scale, request),
                        replaces_prompt=True, workload=self.workload(size.width, size.height, size.multiple))

    def workload(self, width, height, multiple, reference=None) -> dict:
        return {"prior_params": PRIOR_PARAMS}


def prior_folder(setting: str) -> Path:
    """The Redux prior's folder: a local diffusers folder, or a hub id already in the Hugging Face cache."""
    path = Path(setting).expanduser()
    if path.is_dir():
        if not (path / "image_embedder").is_dir():
            raise ConfigError(f"model.redux {setting!r} is not a FLUX.1 Redux prior (no image_embedder/ folder); give "
                              f"a diffusers folder of {REDUX_HUB_ID}")
        return path
    try:

        return Path(snapshot_download(setting, local_files_only=True))
    except Exception:  # noqa: BLE001 - not a folder and not in the cache
        raise ConfigError(f"model.redux {setting!r} is not a folder here nor in the Hugging Face cache; download it "
                          f"first (huggingface-cli download {REDUX_HUB_ID}) and give its folder") from None


def _processor_size(folder: Path) -> tuple[int, int] | None:
    try:
        size = json.loads((folder / "feature_extractor" / "preprocessor_config.json").read_text())["size"]
        return int(size["width"]), int(size["height"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _weight_records(folder: Path) -> list[dict]:

    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    return [{"path": str(p), "sha256": sha256_file(p, progress=False)} for p in files]


def load_prior(folder: Path, device, dtype):
    """The prior's image modules (cached per folder, device and dtype); text modules come from the base."""
    key = (str(folder), str(device), str(dtype))
    if key not in _PRIORS:

        prior = FluxPriorReduxPipeline.from_pretrained(folder, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                                       tokenizer_2=None, dtype=dtype)
        prior.image_encoder.to(device).eval()
        prior.image_embedder.to(device).eval()
        prior.set_progress_bar_config(disable=True)
        _PRIORS[key] = prior
    return _PRIORS[key]


def redux_embeddings(pipe, folder: Path, pictures: list, scale: float, request) -> dict:
    """``prompt_embeds`` / ``pooled_prompt_embeds`` for the base pipeline, from the prior with the base's encoders."""

    device, dtype = pipe._execution_device, pipe.vae.dtype
    images = load_prior(folder, device, dtype)
    prior = FluxPriorReduxPipeline(image_encoder=images.image_encoder, feature_extractor=images.feature_extractor,
                                   image_embedder=images.image_embedder, text_encoder=pipe.text_encoder,
                                   tokenizer=pipe.tokenizer, text_encoder_2=pipe.text_encoder_2,
                                   tokenizer_2=pipe.tokenizer_2)
    n = len(pictures)
    with torch.inference_mode():
        out = prior(image=pictures if n > 1 else pictures[0], prompt=[request.prompts["clip"]] * n,
                    prompt_2=[request.prompts["t5"]] * n, prompt_embeds_scale=[scale] * n,
                    pooled_prompt_embeds_scale=[scale] * n)
    return {"prompt_embeds": out.prompt_embeds, "pooled_prompt_embeds": out.pooled_prompt_embeds}
