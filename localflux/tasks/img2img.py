"""Image to image (``FluxImg2ImgPipeline``): start from ``input.image`` noised to ``strength``.

diffusers stretches the image to W x H (Lanczos), VAE-*samples* it with the seed's generator, then
draws the noise; the image is passed once per seed so each seed's generator makes both draws.
"""

from __future__ import annotations

from ..errors import ConfigError
from . import common
from .base import Prepared, Task
from .images import read_input


class Img2ImgTask(Task):
    name = "img2img"
    role = "img2img"

    def select(self, config, family, preset) -> bool:
        return config.input.image is not None and preset in ("schnell", "dev")

    def validate(self, config, family, preset) -> None:
        if config.input.paste_back:

            raise ConfigError("input.paste_back applies to inpainting; give --mask (or --outpaint) with --image")
        common.check_strength(config, self.role)

    def prepare(self, config, family, preset, size) -> Prepared:
        image = read_input(config.input.image, "image")
        size = common.size_from_input(config, size, image.image.size, common.input_name(image.record))
        resize_step(image, size)
        strength = common.strength_used(config, self.role)
        record = {"strength": strength, "strength_default": config.input.strength is None,
                  "steps_run": common.steps_run(config.sampling.steps, strength)}
        return Prepared(self.name, {"image": image.image, "strength": strength}, [image.record], record, size,
                        role=self.role, per_image=("image",),
                        workload=self.workload(size.width, size.height, size.multiple))

    def workload(self, width, height, multiple, reference=None) -> dict:
        return {"encode_pixels": width * height}  # the picture, stretched to the output size, is VAE-encoded


def resize_step(image, size, by: str = "diffusers") -> None:
    """Record the stretch to the output size that the pipeline's image processor makes."""
    if tuple(image.image.size) != (size.width, size.height):
        image.step("resize", to=[size.width, size.height], filter="lanczos", keep_aspect=False, by=by)
