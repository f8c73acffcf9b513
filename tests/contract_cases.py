"""The contract suite's cases: one or more per registered (family, task), each with a diffusers reference.

A case builds, in a scratch folder (``Workspace``), what it needs (model folders, input pictures)
and returns a localflux config plus ``reference(seed) -> PIL image``: the same render through the
family's diffusers pipeline class, called directly. A new family or task joins the suite by adding
its cases to ``CASES``: ``test_contract.py`` fails while a registered (family, task) has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

PROMPT = "a red fox in snow"


class Workspace:
    """Scratch folder shared by the cases of one test session; builds each model or picture once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict = {}

    def once(self, key, make):
        if key not in self._made:
            self._made[key] = make(self.root / "-".join(map(str, key)))
        return self._made[key]

    def task_model(self, kind: str, shape: str) -> Path:
        from image_models import save_task_model

        return self.once(("model", kind, shape), lambda p: (save_task_model(kind, shape, p), p)[1])

    def picture(self, size=(80, 48), seed=0) -> Path:
        from image_models import noise_picture

        return self.once(("picture", *size, seed), lambda p: noise_picture(p.with_suffix(".png"), size, seed))

    def redux_prior(self, shape: str) -> Path:
        from image_models import save_redux_prior

        def make(p):
            from diffusers import FluxTransformer2DModel

            width = FluxTransformer2DModel.load_config(self.task_model("base", shape) / "transformer")["joint_attention_dim"]
            return save_redux_prior(p, width)

        return self.once(("redux", shape), make)

    def control_lora(self, shape: str) -> Path:
        from image_models import save_control_lora

        def make(p):
            from diffusers import FluxTransformer2DModel

            transformer = FluxTransformer2DModel.from_pretrained(self.task_model("base", shape) / "transformer")
            return save_control_lora(p.with_suffix(".safetensors"), transformer)

        return self.once(("control-lora", shape), make)

    def mask(self, size=(80, 48), box=(16, 8, 56, 40)) -> Path:
        from image_models import box_mask

        return self.once(("mask", *size, *box), lambda p: box_mask(p.with_suffix(".png"), size, box))


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    task: str
    build: Callable[[Workspace], tuple[dict, Callable[[int], object]]]  # -> (localflux config, reference)
    bad_flags: tuple[str, ...] = ()  # CLI flags that must be refused (exit 2, one line); once per family
    patches: dict = field(default_factory=dict)  # (module, attribute) -> value while the case runs


def _generators(seed: int):
    return [torch.Generator("cpu").manual_seed(seed)]


# ---------------------------------------------------------------- FLUX.1


def _flux1_text(source: str, variant: str, guidance: float, width: int, height: int) -> Case:
    steps, max_len = 3, 32

    def build(ws: Workspace):
        from diffusers import FluxPipeline

        from localflux.families.flux1.tiny import build_tiny_components

        pipe = FluxPipeline(**build_tiny_components(variant))
        pipe.set_progress_bar_config(disable=True)
        config = {"model": {"source": source}, "prompt": {"subject": PROMPT},
                  "size": {"width": width, "height": height},
                  "sampling": {"seed": 11, "steps": steps, "guidance": guidance, "max_sequence_length": max_len}}

        def reference(seed: int):
            return pipe(prompt=PROMPT, prompt_2=PROMPT, width=width, height=height, num_inference_steps=steps,
                        guidance_scale=guidance, max_sequence_length=max_len, generator=_generators(seed)).images[0]

        return config, reference

    return Case(f"flux1-text-{source}-{width}x{height}", "flux1", "text", build,
                bad_flags=("--model", source, "--prompt", "x", "--steps", "0"))


def _flux1_image(task: str, kind: str, shape: str, inputs: Callable[[Workspace], dict], call: dict,
                 sampling: dict) -> Case:
    """An image task on a tiny model folder of ``shape`` (tests/image_models.py)."""

    def build(ws: Workspace):
        from diffusers.utils import load_image

        from localflux.families.flux1.pipelines import pipeline_class

        folder = ws.task_model(kind, shape)
        given = inputs(ws)
        config = {"model": {"source": str(folder)}, "prompt": {"subject": PROMPT}, "input": given,
                  "sampling": {"seed": 5, "max_sequence_length": 48, **sampling}}
        pipe = pipeline_class(task).from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        pictures = {"image": given.get("image"), "mask_image": given.get("mask")}
        if given.get("references"):
            pictures["image"] = given["references"][0]

        def reference(seed: int):
            loaded = {key: load_image(str(value)) for key, value in pictures.items() if value}
            return pipe(prompt=PROMPT, generator=_generators(seed), max_sequence_length=48, **loaded, **call).images[0]

        return config, reference

    return Case(f"flux1-{task}-{shape}", "flux1", task, build, patches={("localflux.tasks.kontext", "MAX_AREA"): 96 * 64})


def _flux1_control(shape: str, lora: bool) -> Case:
    """``FluxControlPipeline`` on a control model folder, or on a base folder with a control LoRA."""
    call = dict(width=80, height=48, num_inference_steps=3, guidance_scale=3.5, max_sequence_length=48)

    def build(ws: Workspace):
        from diffusers import FluxControlPipeline
        from diffusers.utils import load_image

        folder = ws.task_model("base" if lora else "control", shape)
        picture = ws.picture()
        config = {"model": {"source": str(folder)}, "prompt": {"subject": PROMPT}, "input": {"control": str(picture)},
                  "sampling": {"seed": 5, "steps": 3, "guidance": 3.5, "max_sequence_length": 48}}
        pipe = FluxControlPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        if lora:
            config["lora"] = [{"path": str(ws.control_lora(shape))}]
            pipe.load_lora_weights(str(ws.control_lora(shape)))

        def reference(seed: int):
            return pipe(prompt=PROMPT, control_image=load_image(str(picture)), generator=_generators(seed), **call).images[0]

        return config, reference

    return Case(f"flux1-control-{'lora-' if lora else ''}{shape}", "flux1", "control", build)


def _flux1_redux(shape: str) -> Case:
    """``FluxPriorReduxPipeline`` (with the base's text encoders) -> ``FluxPipeline``'s embeddings; two pictures summed."""
    call = dict(width=64, height=48, num_inference_steps=3, guidance_scale=3.5)

    def build(ws: Workspace):
        from diffusers import FluxPipeline, FluxPriorReduxPipeline
        from diffusers.utils import load_image

        folder, prior_folder = ws.task_model("base", shape), ws.redux_prior(shape)
        pictures = [ws.picture(), ws.picture((40, 40), seed=1)]
        config = {"model": {"source": str(folder), "redux": str(prior_folder)}, "prompt": {"subject": PROMPT},
                  "input": {"redux": [str(p) for p in pictures], "redux_scale": 0.8},
                  "size": {"width": 64, "height": 48}, "sampling": {"seed": 5, "steps": 3, "guidance": 3.5}}
        pipe = FluxPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        prior = FluxPriorReduxPipeline.from_pretrained(prior_folder, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                                       text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2)

        def reference(seed: int):
            out = prior(image=[load_image(str(p)) for p in pictures], prompt=[PROMPT] * 2, prompt_2=[PROMPT] * 2,
                        prompt_embeds_scale=[0.8] * 2, pooled_prompt_embeds_scale=[0.8] * 2)
            return pipe(prompt_embeds=out.prompt_embeds, pooled_prompt_embeds=out.pooled_prompt_embeds,
                        generator=_generators(seed), **call).images[0]

        return config, reference

    return Case(f"flux1-redux-{shape}", "flux1", "redux", build)


def _flux1_cases() -> list[Case]:
    photo = lambda ws: {"image": str(ws.picture())}  # noqa: E731
    masked = lambda ws: {"image": str(ws.picture()), "mask": str(ws.mask())}  # noqa: E731
    reference = lambda ws: {"references": [str(ws.picture())]}  # noqa: E731
    cases = [_flux1_text("tiny", "schnell", 0.0, 64, 48), _flux1_text("tiny-dev", "dev", 3.5, 48, 64)]
    for shape in ("tiny", "schnell-named-dev"):
        cases.append(_flux1_image("img2img", "base", shape, photo,
                                  dict(strength=0.6, width=80, height=48, num_inference_steps=4, guidance_scale=3.5),
                                  {"steps": 4, "guidance": 3.5}))
        cases.append(_flux1_image("inpaint", "base", shape, masked,
                                  dict(width=80, height=48, num_inference_steps=4, guidance_scale=3.5),
                                  {"steps": 4, "guidance": 3.5}))
        cases.append(_flux1_image("fill", "fill", shape, masked, dict(width=80, height=48, num_inference_steps=3),
                                  {"steps": 3}))
    for shape in ("tiny", "dev-named-schnell"):
        cases.append(_flux1_image("kontext", "kontext", shape, reference,
                                  dict(width=80, height=48, max_area=96 * 64, num_inference_steps=2, guidance_scale=3.5),
                                  {"steps": 2}))
    for shape in ("tiny", "schnell-named-dev"):
        cases.append(_flux1_control(shape, lora=False))
        cases.append(_flux1_control(shape, lora=True))
        cases.append(_flux1_redux(shape))
    return cases


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


def _flux2_source(ws: Workspace, model: str) -> str:
    """A built-in name, or a klein shape of tests/flux2_shapes.py saved as a folder (named against its kind)."""
    if model.startswith("tiny-flux2"):
        return model
    import flux2_shapes

    return str(ws.once(("flux2", model), lambda p: (flux2_shapes.save(model, p), p)[1]))


def _flux2_text(model: str, guidance: float, width: int, height: int, negative: str | None = None,
                bad_flags: tuple[str, ...] = (), label: str | None = None) -> Case:
    steps = 3

    def build(ws: Workspace):
        config = {"model": {"source": _flux2_source(ws, model), "device": "cpu"}, "prompt": {"subject": PROMPT},
                  "size": {"width": width, "height": height}, "sampling": {"seed": 5, "steps": steps, "guidance": guidance}}
        if negative:
            config["prompt"]["negative"] = negative
        pipe = _flux2_pipe(model)

        def reference(seed: int):
            extra = {}
            if negative:
                extra["negative_prompt_embeds"] = pipe.encode_prompt(prompt=negative, device="cpu")[0]
            return pipe(prompt=PROMPT, width=width, height=height, num_inference_steps=steps, guidance_scale=guidance,
                        generator=_generators(seed), **extra).images[0]

        return config, reference

    return Case(f"flux2-text-{label or model}-{width}x{height}", "flux2", "text", build, bad_flags=bad_flags)


def _flux2_image(task: str, model: str, inputs: Callable[[Workspace], dict]) -> Case:
    """References (Flux2KleinPipeline ``image=[...]``) or inpaint (Flux2KleinInpaintPipeline) on a FLUX.2 model."""
    steps = 3

    def build(ws: Workspace):
        from diffusers.utils import load_image

        given = inputs(ws)
        config = {"model": {"source": _flux2_source(ws, model), "device": "cpu"}, "prompt": {"subject": PROMPT},
                  "input": given, "sampling": {"seed": 5, "steps": steps}}
        pipe = _flux2_pipe(model, "inpaint" if task == "inpaint" else "text")
        guidance = 1.0 if getattr(pipe.config, "is_distilled", False) else 4.0  # dev and klein base: 4.0

        def reference(seed: int):
            refs = [load_image(str(path)) for path in given.get("references", [])]
            if task == "inpaint":
                extra = dict(image=load_image(str(given["image"])), mask_image=load_image(str(given["mask"])),
                             image_reference=refs or None)
            else:
                extra = dict(image=refs)
            return pipe(prompt=PROMPT, num_inference_steps=steps, guidance_scale=guidance, generator=_generators(seed),
                        **extra).images[0]

        return config, reference

    return Case(f"flux2-{task}-{model}", "flux2", task, build)


def flux2_cases() -> list[Case]:
    return [
        _flux2_text("tiny-flux2", 1.0, 64, 48,
                    bad_flags=("--model", "tiny-flux2", "--prompt", "x", "--negative-prompt", "blurry")),
        _flux2_text("tiny-flux2-base", 4.0, 48, 64),
        _flux2_text("tiny-flux2-base", 3.0, 64, 64, negative="blurry, dark", label="tiny-flux2-base-negative"),
        _flux2_text("tiny-flux2-dev", 4.0, 64, 48,
                    bad_flags=("--model", "tiny-flux2-dev", "--prompt", "x", "--negative-prompt", "blurry")),
        _flux2_text("klein-base-named-distilled", 1.0, 80, 48),
        _flux2_text("klein-named-base", 4.0, 48, 80),
        _flux2_image("reference", "tiny-flux2", lambda ws: {"references": [str(ws.picture((100, 70), 1)),
                                                                           str(ws.picture((64, 80), 2))]}),
        _flux2_image("reference", "klein-named-base", lambda ws: {"references": [str(ws.picture((80, 64), 3)),
                                                                                 str(ws.picture((96, 96), 4))]}),
        _flux2_image("reference", "tiny-flux2-dev", lambda ws: {"references": [str(ws.picture((100, 70), 1)),
                                                                                str(ws.picture((64, 80), 2))]}),
        _flux2_image("inpaint", "tiny-flux2", lambda ws: {"image": str(ws.picture((100, 70), 1)),
                                                          "mask": str(ws.mask((100, 70), (20, 10, 70, 50)))}),
        _flux2_image("inpaint", "klein-base-named-distilled",
                     lambda ws: {"image": str(ws.picture((80, 48), 5)), "mask": str(ws.mask()),
                                 "references": [str(ws.picture((64, 64), 6))]}),
    ]


CASES: list[Case] = _flux1_cases() + flux2_cases()
