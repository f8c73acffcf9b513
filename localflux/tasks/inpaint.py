"""Repaint a region: inpaint (``FluxInpaintPipeline``, a base model), outpaint, and FLUX.1 Fill (``FluxFillPipeline``).

The mask is read like the image (RGB), then diffusers makes it grey and thresholds it: 8-bit >= 128 is
repainted (white), the rest kept. An empty mask (nothing >= 128) is refused: there is nothing to do.

Outpaint (``input.outpaint = [L, T, R, B]``): the image is padded by those pixels, the new area filled
by repeating the nearest edge pixel (numpy ``pad(mode="edge")``: the denoiser starts from the colours
at the border rather than from black), and the mask is white exactly over the new area (OR the given
mask, if any). Both steps are recorded. On a base model the new area keeps some of the stretched edge
unless the strength is high (``--strength 1``); FLUX.1 Fill repaints it from scratch at its default 1.0.

``paste_back = true`` puts the original pixels back outside the mask after decoding, blended over a
feather of ``FEATHER_PX`` pixels (a Gaussian blur of the thresholded mask), so the kept area is the
input's pixels exactly (after the stretch to the output size) and only the repainted area changes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ..errors import ConfigError
from . import common
from .base import Prepared, Task
from .images import InputImage, read_input
from .reference import prepare_inpaint, validate_inpaint

FEATHER_PX = 8  # paste-back blend width (Gaussian blur radius of the mask, in output pixels)
THRESHOLD = 128  # diffusers' mask binarisation: >= 0.5 of 255


class InpaintTask(Task):
    name = "inpaint"
    role = "inpaint"

    def select(self, config, family, preset) -> bool:
        given = config.input
        return given.image is not None and (given.mask is not None or given.outpaint is not None) \
            and (preset in ("schnell", "dev") or family.inpaint_with_references)

    def validate(self, config, family, preset) -> None:
        if family.inpaint_with_references:  # FLUX.2: Flux2KleinInpaintPipeline (tasks/reference.py)

            return validate_inpaint(config, family, preset)
        common.check_strength(config, self.role)

    def prepare(self, config, family, preset, size) -> Prepared:
        if family.inpaint_with_references:

            return prepare_inpaint(config, family, preset, size)
        image, mask, outpaint = read_image_and_mask(config)
        size = common.size_from_input(config, size, image.image.size, common.input_name(image.record))
        for item in (image, mask):
            if tuple(item.image.size) != (size.width, size.height):
                item.step("resize", to=[size.width, size.height], filter="lanczos", keep_aspect=False, by="diffusers")
        mask.step("threshold", at=THRESHOLD, white="repaint", by="diffusers")
        strength = common.strength_used(config, self.role)
        record = {"strength": strength, "strength_default": config.input.strength is None,
                  "steps_run": common.steps_run(config.sampling.steps, strength),
                  "paste_back": config.input.paste_back, "outpaint": outpaint}
        finish = None
        if config.input.paste_back:
            finish = paste_back_function(image.image, mask.image, size)
            record["paste_back_feather_px"] = FEATHER_PX
        inputs = [image.record] + ([mask.record] if mask.record.get("sha256") else [])
        if not mask.record.get("sha256"):
            record["mask"] = mask.record  # built by localflux (outpaint): no file to hash
        return Prepared(self.name, {"image": image.image, "mask_image": mask.image, "strength": strength}, inputs,
                        record, size, role=self.role, per_image=("image", "mask_image"), finish=finish,
                        workload=self.workload(size.width, size.height, size.multiple))

    def workload(self, width, height, multiple, reference=None) -> dict:
        return {"encode_pixels": width * height}  # the (masked) picture at the output size is VAE-encoded


class FillTask(InpaintTask):
    """FLUX.1 Fill: the masked image and the mask go into the transformer's input (384 channels)."""

    name = "fill"
    role = "fill"

    def select(self, config, family, preset) -> bool:
        return preset == "fill"

    def validate(self, config, family, preset) -> None:
        given = config.input
        if given.image is None:
            raise ConfigError("a FLUX.1 Fill model repaints part of an image: give --image and --mask "
                              "(white = repaint), or --image and --outpaint L,T,R,B")
        if given.mask is None and given.outpaint is None:
            raise ConfigError("a FLUX.1 Fill model needs --mask (white = the region to repaint) or --outpaint L,T,R,B "
                              "with --image; for img2img use a base FLUX.1 model")
        if config.sampling.true_cfg > 1 and config.prompt.negative:
            raise ConfigError("FluxFillPipeline has no true CFG: drop --true-cfg / the negative prompt for a Fill model")
        common.check_strength(config, self.role)

    def workload(self, width, height, multiple, reference=None) -> dict:
        # FLUX.1 Fill's transformer reads, per token, the noise (64) + the masked image's latents (16 latent
        # channels x 2x2 = 64) + the mask at pixel resolution (f x f per latent cell x 2x2 = multiple²): 384 for f = 8
        return {"encode_pixels": width * height, "condition_channels": 4 * LATENT_CHANNELS + multiple * multiple}


LATENT_CHANNELS = 16  # FLUX.1's VAE latent channels


def read_image_and_mask(config) -> tuple[InputImage, InputImage, dict | None]:
    """The image and the mask, outpainted when asked; refuses an empty mask."""

    image = read_input(config.input.image, "image")
    mask = read_input(config.input.mask, "mask") if config.input.mask is not None else None
    pad = common.check_outpaint(config)
    outpaint = None
    if pad is not None:
        left, top, right, bottom = pad
        w, h = image.image.size
        base_mask = np.zeros((h, w), dtype=np.uint8)
        if mask is not None:
            grey = mask.image.convert("L")
            if grey.size != (w, h):
                grey = grey.resize((w, h), Image.NEAREST)
                mask.step("resize", to=[w, h], filter="nearest", keep_aspect=False, by="localflux (outpaint)")
            base_mask = np.where(np.asarray(grey) >= THRESHOLD, 255, 0).astype(np.uint8)
        padded = np.pad(np.asarray(image.image), ((top, bottom), (left, right), (0, 0)), mode="edge")
        new_mask = np.pad(base_mask, ((top, bottom), (left, right)), constant_values=255)
        image.image = Image.fromarray(padded)
        image.step("pad", left=left, top=top, right=right, bottom=bottom, fill="edge", to=list(image.image.size))
        outpaint = {"left": left, "top": top, "right": right, "bottom": bottom, "fill": "edge",
                    "mask": "white over the new area" + (" or the given mask" if mask is not None else "")}
        if mask is None:
            mask = InputImage("mask", None, {"role": "mask", "path": None, "sha256": None,
                                             "size": list(image.image.size), "steps": [], "built": "outpaint"})
        mask.image = Image.fromarray(new_mask).convert("RGB")
        if mask.record.get("sha256"):
            mask.step("pad", left=left, top=top, right=right, bottom=bottom, fill="white", to=list(image.image.size))
    if not (np.asarray(mask.image.convert("L")) >= THRESHOLD).any():
        where = f" {mask.record['path']!r}" if mask.record.get("path") else ""
        raise ConfigError(f"input mask{where} is empty (no pixel is 128 or brighter): nothing to repaint; "
                          "paint the region to change white")
    return image, mask, outpaint


def paste_back_function(original, mask, size):
    """image -> image with ``original`` outside the (feathered) mask, all at the output size."""

    target = (size.width, size.height)
    kept = np.asarray(original.resize(target, Image.LANCZOS) if original.size != target else original, np.float32)
    grey = mask.convert("L")
    if grey.size != target:
        grey = grey.resize(target, Image.LANCZOS)
    hard = Image.fromarray(np.where(np.asarray(grey) >= THRESHOLD, 255, 0).astype(np.uint8))
    soft = np.asarray(hard.filter(ImageFilter.GaussianBlur(FEATHER_PX / 2)), np.float32)[..., None] / 255.0

    def finish(image):
        out = np.asarray(image.convert("RGB"), np.float32) * soft + kept * (1.0 - soft)
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    return finish
