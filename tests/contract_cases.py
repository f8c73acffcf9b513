"""The contract suite's cases: one or more per registered (family, task), each with a diffusers reference.

A case says how to ask localflux for a render (a config dict) and how to render the same thing
with the family's diffusers pipeline class directly (``reference(seed) -> PIL image``). A new
family or task joins the suite by adding its cases here: ``test_contract.py`` fails while a
registered (family, task) has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    task: str
    config: dict  # a localflux config (size, steps and seed given; sampling.seed is the base seed)
    reference: Callable[[int], object]  # seed -> the image diffusers renders for that seed
    bad_flags: tuple[str, ...] = ()  # CLI flags that must be refused (exit 2, one line); once per family
    extra: dict = field(default_factory=dict)


def _flux1_text_reference(variant: str, prompt: str, width: int, height: int, steps: int, guidance: float, max_len: int):
    from diffusers import FluxPipeline

    from localflux.families.flux1.tiny import build_tiny_components

    pipe = FluxPipeline(**build_tiny_components(variant))
    pipe.set_progress_bar_config(disable=True)

    def render(seed: int):
        return pipe(prompt=prompt, prompt_2=prompt, width=width, height=height, num_inference_steps=steps,
                    guidance_scale=guidance, max_sequence_length=max_len,
                    generator=[torch.Generator("cpu").manual_seed(seed)]).images[0]

    return render


def _flux1_text(source: str, variant: str, guidance: float, width: int, height: int) -> Case:
    prompt, steps, max_len = "a red fox in snow", 3, 32
    config = {"model": {"source": source}, "prompt": {"subject": prompt}, "size": {"width": width, "height": height},
              "sampling": {"seed": 11, "steps": steps, "guidance": guidance, "max_sequence_length": max_len}}
    return Case(f"flux1-text-{source}-{width}x{height}", "flux1", "text", config,
                _flux1_text_reference(variant, prompt, width, height, steps, guidance, max_len),
                bad_flags=("--model", source, "--prompt", "x", "--steps", "0"))


def cases() -> list[Case]:
    return [
        _flux1_text("tiny", "schnell", 0.0, 64, 48),
        _flux1_text("tiny-dev", "dev", 3.5, 48, 64),
    ]
