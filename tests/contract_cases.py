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
        *flux2_cases(),
    ]


# ---------------------------------------------------------------- FLUX.2


def _flux2_pipe(source: str, task: str = "text"):
    """The diffusers pipeline of a FLUX.2 case's model, built from in-memory components (not localflux's loader)."""
    from diffusers import Flux2KleinInpaintPipeline, Flux2KleinPipeline, Flux2Pipeline

    if source.startswith("tiny-flux2"):
        from localflux.families.flux2.tiny import build_tiny_components

        cls = Flux2Pipeline if source == "tiny-flux2-dev" else \
            Flux2KleinInpaintPipeline if task == "inpaint" else Flux2KleinPipeline
        pipe = cls(**build_tiny_components(source))
    else:
        import flux2_shapes

        pipe = flux2_shapes.build_pipeline(source, task)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _flux2_text_reference(source: str, prompt: str, width: int, height: int, steps: int, guidance: float,
                          negative: str | None = None, images=None):
    state = {}

    def render(seed: int):
        if "pipe" not in state:
            state["pipe"] = _flux2_pipe(source)
        pipe = state["pipe"]
        kwargs = {}
        if negative:
            kwargs["negative_prompt_embeds"] = pipe.encode_prompt(prompt=negative, device="cpu")[0]
        if images is not None:
            kwargs["image"] = images()
        return pipe(prompt=prompt, width=width, height=height, num_inference_steps=steps, guidance_scale=guidance,
                    generator=[torch.Generator("cpu").manual_seed(seed)], **kwargs).images[0]

    return render


def _flux2_text(label: str, source: str, guidance: float, width: int, height: int, negative: str | None = None,
                bad_flags: tuple[str, ...] = ()) -> Case:
    prompt, steps = "a red fox in snow", 3
    config = {"model": {"source": source, "device": "cpu"}, "prompt": {"subject": prompt},
              "size": {"width": width, "height": height}, "sampling": {"seed": 5, "steps": steps, "guidance": guidance}}
    if negative:
        config["prompt"]["negative"] = negative
    return Case(f"flux2-text-{label}-{width}x{height}", "flux2", "text", config,
                _flux2_text_reference(source, prompt, width, height, steps, guidance, negative), bad_flags=bad_flags)


def _flux2_shape(name: str) -> str:
    import flux2_shapes

    return str(flux2_shapes.folder(name))


def flux2_cases() -> list[Case]:
    return [
        _flux2_text("tiny-flux2", "tiny-flux2", 1.0, 64, 48,
                    bad_flags=("--model", "tiny-flux2", "--prompt", "x", "--negative-prompt", "blurry")),
        _flux2_text("tiny-flux2-base", "tiny-flux2-base", 4.0, 48, 64),
        _flux2_text("tiny-flux2-base-negative", "tiny-flux2-base", 3.0, 64, 64, negative="blurry, dark"),
        _flux2_text("tiny-flux2-dev", "tiny-flux2-dev", 4.0, 64, 48,
                    bad_flags=("--model", "tiny-flux2-dev", "--prompt", "x", "--negative-prompt", "blurry")),
        Case("flux2-text-shape-distilled-80x48", "flux2", "text",
             {"model": {"source": _flux2_shape("klein-base-named-distilled"), "device": "cpu"},
              "prompt": {"subject": "a red fox in snow"}, "size": {"width": 80, "height": 48},
              "sampling": {"seed": 5, "steps": 3}},
             _flux2_text_reference("klein-base-named-distilled", "a red fox in snow", 80, 48, 3, 1.0)),
        Case("flux2-text-shape-base-48x80", "flux2", "text",
             {"model": {"source": _flux2_shape("klein-named-base"), "device": "cpu"},
              "prompt": {"subject": "a red fox in snow"}, "size": {"width": 48, "height": 80},
              "sampling": {"seed": 5, "steps": 3}},
             _flux2_text_reference("klein-named-base", "a red fox in snow", 48, 80, 3, 4.0)),
    ]
