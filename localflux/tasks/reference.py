"""Multi-reference editing and inpaint with references: FLUX.2 (``Flux2KleinPipeline(image=[...])``,
``Flux2KleinInpaintPipeline``), for families whose ``tasks`` name ``reference`` / ``inpaint`` with references.

diffusers does the image work (parity is the contract); localflux predicts and records it
(``families/flux2/facts.py``): each reference above 1024² is Lanczos-scaled to about 1 MP, then centre-cropped
to multiples of 16; it must be ≥ 64 px on each side with an aspect ≤ 8. Output size: the config's or the
flags', else the first reference's processed size, else 1024². Inpaint renders at the picture's size
(scaled like a reference above 1 MP, then stretched to multiples of 16); its default strength is 0.8.
"""

from __future__ import annotations

import logging

from ..errors import ConfigError
from ..families.flux2 import facts, presets
from ..resolution import Size
from . import common
from .base import Prepared, Task
from .images import read_input

log = logging.getLogger(__name__)

INPAINT_STRENGTH = 0.8  # Flux2KleinInpaintPipeline's default


def _limits(family, preset):

    return presets.RECOMMENDED_REFERENCES.get(preset, 4), presets.MAX_REFERENCES


def check_reference_count(config, family, preset) -> None:
    count = len(config.input.references)
    recommended, cap = _limits(family, preset)
    if count > cap:
        raise ConfigError(f"{count} references (--reference / input.references) is more than localflux allows "
                          f"({cap}; BFL recommends up to {recommended} for {family.label} {preset}): drop some")


def read_references(config, family, preset) -> tuple[list, list[dict], list[str]]:
    """(PIL images, recipe records with diffusers' resize/crop, warnings); refuses what diffusers would."""

    refs = list(config.input.references)
    images, records, warnings = [], [], []
    for n, ref in enumerate(refs):
        item = read_input(ref, f"reference {n + 1}")
        w, h = item.image.size
        problem = facts.check_reference(w, h)
        if problem:
            raise ConfigError(f"{common.input_name(item.record, f'reference {n + 1}')}: {problem} (diffusers' FLUX.2 "
                              "reference rule); use a larger or less elongated picture")
        for op, facts_of_step in facts.reference_geometry(w, h)["steps"]:
            item.step(op, **{k: list(v) if isinstance(v, tuple) else v for k, v in facts_of_step.items()}, by="diffusers")
        images.append(item.image)
        records.append(item.record)
    recommended, _ = _limits(family, preset)
    if len(refs) > recommended:
        warnings.append(f"{len(refs)} references: BFL recommends up to {recommended} for {family.label} {preset}; "
                        "more cost memory and time and may blend subjects")
        log.warning(warnings[-1])
    return images, records, warnings


class ReferenceTask(Task):
    """FLUX.2 multi-reference editing: ``--reference`` (repeatable) -> the pipeline's ``image=[...]``."""

    name = "reference"
    role = "text"  # Flux2KleinPipeline takes the references itself

    def select(self, config, family, preset) -> bool:
        return bool(config.input.references) and config.input.image is None and "reference" in family.tasks

    def validate(self, config, family, preset) -> None:
        if config.input.strength is not None:
            raise ConfigError("--strength does not apply to FLUX.2 reference editing (it renders at full denoise); "
                              "drop it, or add --image and --mask to inpaint")
        check_reference_count(config, family, preset)

    def prepare(self, config, family, preset, size) -> Prepared:

        images, records, warnings = read_references(config, family, preset)
        if common.size_is_set(config):
            final = size
        else:
            w, h = facts.output_size(None, None, [images[0].size], size.multiple)
            final = Size(w, h, tuple(images[0].size), size.multiple)
            log.info("size %dx%d from the first reference (%dx%d, processed as diffusers does)", w, h, *images[0].size)
        record = {"references": len(images), "recommended_max": _limits(family, preset)[0], "warnings": warnings}
        return Prepared(self.name, {"image": images}, records, record, final, role=self.role)


def prepare_inpaint(config, family, preset, size) -> Prepared:
    """FLUX.2 inpaint: ``image`` + ``mask_image`` (+ ``image_reference``) for Flux2KleinInpaintPipeline."""

    image = read_input(config.input.image, "image")
    mask = read_input(config.input.mask, "mask")
    geometry = facts.inpaint_image_geometry(*image.image.size)
    for item in (image, mask):
        for op, facts_of_step in geometry["steps"]:
            item.step(op, **{k: list(v) if isinstance(v, tuple) else v for k, v in facts_of_step.items()}, by="diffusers")
    mask.step("threshold", at=0.5, white="repaint", by="diffusers")
    w, h = geometry["size"]
    if common.size_is_set(config) and (size.width, size.height) != (w, h):
        log.warning("FLUX.2 inpaint renders at the picture's size %dx%d (diffusers ignores --width/--height)", w, h)
    log.info("size %dx%d from %s", w, h, common.input_name(image.record))
    strength = INPAINT_STRENGTH if config.input.strength is None else config.input.strength
    kwargs = {"image": image.image, "mask_image": mask.image, "strength": strength}
    inputs = [image.record, mask.record]
    record = {"strength": strength, "strength_default": config.input.strength is None,
              "steps_run": common.steps_run(config.sampling.steps, strength)}
    if config.input.references:
        references, records, warnings = read_references(config, family, preset)
        kwargs["image_reference"] = references
        inputs += records
        record.update(references=len(references), warnings=warnings)
    return Prepared("inpaint", kwargs, inputs, record, Size(w, h, tuple(image.image.size), size.multiple),
                    role="inpaint")


def validate_inpaint(config, family, preset) -> None:
    strength = INPAINT_STRENGTH if config.input.strength is None else config.input.strength
    steps = config.sampling.steps
    if steps is not None and common.steps_run(steps, strength) < 1:
        raise ConfigError(f"--strength {strength:g} with {steps} steps leaves 0 steps to run; raise --strength or --steps")
    check_reference_count(config, family, preset)
