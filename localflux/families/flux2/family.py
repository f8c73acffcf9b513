"""FLUX.2 ([klein] 4B/9B distilled and base, [dev]): one big text encoder, 32-channel VAE, 4-axis RoPE.

The spec generic code asks: detection from a source, presets, the one text the encoder reads, the
diffusers class per task, loading and placement (``model.py``), the dry-run schedule (``facts.py``)
and the memory footprint (``footprint.py``). Detection never reads folder names: model_index.json's
``_class_name`` and ``is_distilled``, the transformer config's ``guidance_embeds``, or a single file's
tensor names. Only a hub id that is not on this machine is classified by its name.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ...errors import ConfigError
from ...geometry import vae_scale_factor_of_model
from ..base import Family
from . import facts, footprint, model, single_file, training
from .footprint import sized_footprint
from .loading import is_distilled, kind_of_folder, pipeline_class, single_file_plan
from .lora import MARKERS, to_diffusers
from .model import task_pipeline
from .presets import BUILTIN, MAX_SEQUENCE_LENGTH, PRESETS, SIZED_MODELS, config_root
from .single_file import is_flux2_transformer, tensor_shapes
from .tiny import build_tiny_pipeline

if TYPE_CHECKING:
    from ...config import Config
    from ...loader import Source
    from ...render import RenderRequest

log = logging.getLogger(__name__)

PIPELINE_CLASSES = ("Flux2KleinPipeline", "Flux2KleinInpaintPipeline", "Flux2Pipeline")
_NAME_MARKERS = ("flux.2", "flux2", "flux-2")  # only for hub ids that are not on this machine
_PART_KEYS = ("prompt.subject", "prompt.styling", "prompt.lens", "prompt.lighting", "prompt.composition",
              "prompt.background", "prompt.quality")


class Flux2(Family):
    name = "flux2"
    label = "FLUX.2"
    presets = PRESETS
    builtin = BUILTIN
    tasks = ("text", "reference", "inpaint")
    inpaint_with_references = True
    auto_text_on_cpu = True  # FLUX.2 [dev]'s 23 B Mistral encoder: on a 24 GB card it encodes from system memory

    # ---- detection
    def claims(self, source: "Source") -> bool:
        if source.kind == "tiny":
            return source.text in self.builtin
        if source.kind == "single_file":
            return _single_file_is_flux2(source.path)
        if source.path is not None:
            index = _read_json(source.path / "model_index.json") or {}
            if str(index.get("_class_name", "")) in PIPELINE_CLASSES:
                return True
            transformer = _read_json(source.path / "transformer" / "config.json") or {}
            return transformer.get("_class_name") == "Flux2Transformer2DModel"
        return any(marker in source.text.lower() for marker in _NAME_MARKERS)

    def detect_preset(self, source: "Source") -> str:
        """klein / klein-base / flux2-dev from the model's configs (a single file: from its base folder)."""
        if source.kind == "tiny":
            return self.builtin[source.text]
        if source.kind == "single_file":

            inferred = single_file.infer_config(single_file.tensor_shapes(source.path))
            if inferred["guidance_embeds"]:
                return "flux2-dev"
            root = source.base.path if source.base is not None else None
            # a single file cannot tell base from distilled: the base folder's flag (or [model] preset) says
            return _klein_preset(root) if root is not None and (root / "model_index.json").is_file() else "klein"
        if source.path is not None:

            return "flux2-dev" if kind_of_folder(source.path) == "dev" else _klein_preset(source.path)
        text = source.text.lower()  # a hub id not downloaded yet: its name is all there is
        return "flux2-dev" if "klein" not in text else "klein-base" if "base" in text else "klein"

    def vae_scale_factor(self, source: "Source") -> int:
        return vae_scale_factor_of_model(source, 8)

    # ---- config and prompts
    def validate(self, config: "Config") -> None:
        prompt, preset = config.prompt, config.model.preset
        for key in ("clip", "t5"):
            if getattr(prompt, key):
                raise ConfigError(f"prompt.{key} is for FLUX.1's {key.upper()} encoder; FLUX.2 models read one text "
                                  "(one text encoder): put it in prompt.subject / --prompt")
        if prompt.negative and preset != "klein-base":
            what = "FLUX.2 [dev] has no negative prompt" if preset == "flux2-dev" else \
                "FLUX.2 [klein] distilled runs without CFG, so a negative prompt would be ignored"
            raise ConfigError(f"prompt.negative: {what}; remove it (only klein base models, preset klein-base, use one)")
        if config.sampling.true_cfg != 1.0:
            raise ConfigError("sampling.true_cfg is FLUX.1's; FLUX.2 [klein] base runs CFG at sampling.guidance "
                              "(default 4.0): set that instead")
        given = config.input
        if given.image is not None and given.mask is None:
            what = "--outpaint" if given.outpaint is not None else "--image without --mask"
            raise ConfigError(f"{what}: diffusers has no FLUX.2 img2img/outpaint pipeline; to edit from a picture pass "
                              "it as --reference (input.references), or add --mask to inpaint")
        if given.paste_back or given.outpaint is not None:
            raise ConfigError("input.paste_back / --outpaint are FLUX.1 inpaint options; FLUX.2 inpaint takes "
                              "--image, --mask, --strength and --reference")
        if given.mask is not None and preset == "flux2-dev":
            raise ConfigError("FLUX.2 [dev] has no inpaint pipeline in diffusers (Flux2KleinInpaintPipeline is klein "
                              "only); use a klein model or --reference")
        memory = config.memory
        if memory.cache_t5:
            raise ConfigError("memory.cache_t5 = true is for FLUX.1's T5 encoder; FLUX.2 models do not support it yet: "
                              "use memory.offload = 'model' to keep the text encoder off the GPU while denoising")

    def encoder_prompts(self, config: "Config", final: str) -> dict[str, str]:
        return {"text": final}

    def recorded_prompt_keys(self, prompt_record: dict) -> dict:
        """The recorded text as the whole prompt (subject), the other parts emptied."""
        keys = {key: None for key in _PART_KEYS}
        keys["prompt.subject"] = prompt_record["text"]
        return keys

    def prompt_kwargs(self, request: "RenderRequest", pipe=None) -> dict:
        kwargs = dict(prompt=request.prompts["text"], guidance_scale=request.guidance,
                      max_sequence_length=request.max_sequence_length)
        if request.negative_prompt and pipe is not None:
            # Flux2KleinPipeline has no negative_prompt argument: encode it as the pipeline encodes "" for CFG
            kwargs["negative_prompt_embeds"] = negative_embeds(pipe, request.negative_prompt, request.max_sequence_length)
        return kwargs

    def prompt_warnings(self, pipe, request: "RenderRequest") -> list[str]:
        kind = "dev" if type(pipe).__name__ == "Flux2Pipeline" else "klein"
        tokens = facts.count_prompt_tokens(pipe.tokenizer, request.prompts["text"], kind)
        limit = request.max_sequence_length
        if tokens > limit:
            return [f"prompt is {tokens} tokens with the chat template; the text encoder reads only the first {limit} "
                    + ("(raise sampling.max_sequence_length, up to 512)" if limit < MAX_SEQUENCE_LENGTH
                       else "(512 is the limit): shorten it, key words first")]
        return []

    def negative_note(self, request: "RenderRequest") -> str:
        return f"encoded; CFG at guidance {request.guidance:g} against it"

    # ---- schedule
    def sigmas(self, source: "Source", preset: str, steps: int, width: int, height: int) -> list[float]:
        return facts.expected_sigmas(width, height, steps)[:-1]  # as render records them: without the final 0

    # ---- loading
    def pipeline_class(self, task: str):

        return pipeline_class("klein", task)

    def owns_pipeline(self, pipe) -> bool:
        return type(pipe).__name__ in PIPELINE_CLASSES

    def task_pipeline(self, pipe, role: str):

        return task_pipeline(pipe, role)

    def load(self, source, placement, preset, memory_plan):

        return model.load(source, placement, preset, memory_plan)

    def place(self, pipe, placement, memory_plan) -> None:

        model.place(pipe, placement, memory_plan)

    def config_root(self, preset: str):
        return config_root(preset)

    def footprint(self, source: "Source", preset: str):
        """Counts from the model's own configs, else the packaged ones of its preset (Qwen3 in the "t5" slot)."""

        if source.kind == "tiny":

            return footprint.footprint_of_pipe(build_tiny_pipeline(source.text))
        packaged = config_root(preset)
        if source.kind == "single_file":
            base = source.base.path if source.base is not None else None
            root = base if footprint.has_configs(base) else packaged

            transformer_root = single_file_plan(source.path, base)["config"] if base is not None else None
            return footprint.footprint_from_configs(str(root), transformer_root)
        root = source.path if footprint.has_configs(source.path) else packaged
        return footprint.footprint_from_configs(str(root))

    def model_name(self, name: str) -> str:
        return f"{self.label}-{name}"  # klein-4b and klein-9b share a preset: the sized name tells them apart

    def sized_models(self) -> dict[str, str]:

        return {name: preset for name, (preset, _folder) in SIZED_MODELS.items()}

    def sized_footprint(self, name: str):

        return sized_footprint(name) if name in self.sized_models() else super().sized_footprint(name)

    # ---- training
    def training(self):

        return training

    # ---- LoRA
    def lora_to_diffusers(self, lora, tensors: dict) -> dict:

        return to_diffusers(lora, tensors)

    def lora_markers(self) -> tuple[str, ...]:

        return MARKERS


def negative_embeds(pipe, text: str, max_sequence_length: int):
    """``pipe.encode_prompt(text)``: the embeddings Flux2KleinPipeline's CFG runs against (batch 1; it repeats them)."""
    embeds, _ids = pipe.encode_prompt(prompt=text, device=pipe._execution_device, num_images_per_prompt=1,
                                      max_sequence_length=max_sequence_length)
    return embeds


def _klein_preset(root) -> str:

    return "klein" if is_distilled(root) else "klein-base"


def _read_json(path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _single_file_is_flux2(path) -> bool:
    if path is None:
        return False

    try:
        return is_flux2_transformer(tensor_shapes(path))
    except Exception:  # not a readable safetensors file: FLUX.1's detection reports it in one line
        return False
