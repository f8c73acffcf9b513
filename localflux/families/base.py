"""Model families: one spec per family, found by ordered, declarative detection (spandrel's idea).

A family (``families/<name>/``) owns everything that differs between model generations: its
presets, its built-in miniatures, how it is recognised from a model source, its packaged configs
for offline single-file loading, its text encoders (prompt texts, limits, warnings), the diffusers
pipeline class of each task, how its weights load and are placed, and its memory footprint.
Generic code asks the family; it never names a family's classes or encoders.

Adding a family: a folder with a ``Family`` subclass and ``register()`` it in ``families/__init__.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelSourceError
from ..source import Source

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..device import Placement
    from ..loader import LoadedModel
    from ..render import RenderRequest


@dataclass(frozen=True)
class Preset:
    """The defaults a model variant expects when the config does not say (each value with its source)."""

    name: str
    steps: int
    guidance: float
    max_sequence_length: int
    hub_id: str | None = None


class Family:
    name: str = ""  # short id recorded in recipes ("flux1")
    label: str = ""  # for people ("FLUX.1")
    presets: dict[str, Preset] = {}
    builtin: dict[str, str] = {}  # built-in miniature name -> preset
    tasks: tuple[str, ...] = ("text",)  # the tasks this family can run
    # memory = "auto" may keep the big text encoder in system memory (encoding on the CPU) when nothing else fits
    auto_text_on_cpu: bool = False
    inpaint_with_references = False  # the inpaint task runs through tasks/reference.py (FLUX.2's pipeline)
    # the prompt_kwargs keys that carry prompt *text*: left out when a task passes embeddings instead
    prompt_text_keys: tuple[str, ...] = ("prompt", "prompt_2")

    # ---- detection (no weights loaded)
    def claims(self, source: "Source") -> bool:
        """Whether ``source`` is a model of this family (built-in names, configs, tensor names)."""
        raise NotImplementedError

    def detect_preset(self, source: "Source") -> str:
        raise NotImplementedError

    def vae_scale_factor(self, source: "Source") -> int:
        raise NotImplementedError

    # ---- config and prompts
    def validate(self, config: "Config") -> None:
        """Refuse config values that this family cannot honour (one line, the key and the fix)."""

    def encoder_prompts(self, config: "Config", final: str) -> dict[str, str]:
        """The text each text encoder reads, keyed as the recipe records it."""
        raise NotImplementedError

    def prompt_kwargs(self, request: "RenderRequest", pipe=None) -> dict[str, Any]:
        """The pipeline's prompt keyword arguments for a request (``pipe``: for embeddings a family encodes itself)."""
        raise NotImplementedError

    def prompt_warnings(self, pipe, request: "RenderRequest") -> list[str]:
        return []

    def negative_note(self, request: "RenderRequest") -> str:
        """How the negative prompt is used, for --dry-run (FLUX.1: only with true CFG)."""
        return "used" if request.true_cfg > 1 else "unused: true_cfg is 1"

    def recorded_prompt_keys(self, prompt_record: dict) -> dict[str, str]:
        """Config keys that make a replay send each encoder exactly the text a recipe recorded."""
        raise NotImplementedError

    # ---- schedule (for --dry-run; the sampler lets diffusers compute it)
    def sigmas(self, source: "Source", preset: str, steps: int, width: int, height: int) -> list[float]:
        raise NotImplementedError

    # ---- loading
    def pipeline_class(self, task: str):
        raise NotImplementedError

    def owns_pipeline(self, pipe) -> bool:
        """Whether a loaded diffusers pipeline is one of this family's (the LoRA stage asks)."""
        return False

    def task_pipeline(self, pipe, role: str):
        """The pipeline running ``role`` over the loaded pipeline's modules (nothing reloaded)."""
        raise NotImplementedError

    def load(self, source: "Source", placement: "Placement", preset: str, memory_plan) -> "LoadedModel":
        raise NotImplementedError

    # ---- LoRA (lora/ asks; None / () = the generic FLUX.1 path)
    def lora_to_diffusers(self, lora, tensors: dict) -> dict | None:
        """A LoRA file's tensors in diffusers/PEFT keys, alphas folded; None: lora/'s own (FLUX.1) conversion."""
        return None

    def lora_markers(self) -> tuple[str, ...]:
        """Regexes matching LoRA keys of modules only this family has (to name the family of a foreign LoRA)."""
        return ()

    def config_root(self, preset: str) -> "Path":
        """The packaged published configs of ``preset`` (offline single-file loading, meta-device sizes)."""
        raise NotImplementedError

    # ---- LoRA training (train/ asks)
    def training(self):
        """The module train/ asks for latents, text embeddings, the transformer call and LoRA targets (None: this
        family cannot be trained); see families/flux1/training.py for what it provides."""
        return None

    # ---- full-size models by name (doctor --model, bench --model)
    def sized_models(self) -> dict[str, str]:
        """Names of the full-size models this family can size from packaged configs -> their preset."""
        return {preset: preset for preset in self.presets}

    def model_name(self, name: str) -> str:
        """How people call a ``sized_models`` name: its published repository name (FLUX.1-Kontext-dev)."""
        preset = self.presets.get(self.sized_models().get(name, name))
        return preset.hub_id.split("/")[-1] if preset is not None and preset.hub_id else f"{self.label}-{name}"

    def sized_footprint(self, name: str):
        """The ``Footprint`` of a ``sized_models`` name, from the packaged (published) configs."""

        preset = self.sized_models().get(name, name)  # a preset name sizes its default model
        return self.footprint(Source("hub", self.presets[preset].hub_id or preset), preset)


class Registry:
    """Families in detection order; a second family with a taken name, preset or built-in is refused."""

    def __init__(self) -> None:
        self._families: list[Family] = []

    def register(self, family: Family) -> Family:
        for other in self._families:
            taken = ({other.name} & {family.name}) or (set(other.presets) & set(family.presets)) \
                or (set(other.builtin) & set(family.builtin))
            if taken:
                raise ValueError(f"family {family.name!r} reuses {sorted(taken)} of family {other.name!r}")
        self._families.append(family)
        return family

    def __iter__(self):
        return iter(self._families)

    def by_name(self, name: str) -> Family:
        for family in self._families:
            if family.name == name:
                return family
        raise KeyError(name)

    def of_preset(self, preset: str) -> Family:
        for family in self._families:
            if preset in family.presets:
                return family
        known = ", ".join(p for f in self._families for p in f.presets)
        raise ConfigError(f"model.preset {preset!r} is not known; use auto or one of {known}")

    def builtin_names(self) -> dict[str, Family]:
        return {name: family for family in self._families for name in family.builtin}

    def of_pipeline(self, pipe) -> Family | None:
        return next((family for family in self._families if family.owns_pipeline(pipe)), None)

    def of_lora_keys(self, keys) -> Family | None:
        """The one family whose marker module names a LoRA's keys use (None: none, or ambiguous)."""

        hits = [f for f in self._families if any(re.search(m, k) for k in keys for m in f.lora_markers())]
        return hits[0] if len(hits) == 1 else None

    def detect(self, source: "Source") -> Family:
        for family in self._families:
            if family.claims(source):
                return family
        raise ModelSourceError(f"model {source.text!r} is not a model localflux knows "
                               f"({', '.join(f.label for f in self._families)}); check --model")
