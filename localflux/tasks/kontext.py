"""Edit from references: FLUX.1 Kontext (``FluxKontextPipeline``), with diffusers' defaults.

- Several references are stitched side by side into one (as ComfyUI's and Forge's Kontext workflows
  do): each is scaled to the first one's height (Lanczos, aspect kept), then placed left to right.
- diffusers then resizes the reference to the entry of ``PREFERRED_KONTEXT_RESOLUTIONS`` with the
  closest aspect (Lanczos) and encodes it with the VAE *mean* (no random draw).
- The output: the requested W x H (no size given: the reference's size) is rescaled by diffusers to
  about 1 MP (``max_area`` = 1024²) at that aspect, sides floored to the size multiple; the final size
  is logged and recorded.
"""

from __future__ import annotations

import logging
import math

from PIL import Image

from ..errors import ConfigError
from ..resolution import Size
from . import common
from .base import Prepared, Task
from .images import InputImage, read_input

log = logging.getLogger(__name__)

MAX_AREA = 1024 ** 2  # FluxKontextPipeline's max_area default
# diffusers.pipelines.flux.pipeline_flux_kontext.PREFERRED_KONTEXT_RESOLUTIONS (0.42.1), copied so a plan
# (and --dry-run) need not import the pipelines; tests/test_images.py checks the copy.
PREFERRED_KONTEXT_RESOLUTIONS = [
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688),
    (1568, 672),
]


class KontextTask(Task):
    name = "kontext"
    role = "kontext"

    def select(self, config, family, preset) -> bool:
        return preset == "kontext"

    def validate(self, config, family, preset) -> None:
        given = config.input
        if given.mask is not None or given.outpaint is not None:
            raise ConfigError("a FLUX.1 Kontext model takes references, not a mask or --outpaint; "
                              "use a base or Fill model to repaint a region")
        if given.strength is not None:
            raise ConfigError("--strength does not apply to FLUX.1 Kontext (it edits from the reference at full "
                              "denoise); drop it, or use a base model with --image for img2img")
        if given.image is not None and given.references:
            raise ConfigError("give the Kontext reference once: --reference (input.references) or --image, not both")

    def prepare(self, config, family, preset, size) -> Prepared:
        given = config.input
        refs = list(given.references) or ([given.image] if given.image is not None else [])
        if not refs:
            final = output_size(size.width, size.height, size.multiple)
            return Prepared(self.name, {"width": size.width, "height": size.height, "max_area": MAX_AREA}, [],
                            {"references": 0, "max_area": MAX_AREA},
                            Size(final[0], final[1], (size.width, size.height), size.multiple), role=self.role)
        images = [read_input(ref, f"reference {n + 1}" if len(refs) > 1 else "reference") for n, ref in enumerate(refs)]
        reference, stitched = stitch(images)
        asked = common.size_from_input(config, size, reference.size, what="the reference" if len(images) > 1 else common.input_name(images[0].record, "the reference"))
        final = output_size(asked.width, asked.height, size.multiple)
        if final != (asked.width, asked.height):
            log.info("size %dx%d (Kontext renders about 1 MP at the aspect of %dx%d)", *final, asked.width, asked.height)
        resized = preferred_resolution(reference.size, size.multiple)
        record = {"references": len(images), "max_area": MAX_AREA, "reference_size": list(reference.size),
                  "reference_resized_to": list(resized), "requested_size": [asked.width, asked.height]}
        if stitched:
            record["stitched"] = {"size": list(reference.size), "layout": "side by side, scaled to the first height"}
        return Prepared(self.name, {"image": reference, "width": asked.width, "height": asked.height, "max_area": MAX_AREA},
                        [image.record for image in images], record,
                        Size(final[0], final[1], (asked.width, asked.height), size.multiple), role=self.role,
                        workload=self.workload(final[0], final[1], size.multiple, reference=resized))

    def workload(self, width, height, multiple, reference=None) -> dict:
        """The reference, resized to its preferred resolution, is VAE-encoded (mean) and its tokens follow the
        noise tokens in every denoise step: about as many again as the output's (both are about 1 MP)."""
        rw, rh = reference or preferred_resolution((width, height), multiple)
        return {"reference_tokens": (rw // multiple) * (rh // multiple), "encode_pixels": rw * rh}


def stitch(images: list[InputImage]):
    """One reference from several: side by side at the first one's height."""

    if len(images) == 1:
        return images[0].image, False
    height = images[0].image.size[1]
    parts = []
    for image in images:
        w, h = image.image.size
        if h != height:
            width = max(1, round(w * height / h))
            image.step("resize", to=[width, height], filter="lanczos", keep_aspect=True, by="localflux (stitch)")
            parts.append(image.image.resize((width, height), Image.LANCZOS))
        else:
            parts.append(image.image)
    canvas = Image.new("RGB", (sum(p.size[0] for p in parts), height))
    x = 0
    for image, part in zip(images, parts):
        canvas.paste(part, (x, 0))
        image.step("stitch", x=x, y=0, into=[canvas.size[0], height])
        x += part.size[0]
    return canvas, True


def output_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """FluxKontextPipeline's rescale of the requested size to ``MAX_AREA`` at its aspect."""
    aspect = width / height
    w = round(math.sqrt(MAX_AREA * aspect)) // multiple * multiple
    h = round(math.sqrt(MAX_AREA / aspect)) // multiple * multiple
    return w, h


def preferred_resolution(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The size FluxKontextPipeline resizes a reference to (``_auto_resize``)."""
    w, h = (side - side % multiple for side in size)
    aspect = w / h
    _, w, h = min((abs(aspect - pw / ph), pw, ph) for pw, ph in PREFERRED_KONTEXT_RESOLUTIONS)
    return w // multiple * multiple, h // multiple * multiple
