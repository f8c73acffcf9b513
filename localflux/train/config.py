"""The training config: one strict TOML file describes one LoRA training run.

Built by the same machinery as the render config (``localflux.config.Layers``): unknown keys,
wrong types and out-of-range values are ``ConfigError``s naming the dotted key and the file;
paths are relative to the file. ``check_train_config`` adds the rules that tie keys together
(steps or epochs, buckets on the 16-pixel grid, a trigger word, a control sample prompt).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import Layers, ModelConfig, _range, parse_set_option
from ..errors import ConfigError, DatasetError

TRIGGER = "[trigger]"
SCHEMA_NOTE = "see configs/train-subject.toml for every key"

# Attention and MLP projections of both block kinds, named inside a block (diffusers names).
# Double blocks: image and text streams (to_*, add_*_proj, ff, ff_context); single blocks: the fused
# stream (attn.to_q/k/v, proj_mlp, proj_out). The diffusers FLUX DreamBooth script uses the double-block
# set; adding the single blocks' projections is what ai-toolkit and kohya do for subject LoRAs.
DEFAULT_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    "proj_mlp", "proj_out",
)


@dataclass(frozen=True)
class DatasetConfig:
    folder: str = ""  # images with optional same-name .txt captions
    trigger: str = ""  # the word that calls up the subject; replaces [trigger] in captions and prompts
    caption_template: str = "photo of [trigger]"  # caption of an image without a .txt
    caption_dropout: float = field(default=0.0, metadata=_range(0.0, 1.0))  # share of steps with the empty caption
    resolutions: list[int] = field(default_factory=lambda: [512])  # bucket sizes (area ~ R x R), multiples of 16
    regularization_folder: str | None = None  # prior-preservation images (captions without the trigger)
    regularization_weight: float = field(default=1.0, metadata=_range(0.0, 100.0))


@dataclass(frozen=True)
class TrainLoraConfig:
    rank: int = field(default=16, metadata=_range(1, 1024))
    alpha: float = field(default=16.0, metadata=_range(0.0, 4096.0, lo_open=True))
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    double_blocks: list[int] | None = None  # indices of transformer_blocks to adapt (unset: all)
    single_blocks: list[int] | None = None  # indices of single_transformer_blocks to adapt (unset: all)


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit: bitsandbytes, CUDA only
    lr: float = field(default=1e-4, metadata=_range(0.0, 1.0, lo_open=True))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0, 1.0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=_range(0.0, 1.0, lo_open=True))
    max_grad_norm: float = field(default=1.0, metadata=_range(0.0, 1e6))  # 0: no clipping
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = field(default=0, metadata=_range(0, 10**7))


@dataclass(frozen=True)
class TrainingConfig:
    steps: int | None = field(default=None, metadata=_range(1, 10**7))  # optimizer steps; or epochs
    epochs: int | None = field(default=None, metadata=_range(1, 10**5))
    batch_size: int = field(default=1, metadata=_range(1, 256))  # per process
    gradient_accumulation: int = field(default=1, metadata=_range(1, 1024))
    seed: int = field(default=42, metadata=_range(0, 2**63 - 1))
    timesteps: Literal["uniform", "logit_normal", "flux_shift"] = "flux_shift"
    logit_mean: float = 0.0
    logit_std: float = field(default=1.0, metadata=_range(0.0, 10.0, lo_open=True))
    guidance: float = field(default=1.0, metadata=_range(0.0, 100.0))  # fed to the dev transformer
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto: bf16 on GPUs, no on the CPU


@dataclass(frozen=True)
class TrainMemoryConfig:
    gradient_checkpointing: bool = True
    fp8_base: bool = False  # store the frozen transformer weights in float8 (computed in model.dtype)
    cache_dir: str | None = None  # latents and text embeddings (default: <output.dir>/cache)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = field(default=250, metadata=_range(1, 10**7))
    keep: int = field(default=3, metadata=_range(1, 1000))


@dataclass(frozen=True)
class SamplesConfig:
    every: int = field(default=250, metadata=_range(0, 10**7))  # 0: no previews
    at_start: bool = True  # also render before the first step (the baseline)
    prompts: list[str] = field(default_factory=lambda: ["photo of [trigger]", "photo of a mountain lake"])
    seeds: list[int] = field(default_factory=lambda: [42])
    steps: int | None = field(default=None, metadata=_range(1, 1000))  # default: the model's preset
    guidance: float | None = field(default=None, metadata=_range(0.0, 100.0))
    width: int | None = field(default=None, metadata=_range(16, 8192))  # default: the first resolution
    height: int | None = field(default=None, metadata=_range(16, 8192))


@dataclass(frozen=True)
class TrainOutputConfig:
    dir: str = "runs/lora"
    name: str = "lora"  # the LoRA file is <dir>/<name>.safetensors
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    kohya: bool = False  # also write <name>.kohya.safetensors (ComfyUI/Forge keys with .alpha)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    lora: TrainLoraConfig = field(default_factory=TrainLoraConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    memory: TrainMemoryConfig = field(default_factory=TrainMemoryConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    output: TrainOutputConfig = field(default_factory=TrainOutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


class TrainLayers(Layers):
    root = TrainConfig
    path_keys = ("model.base", "dataset.folder", "dataset.regularization_folder", "output.dir", "memory.cache_dir")
    schema_note = SCHEMA_NOTE
    file_kind = "training config"


def load_train_config(path: str | os.PathLike | None = None, *, sets: list[str] | None = None,
                      data: dict | None = None) -> TrainConfig:
    """The training config from a TOML file (and/or a dict) plus ``--set KEY=VALUE`` overrides, checked."""
    layers = TrainLayers()
    if path is not None:
        layers.add_file(path)
    if data is not None:
        layers.add_dict(data)
    for option in sets or []:
        key, value = parse_set_option(option)
        layers.set(key, value, origin=f"--set {option}")
    config = layers.build()
    check_train_config(config, origin=str(path) if path is not None else "config")
    return config


def replace_train(config: TrainConfig, **dotted: Any) -> TrainConfig:
    """A copy with dotted keys changed (``replace_train(c, **{"training.steps": 9})``), checked."""
    layers = TrainLayers()
    layers.add_dict(config.to_dict(), origin="config")
    for key, value in dotted.items():
        layers.set(key, value, origin=f"override {key}")
    result = layers.build()
    check_train_config(result, origin="config")
    return result


def check_train_config(c: TrainConfig, origin: str = "config") -> None:
    """Rules across keys; every message names the key and the fix."""
    if not c.dataset.folder:
        raise ConfigError(f"{origin}: dataset.folder is not set; name the folder of training images")
    if not c.dataset.trigger.strip():
        raise DatasetError(f"{origin}: dataset.trigger is empty; set the word that calls up the subject, "
                           "e.g. trigger = \"anna_zx\" (a rare token, not a common word)")
    if TRIGGER in c.dataset.trigger or any(ch in c.dataset.trigger for ch in "[]"):
        raise ConfigError(f"{origin}: dataset.trigger {c.dataset.trigger!r} must be the word itself, without brackets")
    if not c.dataset.resolutions:
        raise ConfigError(f"{origin}: dataset.resolutions is empty; give at least one size, e.g. [512]")
    for r in c.dataset.resolutions:
        if r < 16 or r % 16:
            raise ConfigError(f"{origin}: dataset.resolutions has {r}, which is not a multiple of 16 "
                              "(FLUX packs 2x2 patches of the 8x latent); use e.g. 512, 768 or 1024")
    if (c.training.steps is None) == (c.training.epochs is None):
        raise ConfigError(f"{origin}: set exactly one of training.steps and training.epochs")
    if len(c.optimizer.betas) != 2 or not all(0.0 <= b < 1.0 for b in c.optimizer.betas):
        raise ConfigError(f"{origin}: optimizer.betas must be two numbers in [0, 1), got {c.optimizer.betas!r}")
    if c.optimizer.warmup_steps and c.optimizer.scheduler == "constant":
        raise ConfigError(f"{origin}: optimizer.warmup_steps needs a schedule with warm-up; "
                          "use optimizer.scheduler = \"constant_with_warmup\" (or linear/cosine)")
    if not c.lora.targets:
        raise ConfigError(f"{origin}: lora.targets is empty; list module names such as \"attn.to_q\"")
    for key in ("double_blocks", "single_blocks"):
        blocks = getattr(c.lora, key)
        if blocks is not None and any(b < 0 for b in blocks):
            raise ConfigError(f"{origin}: lora.{key} must hold block indices (0, 1, ...), got {blocks!r}")
    if c.samples.every:
        if not c.samples.prompts or not c.samples.seeds:
            raise ConfigError(f"{origin}: samples.prompts and samples.seeds must not be empty when samples.every > 0")
        with_trigger = [p for p in c.samples.prompts if TRIGGER in p or c.dataset.trigger in p]
        if not with_trigger or len(with_trigger) == len(c.samples.prompts):
            raise ConfigError(f"{origin}: samples.prompts needs at least one prompt with [trigger] and one without "
                              "(the control that shows what the LoRA does to unrelated prompts)")
    for key in ("width", "height"):
        value = getattr(c.samples, key)
        if value is not None and value % 16:
            raise ConfigError(f"{origin}: samples.{key} must be a multiple of 16, got {value}")
    if not c.output.name or any(ch in c.output.name for ch in "/\\") or c.output.name.startswith("."):
        raise ConfigError(f"{origin}: output.name {c.output.name!r} must be a plain file name without folders")


def fill_trigger(text: str, trigger: str) -> str:
    return text.replace(TRIGGER, trigger)
