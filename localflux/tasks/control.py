"""Structural control: FLUX.1 Canny/Depth models and BFL's control LoRAs (``FluxControlPipeline``).

A control model's transformer reads 128 channels per token: the noisy latents (64) and the VAE latents of a
control picture (64) — an edge map (Canny) or a depth map (Depth). BFL's control LoRAs turn a FLUX.1 [dev]
into one (diffusers' ``load_lora_weights`` widens ``x_embedder`` from 64 to 128 inputs); either way the
control task runs ``FluxControlPipeline`` with ``control_image``.

``input.control_kind`` says what ``input.control`` is:

- ``map`` (default): a ready depth or edge map, used as it is;
- ``canny``: a photo; edges are computed as BFL's own preprocessor does (``flux.sampling.prepare_control``
  + ``CannyImageEncoder``): the photo is resized to the output size (Lanczos), round-tripped through
  [-1, 1] floats (``(x / 127.5 - 1 + 1) * 127.5`` truncated to uint8: 63 of 256 byte values drop by 1),
  then ``cv2.Canny(rgb, canny_low, canny_high)`` (BFL: 50, 200) on the 3-channel array, copied to 3
  channels. (controlnet_aux instead detects at its own resolution and resizes the edge map; BFL's is the
  one the models were trained with, and it needs no second resize.)
- ``depth``: a photo; a Depth Anything model (transformers, ``[model] depth`` or the Hugging Face cache,
  never downloaded) estimates depth as BFL's ``DepthImageEncoder`` does: predicted depth, bicubic
  (antialiased) to the output size, clamped to 0..255.

diffusers then reads the map as RGB, stretches it to W x H (Lanczos; a computed map already has that size)
and VAE-*samples* it with the seed's generator before drawing the noise (so each seed makes both draws).
The recipe records the control picture (path, sha256) and, for a computed map, its kind, parameters and
the sha256 of the map's PNG-encoded pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForDepthEstimation

from .. import optional
from ..errors import ConfigError, InputImageError
from ..lora.files import is_control_lora_file
from . import common
from .base import Prepared, Task
from .images import read_input, sha256_of_pil

log = logging.getLogger(__name__)

# BFL's Depth control preprocessor (flux/modules/image_embedders.py: DepthImageEncoder.depth_model_name)
DEPTH_HUB_ID = "LiheYoung/depth-anything-large-hf"


LATENT_CHANNELS = 16  # FLUX.1's VAE latent channels (the control picture's latents widen the transformer input)


def control_loras(config) -> list[str]:
    """The ``[[lora]]`` paths that are FLUX.1 control LoRAs (read from the files' headers)."""

    return [entry.path for entry in config.lora if is_control_lora_file(entry.path)]


class ControlTask(Task):
    name = "control"
    role = "control"

    def select(self, config, family, preset) -> bool:
        return preset == "control" or config.input.control is not None

    def validate(self, config, family, preset) -> None:
        given = config.input
        if given.control is None:
            raise ConfigError("a FLUX.1 control model (Canny/Depth) needs --control FILE (input.control): a depth or "
                              "edge map, or a photo with --control-kind canny|depth")
        if preset != "control" and not control_loras(config):
            raise ConfigError(f"--control (input.control) needs a FLUX.1 Canny/Depth model or a control LoRA "
                              f"(--lora flux1-canny-dev-lora.safetensors); this model is {preset} and no LoRA given "
                              "is a control LoRA")
        for present, flag in ((given.image is not None, "--image"), (given.mask is not None, "--mask"),
                              (given.strength is not None, "--strength"), (given.outpaint is not None, "--outpaint"),
                              (bool(given.references), "--reference"), (bool(given.redux), "--redux")):
            if present:
                raise ConfigError(f"{flag} does not combine with --control (FluxControlPipeline takes a control "
                                  "picture and a prompt only); drop one of them")
        if config.sampling.true_cfg > 1 and config.prompt.negative:
            raise ConfigError("FluxControlPipeline has no true CFG: drop --true-cfg / the negative prompt with --control")
        if given.control_kind == "canny" and given.canny_low > given.canny_high:
            raise ConfigError(f"input.canny_low {given.canny_low} is above input.canny_high {given.canny_high}; "
                              "the low threshold must not exceed the high one (BFL: 50 and 200)")
        if given.control_kind == "depth":
            depth_model_path(config.model.depth)  # raises the one-line error when no estimator is here

    def prepare(self, config, family, preset, size) -> Prepared:
        given = config.input
        control = read_input(given.control, "control")
        size = common.size_from_input(config, size, control.image.size, common.input_name(control.record, "the control picture"))
        record = {"control_kind": given.control_kind, "control_lora": preset != "control"}
        if given.control_kind == "map":
            picture = control.image
        else:
            picture = _resized(control, size)
            if given.control_kind == "canny":
                picture = canny_map(picture, given.canny_low, given.canny_high)
                control.step("canny", low=given.canny_low, high=given.canny_high, by="BFL (resize, [-1,1] round trip, "
                             "cv2.Canny on RGB uint8)", opencv=_cv2_version())
                record.update(canny_low=given.canny_low, canny_high=given.canny_high)
            else:
                model_path = depth_model_path(config.model.depth)
                picture = depth_map(picture, model_path)
                control.step("depth", model=str(model_path), by="BFL DepthImageEncoder (bicubic to size, clamp 0..255)")
                record["depth_model"] = str(model_path)
            record["map_sha256"] = sha256_of_pil(picture)
        if tuple(picture.size) != (size.width, size.height):
            control.step("resize", to=[size.width, size.height], filter="lanczos", keep_aspect=False, by="diffusers")
        # one picture, not one per seed: diffusers repeats it over the batch and each seed's generator
        # VAE-samples its own copy (a list would be repeated again, once per image)
        return Prepared(self.name, {"control_image": picture}, [control.record], record, size, role=self.role,
                        workload=self.workload(size.width, size.height, size.multiple))

    def workload(self, width, height, multiple, reference=None) -> dict:
        # the control picture, at the output size, is VAE-encoded; its latents (16 channels x 2x2 = 64) are
        # concatenated to each noise token: the control transformer reads 128 channels instead of 64
        return {"encode_pixels": width * height, "condition_channels": 4 * LATENT_CHANNELS}


def _resized(control, size):

    image = control.image
    if tuple(image.size) != (size.width, size.height):
        control.step("resize", to=[size.width, size.height], filter="lanczos", keep_aspect=False, by="localflux (BFL)")
        image = image.resize((size.width, size.height), Image.LANCZOS)
    return image


def _cv2_version() -> str:
    optional.require("cv2", "the control task's Canny edges", InputImageError)
    import cv2  # optional: after optional.require

    return cv2.__version__


def bfl_round_trip(rgb):
    """BFL's uint8 -> [-1, 1] float32 -> uint8 (truncating), as ``prepare_control`` + ``CannyImageEncoder`` do."""

    x = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).float() / 127.5 - 1.0
    return ((torch.clamp(x, -1.0, 1.0) + 1.0) * 127.5).numpy().astype(np.uint8)


def canny_map(image, low: int, high: int):
    """Edges of an RGB picture (already at the output size) as BFL computes them: white edges on black, RGB."""
    optional.require("cv2", "the control task's Canny edges", InputImageError)
    import cv2  # optional: after optional.require

    edges = cv2.Canny(bfl_round_trip(image), low, high)
    return Image.fromarray(np.repeat(edges[..., None], 3, axis=2))


def depth_model_path(setting: str | None):
    """The local folder of the Depth Anything model: ``[model] depth`` (a folder, or a hub id in the cache), else
    BFL's default in the Hugging Face cache; never downloaded. One-line ``ConfigError`` when none is here."""

    if setting and Path(setting).expanduser().is_dir():
        folder = Path(setting).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.depth {setting!r} has no config.json: give a transformers Depth Anything folder, "
                              "or a ready depth map with --control-kind map")
        return folder
    hub_id = setting or DEPTH_HUB_ID
    try:

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or not a hub id): the same advice either way
        raise ConfigError(f"--control-kind depth needs a Depth Anything model on this machine ({hub_id!r} is not in the "
                          "Hugging Face cache and localflux never downloads it silently): set [model] depth = PATH "
                          "(--depth-model), or give a ready depth map with --control-kind map") from None


def depth_map(image, model_path):
    """BFL's DepthImageEncoder on an RGB picture at the output size: predicted depth, bicubic (antialiased) to
    that size, clamped to 0..255, grey copied to RGB."""

    processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForDepthEstimation.from_pretrained(model_path, local_files_only=True).eval()
    pixels = torch.from_numpy(bfl_round_trip(image)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        inputs = processor(pixels, return_tensors="pt")["pixel_values"].to(model.dtype)
        depth = model(pixel_values=inputs).predicted_depth[:, None].float()
        depth = torch.nn.functional.interpolate(depth, (image.size[1], image.size[0]), mode="bicubic", antialias=True)
    grey = torch.clamp(depth[0, 0], 0, 255).round().to(torch.uint8).numpy()
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
