"""FLUX.1 ([schnell], [dev]): CLIP-L pooled + T5-XXL sequence conditioning, 16-channel VAE, 3-axis RoPE.

The spec generic code asks: detection from a source, presets, the prompt each encoder reads, the
diffusers class per task, loading and placement (``loading.py``), and the dry-run schedule.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ...errors import ModelSourceError
from ...geometry import FLUX_VAE_SCALE_FACTOR, vae_scale_factor_of_model
from ...memory.footprint import footprint_from_configs, footprint_of_pipe, packaged_config_root, with_transformer_config
from ...memory.formats import gguf_has_guidance, inspect_gguf
from ...schedule import flux_sigmas
from ...weightfile import safetensors_keys, tensor_shapes
from ..base import Family
from . import loading, training
from .loading import require_flux_keys
from .pipelines import pipeline_class, preset_of_config, preset_of_folder, task_pipeline
from .presets import BUILTIN, CLIP_MAX_TOKENS, PRESETS, config_root
from .single_file import infer_config, transformer_config
from .tiny import build_tiny_pipeline

if TYPE_CHECKING:
    from ...config import Config
    from ...loader import Source
    from ...render import RenderRequest

log = logging.getLogger(__name__)

_COMPONENTS = ("transformer", "text_encoder_2", "text_encoder", "vae")
_BFL_GUIDANCE = "guidance_in.in_layer.weight"
_DIFFUSERS_GUIDANCE = "time_text_embed.guidance_embedder.linear_1.weight"
_FLUX2_MARKERS = ("double_stream_modulation_img", "flux.2", "flux2")  # names a FLUX.2 model would carry
# LoRA keys of modules only FLUX.1 has (per-block modulation, CLIP, vector_in, FLUX.1's MLP and single-block names)
_LORA_MARKERS = (r"blocks[._]\d+[._](img_mod|txt_mod|modulation)[._]lin", r"vector_in", r"ff(_context)?\.net\.",
                 r"norm1(_context)?\.linear", r"single_transformer_blocks\.\d+\.(proj_mlp|proj_out|norm\.linear|attn\.to_[qkv]\.)",
                 r"time_text_embed", r"^lora_te1_", r"text_encoders\.clip_l")


class Flux1(Family):
    name = "flux1"
    label = "FLUX.1"
    presets = PRESETS
    builtin = BUILTIN
    tasks = ("text", "img2img", "inpaint", "fill", "kontext", "control", "redux")

    # ---- detection
    def claims(self, source: "Source") -> bool:
        if source.kind == "tiny":
            return source.text in self.builtin
        if source.kind == "single_file":
            return True  # the last family asked: detect_preset refuses a file that is no FLUX.1 transformer
        index = _model_index(source)
        if index is not None:
            name = str(index.get("_class_name", ""))
            return name.startswith("Flux") and not name.startswith("Flux2")
        return not any(marker in source.text.lower() for marker in _FLUX2_MARKERS)

    def detect_preset(self, source: "Source") -> str:
        """``fill`` (transformer input width), ``kontext`` (model_index.json's pipeline class), else ``schnell`` or
        ``dev`` from the transformer's guidance embedding; from the name only for a hub id not on disk yet."""
        if source.kind == "tiny":
            return self.builtin[source.text]
        if source.kind in ("folder", "hub") and source.path is not None:
            special = preset_of_folder(source.path)
            if special is not None:
                return special
        if source.kind == "single_file":
            return _single_file_preset(source)
        if source.path is not None:
            config_file = source.path / "transformer" / "config.json"
            if config_file.is_file():
                return "dev" if json.loads(config_file.read_text()).get("guidance_embeds") else "schnell"
        lowered = source.text.lower()
        for name in ("fill", "kontext", "schnell"):
            if f"flux.1-{name}" in lowered:
                return name
        for name in ("canny", "depth"):  # a hub id that is not downloaded yet: its name is all there is
            if f"flux.1-{name}" in lowered:
                return "control"
        return "dev"

    def vae_scale_factor(self, source: "Source") -> int:
        return vae_scale_factor_of_model(source, FLUX_VAE_SCALE_FACTOR)

    # ---- prompts
    def encoder_prompts(self, config: "Config", final: str) -> dict[str, str]:
        return {"clip": config.prompt.clip or final, "t5": config.prompt.t5 or final}

    def recorded_prompt_keys(self, prompt_record: dict) -> dict[str, str]:
        return {"prompt.clip": prompt_record["clip"], "prompt.t5": prompt_record["t5"]}

    def prompt_kwargs(self, request: "RenderRequest", pipe=None) -> dict:
        use_cfg = request.true_cfg > 1 and bool(request.negative_prompt)
        return dict(prompt=request.prompts["clip"], prompt_2=request.prompts["t5"],
                    negative_prompt=request.negative_prompt if use_cfg else None, true_cfg_scale=request.true_cfg,
                    guidance_scale=request.guidance, max_sequence_length=request.max_sequence_length)

    def prompt_warnings(self, pipe, request: "RenderRequest") -> list[str]:
        """Warnings for a prompt longer than CLIP's window (77 tokens) or the T5 limit."""
        warnings = []
        # FluxPipeline truncates CLIP input at its tokenizer's model_max_length (77 for FLUX.1's CLIP-L)
        clip_limit = getattr(pipe, "tokenizer_max_length", None) or CLIP_MAX_TOKENS
        clip_tokens = len(pipe.tokenizer(request.prompts["clip"], truncation=False).input_ids)
        if clip_tokens > clip_limit:
            warnings.append(f"prompt is {clip_tokens} CLIP tokens; CLIP reads only the first {clip_limit} "
                            f"(T5 still reads up to {request.max_sequence_length}): put the key words first")
        t5_tokens = len(pipe.tokenizer_2(request.prompts["t5"], truncation=False).input_ids)
        if t5_tokens > request.max_sequence_length:
            warnings.append(f"prompt is {t5_tokens} T5 tokens; only the first {request.max_sequence_length} are used "
                            "(raise sampling.max_sequence_length, up to 512)")
        return warnings

    # ---- schedule
    def scheduler_config(self, source: "Source", preset: str) -> dict:
        """The model's own scheduler config when it is on disk, else the published one for its preset."""
        root = source.base.path if source.kind == "single_file" and source.base else source.path
        if root is not None and (root / "scheduler" / "scheduler_config.json").is_file():
            return json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        return json.loads((config_root(preset) / "scheduler" / "scheduler_config.json").read_text())

    def sigmas(self, source: "Source", preset: str, steps: int, width: int, height: int) -> list[float]:
        return flux_sigmas(self.scheduler_config(source, preset), steps, width, height, self.vae_scale_factor(source))

    # ---- loading
    def pipeline_class(self, task: str):
        return pipeline_class(task)

    def task_pipeline(self, pipe, role: str):
        return task_pipeline(pipe, role)

    def owns_pipeline(self, pipe) -> bool:
        name = type(pipe).__name__
        return name.startswith("Flux") and not name.startswith("Flux2")

    def load(self, source, placement, preset, memory_plan):

        return loading.load(source, placement, preset, memory_plan)

    def place(self, pipe, placement, memory_plan) -> None:

        loading.place(pipe, placement, memory_plan.offload, memory_plan)

    # ---- training
    def training(self):

        return training

    def config_root(self, preset: str):
        return config_root(preset)

    def lora_markers(self) -> tuple[str, ...]:
        return _LORA_MARKERS

    def footprint(self, source: "Source", preset: str):
        """Parameter counts from the model's own configs, else from the published configs of its preset."""

        if source.kind == "tiny":

            return footprint_of_pipe(build_tiny_pipeline(self.builtin[source.text]))
        root = source.base.path if source.kind == "single_file" and source.base else source.path
        if root is None or not all((root / part / "config.json").is_file() for part in _COMPONENTS):
            root = packaged_config_root(preset)
        footprint = footprint_from_configs(str(root))
        if root == packaged_config_root(preset):
            footprint = preset_footprint(preset, footprint)
        if source.kind == "single_file":  # the file brings its own shape (a pruned or distilled transformer, say)


            base = json.loads((root / "transformer" / "config.json").read_text())
            config = transformer_config(source.path, base, source.base.path if source.base else None)
            if any(base.get(key) != value for key, value in config.items()):
                footprint = with_transformer_config(footprint, config)
        return footprint


def preset_footprint(preset: str, footprint=None):
    """The published footprint of a preset: Fill and Kontext share FLUX.1 [dev]'s configs except the
    transformer's (Fill's input is 384 channels wide), which is counted from their own config."""


    footprint = footprint or footprint_from_configs(str(packaged_config_root(preset)))
    own = config_root(preset, "transformer")
    if own != config_root(preset):
        footprint = with_transformer_config(footprint, json.loads((own / "transformer" / "config.json").read_text()))
    return footprint


def _model_index(source: "Source") -> dict | None:
    root = source.path if source.kind in ("folder", "hub") else None
    if root is None or not (root / "model_index.json").is_file():
        return None
    try:
        return json.loads((root / "model_index.json").read_text())
    except ValueError:
        return None


def _single_file_preset(source: "Source") -> str:
    if source.path.suffix.lower() != ".gguf":
        try:
            special = preset_of_config(infer_config(tensor_shapes(source.path)), source.text)
        except ModelSourceError:
            raise
        except Exception:  # noqa: BLE001 - safetensors raises several types for a damaged header
            special = None  # not a FLUX transformer: refused just below, in one line
        if special is not None:
            return special
    return "dev" if _single_file_has_guidance(source.path) else "schnell"


def _single_file_has_guidance(path) -> bool:
    if path.suffix.lower() == ".gguf":

        inspect_gguf(path)  # refuses a GGUF that is not a FLUX transformer, in one line
        return gguf_has_guidance(path)
    keys = safetensors_keys(path)

    require_flux_keys(path, keys)  # refuse a VAE/LoRA/encoder file before anything is written
    return any(k.endswith((_BFL_GUIDANCE, _DIFFUSERS_GUIDANCE)) for k in keys)
