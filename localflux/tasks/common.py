"""What several image tasks share: the output size from an input, strength, and the checks on ``[input]``."""

from __future__ import annotations

import logging

from ..errors import ConfigError
from ..resolution import MAX_SIDE, Size, snap
from .control import control_loras

log = logging.getLogger(__name__)

# The pipelines' own strength defaults (diffusers 0.42.1 signatures; tests/test_images.py checks them).
DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 0.6, "fill": 1.0}


def size_is_set(config) -> bool:
    s = config.size
    return any(value is not None for value in (s.width, s.height, s.megapixels, s.aspect))


def size_from_input(config, size: Size, image_size: tuple[int, int], what: str = "the input image") -> Size:
    """``size`` when the user gave one; else ``image_size`` snapped to the size multiple (and said so)."""
    if size_is_set(config):
        return size

    w, h = snap(image_size[0], size.multiple), snap(image_size[1], size.multiple)
    for side, value in (("width", w), ("height", h)):
        if value > MAX_SIDE:
            raise ConfigError(f"{what} is {image_size[0]}x{image_size[1]}: its {side} is more than {MAX_SIDE} pixels, "
                              "too large for any memory plan; give --width/--height or --megapixels for the output")
    log.info("size %dx%d from %s (%dx%d; sides are multiples of %d)", w, h, what, *image_size, size.multiple)
    return Size(w, h, tuple(image_size), size.multiple)


def input_name(record: dict, what: str = "the input image") -> str:
    return f"{what} {record['path']!r}" if record.get("path") else what


def strength_used(config, role: str) -> float:
    value = config.input.strength
    return DEFAULT_STRENGTH[role] if value is None else value


def steps_run(steps: int, strength: float) -> int:
    """How many steps a strength leaves, as diffusers' ``get_timesteps`` counts them."""
    init = min(steps * strength, steps)
    return steps - int(max(steps - init, 0))


def check_strength(config, role: str) -> None:
    steps = config.sampling.steps
    strength = strength_used(config, role)
    if steps is not None and steps_run(steps, strength) < 1:
        raise ConfigError(f"--strength {strength:g} with {steps} steps leaves 0 steps to run "
                          f"(diffusers runs {steps} - int({steps} - {steps}*{strength:g})); raise --strength or --steps")


def check_outpaint(config) -> tuple[int, int, int, int] | None:
    pad = config.input.outpaint
    if pad is None:
        return None
    if len(pad) != 4:
        raise ConfigError(f"input.outpaint (--outpaint) must be four numbers LEFT,TOP,RIGHT,BOTTOM, got {pad!r}; "
                          "e.g. --outpaint 0,0,256,0 extends the right side by 256 pixels")
    if any(value < 0 for value in pad):
        raise ConfigError(f"input.outpaint (--outpaint) {','.join(map(str, pad))} has a negative side; "
                          "give pixels to add (0 or more) on each of LEFT,TOP,RIGHT,BOTTOM")
    if not any(pad):
        raise ConfigError("input.outpaint (--outpaint) 0,0,0,0 adds nothing; give the pixels to add, e.g. 0,0,256,0")
    return tuple(pad)


def check_common(config, preset: str, family=None) -> None:
    """The ``[input]`` combinations no task accepts (checked before any task is chosen)."""
    given = config.input
    if given.image is None:
        for key, flag, present in (("mask", "--mask", given.mask is not None),
                                   ("strength", "--strength", given.strength is not None),
                                   ("outpaint", "--outpaint", given.outpaint is not None),
                                   ("paste_back", "paste_back", given.paste_back)):
            if present and not (preset == "kontext" and key == "strength"):
                raise ConfigError(f"input.{key} ({flag}) needs input.image (--image): the picture to start from")
    if given.references and preset != "kontext" and not (family is not None and "reference" in family.tasks):
        raise ConfigError(f"--reference (input.references) needs a FLUX.1 Kontext model (its model_index.json names "
                          f"FluxKontextPipeline, or set [model] preset = \"kontext\"); this model is {preset}: "
                          "use --image for img2img instead")
    if given.control is not None and preset in ("fill", "kontext"):
        raise ConfigError(f"--control (input.control) needs a FLUX.1 Canny/Depth model or a control LoRA on a base "
                          f"model; this model is {preset}")
    if given.redux and preset not in ("schnell", "dev"):
        raise ConfigError(f"--redux (input.redux) conditions a FLUX.1 [dev] or [schnell] base model; this model is "
                          f"{preset}: drop --redux or use a base model")
    if given.control is None and config.lora:

        found = control_loras(config)
        if found:
            raise ConfigError(f"LoRA {found[0]!r} is a FLUX.1 control LoRA (Canny/Depth): give the control picture with "
                              "--control FILE (input.control), or drop the LoRA")
    check_outpaint(config)
