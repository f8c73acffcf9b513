"""Typed, strict render configuration: TOML file -> frozen dataclasses -> the code that acts on it.

Layers, lowest first: preset defaults < config file < CLI flags < ``--set KEY=VALUE``.
Presets are applied last (``with_preset``) but only fill values that no layer set, which is
why the sampling fields that presets own are ``None`` until then.

Every problem is a ``ConfigError`` naming the dotted key and where it came from (the file, a
flag, or ``--set``). Unknown keys are errors: a typo must never be silently ignored.
Paths inside a config file are relative to that file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .families import catalog

SCHEMA_NOTE = "see configs/schnell.toml for every key"


def _range(lo=None, hi=None, *, lo_open=False):
    return {"min": lo, "max": hi, "min_open": lo_open}


@dataclass(frozen=True)
class ModelConfig:
    # hub id, local diffusers folder, single-file .safetensors/.gguf transformer, or "tiny"/"tiny-dev"
    source: str = "black-forest-labs/FLUX.1-schnell"
    # which defaults to use: "auto" detects them from the model itself; else a family's preset name
    # (FLUX.1: schnell, dev, fill, kontext — a single-file Kontext transformer has the dev shape: set
    # "kontext" for it). Checked against the registered families when the run is planned.
    preset: str = "auto"
    # where the VAE, text encoders and tokenizers come from when source is a single file
    base: str | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    revision: str | None = None  # hub revision (branch, tag or commit)
    # a FLUX.1 Redux prior (diffusers folder: image_encoder, feature_extractor, image_embedder) for input.redux
    redux: str | None = None
    # a Depth Anything model (transformers folder or hub id already in the HF cache) for control_kind = "depth"
    depth: str | None = None


@dataclass(frozen=True)
class SamplingConfig:
    steps: int | None = field(default=None, metadata=_range(1, 1000))
    guidance: float | None = field(default=None, metadata=_range(0.0, 100.0))  # distilled guidance (dev)
    true_cfg: float = field(default=1.0, metadata=_range(1.0, 100.0))  # > 1 with a negative prompt: real CFG
    max_sequence_length: int | None = field(default=None, metadata=_range(1, 512))
    seed: int | None = field(default=None, metadata=_range(0, 2**63 - 1))
    count: int = field(default=1, metadata=_range(1, 100000))
    # images per forward pass; > 1 is faster but may differ by one level of 255 from single renders
    batch_size: int = field(default=1, metadata=_range(1, 64))


@dataclass(frozen=True)
class SizeConfig:
    width: int | None = field(default=None, metadata=_range(16, 8192))
    height: int | None = field(default=None, metadata=_range(16, 8192))
    megapixels: float | None = field(default=None, metadata=_range(0.0, 16.0, lo_open=True))
    aspect: str | None = None  # "W:H", e.g. "3:4" or "16:9"


@dataclass(frozen=True)
class PromptConfig:
    subject: str | list[str] | None = None
    styling: str | list[str] | None = None
    lens: str | list[str] | None = None
    lighting: str | list[str] | None = None
    composition: str | list[str] | None = None
    background: str | list[str] | None = None
    quality: str | list[str] | None = None
    negative: str | None = None  # used when sampling.true_cfg > 1
    clip: str | None = None  # text for CLIP only (default: the joined template)
    t5: str | None = None  # text for T5 only (default: the joined template)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "renders"
    sidecar: bool = True  # also write <image>.json next to each PNG
    label: bool = True  # XMP AI-generation label (IPTC DigitalSourceType) in every PNG; see docs/provenance.md
    content_credentials: bool = False  # sign each PNG with C2PA Content Credentials (needs localflux[c2pa])
    c2pa_cert: str | None = None  # PEM certificate chain for signing (default: a local CA in the user data folder)
    c2pa_key: str | None = None  # PEM private key matching c2pa_cert


@dataclass(frozen=True)
class MemoryConfig:
    # none: all on the GPU | model: one component at a time | group: transformer/T5 blocks streamed
    # (CUDA streams prefetch the next) | sequential: every layer streamed | resident: the transformer
    # stays on the GPU, text encoders and VAE move there only while they run
    offload: Literal["none", "model", "group", "sequential", "resident"] = "none"
    vae_tiling: Literal["auto", "on", "off"] = "auto"
    # "auto": pick the fastest plan that fits free memory (localflux/memory/plan.py); "manual": these keys
    plan: Literal["manual", "auto"] = "manual"
    # transformer weights: full (model.dtype), fp8-storage (fp8 stored, bf16 compute), fp8 (torchao
    # float8 compute, GPU), nf4 (bitsandbytes, CUDA). A .gguf model.source brings its own format.
    transformer: Literal["full", "fp8-storage", "fp8", "nf4"] = "full"
    t5: Literal["full", "fp8-storage"] = "full"  # T5 encoder weights, independent of the transformer
    t5_device: Literal["auto", "cpu"] = "auto"  # cpu: encode prompts on the CPU, nothing of T5 on the GPU
    cache_t5: bool = False  # reuse prompt embeddings across renders of the same prompt in this process
    allow_lossy: bool = True  # plan = "auto" may pick fp8/nf4 when no lossless plan fits without streaming
    group_blocks: int = field(default=1, metadata=_range(1, 64))  # blocks per group for offload = "group"
    headroom_gb: float = field(default=1.5, metadata=_range(0.0, 64.0))  # auto plan safety margin (GiB)


@dataclass(frozen=True)
class SpeedConfig:
    # lossless fast path (localflux/speed.py): no quantization, no step caching
    compile: Literal["off", "blocks"] = "off"  # blocks: torch.compile each repeated transformer block
    compile_backend: Literal["inductor", "eager", "aot_eager"] = "inductor"  # eager/aot_eager: debugging, tests
    attention: Literal["auto", "native", "flash", "efficient", "cudnn", "math"] = "auto"  # PyTorch SDPA backends
    channels_last_vae: bool = False
    fuse_qkv: bool = False  # skipped while unmerged LoRA adapters are loaded (fusion would bypass them)
    lora_hotswap_rank: int = field(default=0, metadata=_range(0, 1024))  # > 0: swap LoRAs up to this rank without recompiling


@dataclass(frozen=True)
class UpscaleConfig:
    enabled: bool = False
    model: str = "realesrgan-x4plus"
    scale: float = field(default=2.0, metadata=_range(1.0, 8.0, lo_open=True))
    tile: int | None = field(default=None, metadata=_range(16, 4096))
    keep_original: bool = False  # also save the image before upscaling
    # an alpha channel: through the network as grey (Real-ESRGAN's default) or Lanczos-resized
    alpha: Literal["model", "resize"] = "model"
    # after Real-ESRGAN: a tiled FLUX img2img pass at this strength (0 = off; docs/upscale.md)
    detail: float = field(default=0.0, metadata=_range(0.0, 0.6))
    detail_model: str | None = None  # the FLUX model of the detail pass (default: the render's own model)
    detail_steps: int | None = field(default=None, metadata=_range(1, 1000))  # default: the model's preset
    detail_tile: int = field(default=1024, metadata=_range(64, 4096))  # tile side in pixels (~1 MP at 1024)
    detail_overlap: int = field(default=128, metadata=_range(0, 1024))  # pixels shared by neighbouring tiles


@dataclass(frozen=True)
class LoraConfig:
    """One ``[[lora]]`` entry: a LoRA file applied with an exact scale (negative allowed)."""

    path: str  # .safetensors (or .pt/.ckpt, read with torch.load(weights_only=True)); relative to the config file
    scale: float = field(default=1.0, metadata=_range(-100.0, 100.0))
    name: str | None = None  # shown in reports and recipes (default: the file name)
    strict: bool = True  # false: allow a LoRA of which only part applies (the recipe says so)


@dataclass(frozen=True)
class LoraOptionsConfig:
    # auto: merge into the weights when scales are fixed for the run, separate adapters when they vary
    # (sweeps) or when the base is compiled, quantized or fp8-stored; fused / unfused force one
    fuse: Literal["auto", "fused", "unfused"] = "auto"


@dataclass(frozen=True)
class ImageInput:
    """One input image: a path (relative to the config file) or an inline table with notes for the recipe."""

    path: str | None = None  # None only for a PIL image given through the Python API
    source: str | None = None  # where the picture comes from (recorded, not read)
    license: str | None = None  # its license (recorded, not read)
    pixels: Any = field(default=None, repr=False, compare=False)  # a PIL image (Python API only; never in TOML)


@dataclass(frozen=True)
class InputConfig:
    """``[input]``: images a render is conditioned on (localflux/tasks/; docs/images.md)."""

    image: ImageInput | None = None  # img2img / inpaint / Fill: the picture to start from
    mask: ImageInput | None = None  # white = repaint (inpaint, Fill)
    # how far from the image: 0 keeps it, 1 repaints all; unset = the pipeline's default (0.6; Fill 1.0)
    strength: float | None = field(default=None, metadata=_range(0.0, 1.0, lo_open=True))
    outpaint: list[int] | None = None  # [left, top, right, bottom] pixels added around input.image
    references: list[ImageInput] = field(default_factory=list)  # Kontext: stitched side by side
    paste_back: bool = False  # inpaint: original pixels back outside the mask after decoding (feathered)
    control: ImageInput | None = None  # FLUX.1 Depth/Canny model or control LoRA: the control picture
    # map: a ready depth/edge map | canny: edges computed from a photo (OpenCV) | depth: Depth Anything
    control_kind: Literal["map", "canny", "depth"] = "map"
    canny_low: int = field(default=50, metadata=_range(0, 1000))  # BFL's Canny thresholds
    canny_high: int = field(default=200, metadata=_range(0, 1000))
    redux: list[ImageInput] = field(default_factory=list)  # FLUX.1 Redux: images whose embeddings are summed
    redux_scale: float = field(default=1.0, metadata=_range(0.0, 10.0))  # prompt_embeds_scale and pooled scale


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    size: SizeConfig = field(default_factory=SizeConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    upscale: UpscaleConfig = field(default_factory=UpscaleConfig)
    lora: list[LoraConfig] = field(default_factory=list)  # [[lora]] entries, applied in order
    lora_options: LoraOptionsConfig = field(default_factory=LoraOptionsConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    input: InputConfig = field(default_factory=InputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading and layering


def read_toml(path: str | os.PathLike, kind: str = "config file") -> dict:
    """A TOML file's table; ``kind`` names the file in errors ("config file", "job file", ...)."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ConfigError(f"{kind} {str(path)!r} is a folder; pass an existing .toml file")
        where = "" if path.is_absolute() else f" (looked for {path.absolute()}: relative paths start in the current folder)"
        raise ConfigError(f"{kind} {str(path)!r} does not exist{where}; pass an existing .toml file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{kind} {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{kind} {str(path)!r} is not valid TOML ({exc}); fix the syntax") from None


def parse_set_value(text: str) -> Any:
    """A ``--set`` value is read as a TOML value (``8``, ``3.5``, ``true``, ``["a","b"]``), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set_option(option: str) -> tuple[str, Any]:
    key, sep, value = option.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {option!r} must look like KEY=VALUE, e.g. --set sampling.steps=8")
    return key.strip(), parse_set_value(value.strip())


class Layers:
    """Collects raw values with where each came from, then builds one validated ``Config``.

    Another strict config (the training config) subclasses this and sets ``root`` (its top
    dataclass), ``path_keys`` (keys holding paths relative to the file) and ``schema_note``.
    """

    root: type = None  # None: Config (defined above; a class attribute cannot name it before)
    path_keys: tuple[str, ...] | None = None  # None: _PATH_KEYS
    schema_note: str = SCHEMA_NOTE
    file_kind: str = "config file"  # how errors name the file

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def add_file(self, path: str | os.PathLike) -> None:
        path = Path(path)
        data = read_toml(path, self.file_kind)
        base_dir = path.resolve().parent
        for key, value in _flatten(data, origin=str(path), root=self.root, note=self.schema_note):
            self.set(key, _resolve_path_value(key, value, base_dir, self.path_keys), origin=str(path))

    def add_dict(self, data: dict, origin: str = "config dict", base_dir: Path | None = None) -> None:
        """Like ``add_file`` for data already read; with ``base_dir``, relative paths are resolved against it."""
        for key, value in _flatten(data, origin=origin, root=self.root, note=self.schema_note):
            if base_dir is not None:
                value = _resolve_path_value(key, value, base_dir, self.path_keys)
            self.set(key, value, origin=origin)

    def set(self, key: str, value: Any, origin: str) -> None:
        item = _ITEM_KEY.match(key)
        if item is not None:  # "lora[0].scale": one field of one [[lora]] entry
            key, value = self._item_update(item[1], int(item[2]), item[3], value, origin)
        _check_known_key(key, origin, root=self.root, note=self.schema_note)
        self.values[key] = value
        self.origins[key] = origin

    def _item_update(self, name: str, index: int, field_name: str, value: Any, origin: str) -> tuple[str, list]:
        hint = _type_hints(self.root or Config).get(name)
        if hint is None or _list_item_class(hint) is None:
            raise ConfigError(f"{origin}: {name!r} is not an array of tables; only entries such as lora[0].scale "
                              "can be addressed by index")
        items = self.values.get(name) or []
        if index >= len(items):
            raise ConfigError(f"{origin}: there are only {len(items)} [[{name}]] entr{'y' if len(items) == 1 else 'ies'}, "
                              f"so {name}[{index}] does not exist (indices start at 0)")
        items = [dict(entry) for entry in items]
        items[index][field_name] = value
        return name, items

    def build(self):
        return _build_dataclass(self.root or Config, self.values, self.origins, prefix="")


def load_config(
    path: str | os.PathLike | None = None,
    *,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Config from an optional TOML file, flag values (dotted keys) and ``--set`` strings."""
    layers = Layers()
    if path is not None:
        layers.add_file(path)
    for key, value in (flags or {}).items():
        if value is not None:
            layers.set(key, value, origin=f"--{key.split('.')[-1].replace('_', '-')}")
    for option in sets or []:
        key, value = parse_set_option(option)
        layers.set(key, value, origin=f"--set {option}")
    return layers.build()


def config_from_dict(data: dict, origin: str = "config dict") -> Config:
    layers = Layers()
    layers.add_dict(data, origin=origin)
    return layers.build()


def with_preset(config: Config, preset) -> Config:
    """Fill the sampling values no layer set from ``preset`` (a ``presets.Preset``) and record its name."""
    sampling = config.sampling
    sampling = dataclasses.replace(
        sampling,
        steps=preset.steps if sampling.steps is None else sampling.steps,
        guidance=preset.guidance if sampling.guidance is None else sampling.guidance,
        max_sequence_length=(
            preset.max_sequence_length if sampling.max_sequence_length is None else sampling.max_sequence_length
        ),
    )
    model = dataclasses.replace(config.model, preset=preset.name)
    return dataclasses.replace(config, sampling=sampling, model=model)


def replace(config: Config, **dotted: Any) -> Config:
    """A copy of ``config`` with dotted keys changed (``replace(c, **{"sampling.seed": 3})``), validated."""
    layers = Layers()
    layers.add_dict(config.to_dict(), origin="config")
    for key, value in dotted.items():
        layers.set(key, value, origin=f"override {key}")
    return layers.build()


# ---------------------------------------------------------------- validation


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> dict:
    # resolving string annotations is slow, and configs are rebuilt several times per render
    return typing.get_type_hints(cls)


def _flatten(data: dict, origin: str, prefix: str = "", root=None, note: str = SCHEMA_NOTE):
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and _is_value_table(dotted, root):
            _check_known_key(dotted, origin, root=root, note=note)
            yield dotted, value
        elif isinstance(value, dict):
            _check_known_key(dotted, origin, section=True, root=root, note=note)
            yield from _flatten(value, origin, prefix=dotted + ".", root=root, note=note)
        else:
            yield dotted, value


def _value_class(hint):
    """The dataclass a single config value may be written as (an inline table such as ``ImageInput``), else None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if typing.get_origin(option) is list:
            option = typing.get_args(option)[0]
        if dataclasses.is_dataclass(option):
            return option
    return None


def _is_value_table(dotted: str, root=None) -> bool:
    """``input.image = {path = "…"}``: an inline table that is one value, not a section."""
    parts = dotted.split(".")
    if len(parts) != 2:
        return False
    section = _type_hints(root or Config).get(parts[0])
    if not dataclasses.is_dataclass(section):
        return False
    hint = _type_hints(section).get(parts[1])
    return hint is not None and _value_class(hint) is not None


def _check_known_key(dotted: str, origin: str, section: bool = False, root=None, note: str = SCHEMA_NOTE) -> None:
    parts = dotted.split(".")
    hints = _type_hints(root or Config)
    if parts[0] not in hints:
        raise ConfigError(f"{origin}: {parts[0]!r} is not a config section (known: {', '.join(hints)}); {note}")
    if _list_item_class(hints[parts[0]]) is not None:
        if len(parts) > 1:  # arrays of tables ([[lora]]) are set whole; their items are checked when built
            raise ConfigError(f"{origin}: {dotted!r} cannot be set on its own; [[{parts[0]}]] entries are set whole")
        return
    if len(parts) == 1:
        if not section:
            raise ConfigError(f"{origin}: {dotted!r} is a section, not a value; set one of its keys, e.g. {dotted}.KEY=VALUE")
        return
    cls = hints[parts[0]]
    names = [f.name for f in dataclasses.fields(cls)]
    if len(parts) > 2 or parts[1] not in names:
        raise ConfigError(f"{origin}: {dotted!r} is not a known key (known in [{parts[0]}]: {', '.join(names)})")


def _list_item_class(hint):
    """The dataclass of a ``list[SomeDataclass]`` field (an array of tables), else None."""
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if dataclasses.is_dataclass(item):
            return item
    return None


def _build_dataclass(cls, values: dict[str, Any], origins: dict[str, str], prefix: str):
    hints = _type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        hint = hints[f.name]
        item_class = _list_item_class(hint) if not prefix else None  # arrays of tables are top-level only
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build_dataclass(hint, values, origins, prefix=dotted + ".")
        elif item_class is not None and dotted in values:
            kwargs[f.name] = _build_items(item_class, values[dotted], dotted, origins.get(dotted, "config"))
        elif dotted in values:
            origin = origins.get(dotted, "config")
            kwargs[f.name] = _coerce(values[dotted], hint, dotted, origin)
            _check_range(kwargs[f.name], f.metadata, dotted, origin)
    return cls(**kwargs)


def _build_items(item_class, items: Any, dotted: str, origin: str) -> list:
    """An array of tables such as [[lora]]: each entry strict like a section, named ``lora[2].scale``."""
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{origin}: {dotted} must be an array of tables ([[{dotted}]] entries), got {items!r}")
    built = []
    names = [f.name for f in dataclasses.fields(item_class)]
    for index, item in enumerate(items):
        label = f"{dotted}[{index}]"
        for key in item:
            if key not in names:
                raise ConfigError(f"{origin}: {label}.{key} is not a known key (known in [[{dotted}]]: {', '.join(names)})")
        flat = {f"{label}.{key}": value for key, value in item.items()}
        missing = [f.name for f in dataclasses.fields(item_class)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in item]
        if missing:
            raise ConfigError(f"{origin}: {label} needs {', '.join(missing)}")
        built.append(_build_dataclass(item_class, flat, {k: origin for k in flat}, prefix=label + "."))
    return built


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if dataclasses.is_dataclass(hint):
        return "a path or an inline table { path = \"…\" }"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _coerce(value: Any, hint, dotted: str, origin: str):
    def fail():
        raise ConfigError(f"{origin}: {dotted} must be {_type_name(hint)}, got {value!r}")

    kind = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _coerce_value_table(value, hint, dotted, origin)
    if kind in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _coerce_value_table(value, option, dotted, origin)  # its own, more precise message
            try:
                return _coerce(value, option, dotted, origin)
            except ConfigError:
                continue
        fail()
    if kind is Literal:
        if value in typing.get_args(hint):
            return value
        fail()
    if kind is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list) and item_type is ImageInput and (isinstance(value, (str, dict)) or _is_pil(value)):
            value = [value]  # one image where a list of them goes: input.references = "anna.png", --vary input.references=a.png,b.png
        if not isinstance(value, list):
            fail()
        return [_coerce(item, item_type, dotted, origin) for item in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        fail()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                fail()
            return float(value)
        fail()
    if hint is str:
        if isinstance(value, str):
            return value
        fail()
    raise TypeError(f"unsupported config type {hint!r} for {dotted}")  # a bug in this module


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getbands")


def _coerce_value_table(value: Any, cls, dotted: str, origin: str):
    """A path string, an inline table of ``cls``'s keys (strict), or (Python API) a PIL image."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{origin}: {dotted} is empty; give a path to an image file")
        return cls(path=value)
    if _is_pil(value):
        return cls(pixels=value)
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: {dotted} must be a path or an inline table {{ path = \"…\", source = \"…\", "
                          f"license = \"…\" }}, got {value!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "pixels"]
    pixels = value.get("pixels")
    if pixels is not None and not _is_pil(pixels):
        raise ConfigError(f"{origin}: {dotted}.pixels is not a known key (known in {dotted}: {', '.join(names)})")
    for key in value:
        if key not in names and key != "pixels":
            raise ConfigError(f"{origin}: {dotted}.{key} is not a known key (known in {dotted}: {', '.join(names)})")
    if not value.get("path") and pixels is None:
        raise ConfigError(f"{origin}: {dotted} needs path = \"…\" (an image file)")
    kwargs = {"pixels": pixels}
    for key, item in value.items():
        if key == "pixels":
            continue
        if item is not None and not isinstance(item, str):
            raise ConfigError(f"{origin}: {dotted}.{key} must be a string, got {item!r}")
        kwargs[key] = item
    return cls(**kwargs)


def _check_range(value: Any, metadata, dotted: str, origin: str) -> None:
    if value is None or not metadata:
        return
    lo, hi = metadata.get("min"), metadata.get("max")
    if lo is not None and (value < lo or (metadata.get("min_open") and value == lo)):
        bound = f"greater than {lo}" if metadata.get("min_open") else f"at least {lo}"
        raise ConfigError(f"{origin}: {dotted} must be {bound}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{origin}: {dotted} must be at most {hi}, got {value!r}")


# ---------------------------------------------------------------- paths

_ITEM_KEY = re.compile(r"^(\w+)\[(\d+)\]\.(\w+)$")
_PATH_KEYS = ("model.base", "output.dir", "upscale.model", "model.redux", "model.depth", "upscale.detail_model",
              "output.c2pa_cert", "output.c2pa_key")
_IMAGE_KEYS = ("input.image", "input.mask", "input.references", "input.control", "input.redux")  # relative to the config file
_HUB_KEYS = ("model.base", "model.redux", "model.depth", "upscale.detail_model")  # may also be hub ids
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".sft", ".ckpt", ".pt", ".pth")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.endswith(_WEIGHT_SUFFIXES)


def _resolve_path_value(key: str, value: Any, base_dir: Path, path_keys: tuple[str, ...] | None = None) -> Any:
    """Make a config file's relative paths relative to the file; hub ids and names stay as written."""
    path_keys = _PATH_KEYS if path_keys is None else path_keys
    if key == "lora" and isinstance(value, list):  # [[lora]] paths are relative to the config file too
        return [dict(item, path=str((base_dir / Path(item["path"]).expanduser()).resolve()))
                if isinstance(item, dict) and isinstance(item.get("path"), str) and item["path"] else item
                for item in value]
    if key in _IMAGE_KEYS:
        return _resolve_image_value(value, base_dir)
    if not isinstance(value, str) or not value:
        return value
    if key == "model.source":

        candidate = base_dir / value
        if value in catalog.builtin_names() or Path(value).is_absolute():
            return value
        if candidate.exists() or not looks_like_hub_id(value) or value.startswith("."):
            return str(candidate.resolve())
        return value
    if key == "upscale.model" and "/" not in value and not value.endswith(_WEIGHT_SUFFIXES):
        return value  # an installed upscaler's name
    if key == "upscale.detail_model":

        if value in catalog.builtin_names():
            return value
    if key in path_keys and not Path(value).is_absolute():
        if key in _HUB_KEYS and looks_like_hub_id(value) and not (base_dir / value).exists():
            return value
        return str((base_dir / value).resolve())
    return value


def _resolve_image_value(value: Any, base_dir: Path) -> Any:
    """``input.*`` images: a path, an inline table with ``path``, or a list of either (references)."""
    if isinstance(value, list):
        return [_resolve_image_value(item, base_dir) for item in value]
    if isinstance(value, str) and value:
        return str((base_dir / Path(value).expanduser()).resolve())
    if isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"]:
        return dict(value, path=str((base_dir / Path(value["path"]).expanduser()).resolve()))
    return value
