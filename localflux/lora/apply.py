"""Apply LoRAs to a loaded pipeline, verify that every tensor landed, and keep the cached pipeline clean.

Loading is diffusers' own ``load_lora_weights`` (its converters handle kohya, ComfyUI, XLabs, ...).
What diffusers does not do is tell whether a file actually applied: unknown keys are dropped with a
log line, T5 parts are filtered, a LoRA for another base may even widen the model's layers. So for
each file localflux

1. refuses adapter kinds diffusers would half-load (DoRA, LoKr, ...), see ``files.refuse_unsupported``;
2. runs diffusers' converter and checks every converted tensor against the layer it targets
   (a mismatch means "a LoRA for another base model": refused before the model is touched);
3. traces which of the file's own tensors end up in which converted tensor, by running the same
   converter on a copy whose tensors are filled with their index (alphas set to the rank, so the
   converter's alpha scaling is 1 and the indices survive exactly);
4. after loading, reads the adapter weights back from the model and counts, in the file's own
   terms, how many LoRA tensors, alphas and text-encoder tensors were applied.

Anything short of all → ``LoraError`` (unless the entry says ``strict = false``; the recipe then
records the partial application).

What is loaded is ``convert``'s dict (diffusers' converter plus ``layouts.py``), never the file itself.

Text-encoder parts: CLIP (``lora_te1_*``, ``text_encoders.clip_l.*``, ``text_encoder.*``) LoRA tensors are
applied to the CLIP text encoder and counted. T5 parts are not supported by diffusers; they count as
not applied, so a strict LoRA with T5 tensors is refused with a message naming them.

Cache hygiene: the loader keeps one pipeline per process. Unfused adapters are removed with
``unload_lora_weights`` (the base weights were never touched). Fused LoRAs changed the base weights;
un-fusing would only restore them up to rounding (in bf16, visibly), so a pipeline with fused LoRAs is
dropped from the cache and loaded again when a later render wants other LoRAs or none.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoraError
from .files import (LoraFile, detect_format, is_alpha_key, is_text_encoder_key, is_weight_key, module_of, read_lora,
                    refuse_unsupported)
from .layouts import is_t5_key

log = logging.getLogger(__name__)

FUSED, UNFUSED = "fused", "unfused"
_COMPONENTS = ("transformer", "text_encoder")
_QKV_TARGETS = re.compile(r"\.attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj)$")
_LOW_PRECISION = ("float8_e4m3fn", "float8_e5m2", "int8", "uint8")


@dataclass
class AppliedLora:
    """One LoRA as applied: what the report prints and the recipe records."""

    path: str
    name: str
    adapter: str
    sha256: str
    format: str
    scale: float
    strict: bool
    lora_tensors: int  # LoRA weight tensors in the file (down/up, A/B)
    applied: int  # of those, applied to the model
    alphas: int
    alphas_applied: int
    text_encoder: int  # text-encoder LoRA tensors in the file (counted in lora_tensors too)
    text_encoder_applied: int
    other: int = 0  # tensors that are neither LoRA weights nor alphas (all ignored)
    not_applied: list[str] = field(default_factory=list)  # the file's keys that did not apply (first few)
    targets: set = field(default_factory=set)  # model modules the LoRA changes

    @property
    def complete(self) -> bool:
        return self.applied == self.lora_tensors and self.alphas_applied == self.alphas and not self.not_applied

    def summary(self) -> str:
        text = (f"{self.applied} of {self.lora_tensors} LoRA tensors applied; {self.alphas_applied} alphas; "
                f"{self.text_encoder_applied} text-encoder tensors")
        if not self.complete:
            text += f" (PARTIAL: {len(self.not_applied)} tensors ignored, e.g. {self.not_applied[0]!r})"
        return text

    def record(self, fuse: str) -> dict:
        return {
            "path": self.path, "name": self.name, "sha256": self.sha256, "format": self.format,
            "scale": self.scale, "fuse": fuse, "strict": self.strict, "partial": not self.complete,
            "applied": {"lora_tensors": self.lora_tensors, "applied": self.applied, "alphas": self.alphas,
                        "alphas_applied": self.alphas_applied, "text_encoder": self.text_encoder,
                        "text_encoder_applied": self.text_encoder_applied, "other": self.other,
                        "not_applied": self.not_applied[:20]},
        }


@dataclass
class LoraState:
    """The LoRAs currently in a cached pipeline."""

    key: tuple  # (path, sha256, strict) per LoRA, in order
    mode: str
    scales: tuple
    loras: list[AppliedLora]

    def records(self) -> list[dict]:
        return [lora.record(self.mode) for lora in self.loras]


# ---------------------------------------------------------------- the stage


def apply_loras(model, entries, fuse: str = "auto", *, reload=None):
    """Make ``model.pipe`` carry exactly ``entries`` (``LoraConfig`` items) and return the model to render with.

    ``reload()`` must return a freshly loaded model; it is called when fused LoRAs have to be removed.
    The returned model's ``lora_state`` says what was applied (``None`` when no LoRA is active).
    """
    from ..hashing import sha256_file

    entries = list(entries)
    state = getattr(model, "lora_state", None)
    for entry in entries:
        if not Path(entry.path).expanduser().is_file():
            read_lora(entry.path)  # raises the clear "does not exist" error
    key = tuple((str(Path(e.path).expanduser().resolve()), sha256_file(e.path), e.strict) for e in entries)
    scales = tuple(float(e.scale) for e in entries)
    mode = resolve_fuse_mode(fuse, model.pipe) if entries else None
    if state is not None and state.key == key and state.mode == mode:
        if mode == UNFUSED and state.scales != scales:
            _activate(model.pipe, state.loras, scales)
            state.scales = scales
        if state.scales == scales:
            for lora, scale in zip(state.loras, scales):
                lora.scale = scale
            return model
    hotswap = _can_hotswap(model, state, mode, len(entries))
    if state is not None and not hotswap:
        model = _remove(model, reload)
    if not entries:
        return model
    pipe = model.pipe
    loaded: list[AppliedLora] = []
    try:
        for index, (entry, (path, digest, _)) in enumerate(zip(entries, key)):
            loaded.append(load_one(pipe, entry, adapter=f"lora{index}", sha256=digest, hotswap=hotswap))
        _check_qkv_fusion(pipe, loaded, mode)
        _activate(pipe, loaded, scales)
    except BaseException:
        _unload(pipe)
        raise
    if mode == FUSED:
        try:
            _fuse(pipe, loaded)
        except BaseException:
            _discard(model)  # half-fused weights must never be reused
            raise
    model.lora_state = LoraState(key, mode, scales, loaded)
    return model


def resolve_fuse_mode(setting: str, pipe) -> str:
    """``auto``: merge unless the base is quantized, fp8-stored or compiled (then adapters run in bf16)."""
    reason = _unmergeable_reason(pipe.transformer)
    if setting == FUSED:
        if reason:
            raise LoraError(f"lora_options.fuse = 'fused' cannot merge LoRAs into this model: {reason}; "
                            "use fuse = 'unfused' (or 'auto') so adapters run at full precision")
        return FUSED
    if setting == UNFUSED:
        return UNFUSED
    if reason or _is_compiled(pipe.transformer):
        return UNFUSED
    return FUSED


def remove_loras(model, reload=None):
    """Model without any LoRA (unloads adapters; reloads a pipeline whose weights had LoRAs fused in)."""
    if getattr(model, "lora_state", None) is None:
        return model
    return _remove(model, reload)


# ---------------------------------------------------------------- one file


def _can_hotswap(model, state, mode: str | None, count: int) -> bool:
    """Swap new LoRA weights into the adapters a compiled model already has, so it does not recompile.

    diffusers' hotswap needs ``enable_lora_hotswap`` before the first LoRA (``speed.lora_hotswap_rank``),
    unfused adapters, and the same number of adapters; anything else takes the unload + load path.
    """
    speed = getattr(model, "speed", None) or {}
    return (state is not None and state.mode == UNFUSED and mode == UNFUSED and len(state.loras) == count
            and speed.get("compile", "off") != "off" and bool(speed.get("lora_hotswap_rank")))


def load_one(pipe, entry, adapter: str, sha256: str, hotswap: bool = False) -> AppliedLora:
    lora = read_lora(entry.path)
    refuse_unsupported(lora)
    name = entry.name or lora.path.name
    family = model_family(pipe, lora)
    converted = convert(lora, family=family)
    trace = trace_sources(lora, family=family)
    _check_fits(pipe, converted, lora)
    try:
        # the converted dict, not the file: it holds the fixes of layouts.py and every alpha folded in
        _load(pipe, _text_encoder_keys_diffusers_reads(converted), adapter, hotswap=hotswap)
    except LoraError as exc:
        te_keys = [k for k in lora.tensors if is_text_encoder_key(k)]
        if not te_keys:
            raise LoraError(f"LoRA {str(lora.path)!r} could not be applied ({exc}); is it a FLUX.1 LoRA?") from None
        if entry.strict:
            raise LoraError(f"the {len(te_keys)} text-encoder tensors of LoRA {str(lora.path)!r} (e.g. {te_keys[0]!r}) "
                            f"cannot be loaded by diffusers ({exc}); set strict = false in its [[lora]] entry "
                            "to apply only its transformer part") from None
        # strict = false: apply the transformer part; the text-encoder tensors count as not applied
        _load(pipe, {k: v for k, v in converted.items() if k.startswith("transformer.")}, adapter)
    applied = count_applied(pipe, adapter, lora, converted, trace)
    applied.name, applied.sha256, applied.scale, applied.strict = name, sha256, float(entry.scale), entry.strict
    if applied.applied == 0:
        _unload_adapter(pipe, adapter)
        raise LoraError(f"none of the {applied.lora_tensors} LoRA tensors in {str(lora.path)!r} apply to this model "
                        f"(format: {applied.format}); it is for another model or in a layout diffusers does not read")
    t5 = [k for k in applied.not_applied if is_t5_key(k)]
    if t5 and entry.strict:
        _unload_adapter(pipe, adapter)
        raise LoraError(f"LoRA {str(lora.path)!r} has {len(t5)} T5 text-encoder tensors (e.g. {t5[0]!r}), which "
                        "diffusers' FLUX loader cannot apply; set strict = false in its [[lora]] entry to apply "
                        "the rest without them")
    if not applied.complete and entry.strict:
        _unload_adapter(pipe, adapter)
        raise LoraError(f"only {applied.summary()} from {str(lora.path)!r}; it is for another model or partly "
                        "in a layout diffusers does not read. Set strict = false in its [[lora]] entry to use it anyway")
    if not applied.complete:
        log.warning("LoRA %s applied partially: %s", lora.path, applied.summary())
    return applied


def model_family(pipe, lora: LoraFile):
    """The pipe's model family; a LoRA whose keys name another family's modules is refused in one line."""
    from ..families import FAMILIES

    family = FAMILIES.of_pipeline(pipe)
    other = FAMILIES.of_lora_keys(list(lora.tensors))
    if family is not None and other is not None and other is not family:
        raise LoraError(f"LoRA {str(lora.path)!r} is a {other.label} LoRA but the model is {family.label}; "
                        f"use a LoRA trained for {family.label}")
    return family


def _text_encoder_keys_diffusers_reads(converted: dict) -> dict:
    """CLIP keys as ``lora_linear_layer.down/up``: diffusers 0.42 recognises PEFT ``lora_A/B`` CLIP keys only when a
    q/k/v/out projection is among them ("Could not automatically infer state dict type" for an MLP-only LoRA)."""
    out = {}
    for key, value in converted.items():
        if key.startswith("text_encoder."):
            key = key.replace(".lora_A.weight", ".lora_linear_layer.down.weight")
            key = key.replace(".lora_B.weight", ".lora_linear_layer.up.weight")
        out[key] = value
    return out


def _load(pipe, source, adapter: str, hotswap: bool = False) -> None:
    try:
        pipe.load_lora_weights(source, adapter_name=adapter, hotswap=hotswap)
    except (ValueError, KeyError, RuntimeError, AssertionError, TypeError) as exc:
        _unload_adapter(pipe, adapter)
        raise LoraError(_first_line(exc) or exc.__class__.__name__) from None


def convert(lora: LoraFile, tensors: dict | None = None, *, fold_metadata: bool = True, family=None) -> dict:
    """The LoRA in diffusers/PEFT keys (``component.module.lora_A/B.weight``), every alpha folded into lora_A.

    diffusers' own converter does the layouts it gets right; ``layouts`` does the rest (see there). The
    result carries no alphas and no metadata, so diffusers' loader applies it at exactly the strength the
    file means. T5 parts are left out (diffusers cannot load them; they count as not applied).
    """
    from . import layouts

    own_family = family.lora_to_diffusers(lora, tensors if tensors is not None else lora.tensors) if family else None
    if own_family is not None:  # a family with its own layouts (FLUX.2): its converter, then the metadata strength
        config = peft_metadata_config(lora.metadata) if fold_metadata else None
        return _fold_metadata_alphas(own_family, config) if config else own_family
    tensors = layouts.prepare(tensors if tensors is not None else lora.tensors)
    own, _t5, rest = layouts.split_own(tensors)  # T5 tensors stay out: nothing could load them
    state = {}
    # alphas diffusers still returns have no weights of their own (prepare() folded the rest): they count
    # as not applied. Keys already in diffusers names go through separately when kohya keys sit beside them
    # (a mixture file): diffusers' kohya converter keeps only the "transformer." keys of such a dict.
    for part in _by_naming(rest):
        converted = _diffusers_convert(lora, part)
        twice = converted.keys() & state.keys()
        if twice:  # the same layer under both namings: keep the diffusers-named copy, as diffusers does
            log.warning("LoRA %s holds %d tensors twice (diffusers and kohya names); the diffusers-named ones are used",
                        lora.path, len(twice))
        state.update({k: v for k, v in converted.items() if k not in twice})
    try:
        state.update(layouts.convert_own(own))
    except LoraError as exc:
        raise LoraError(f"LoRA {str(lora.path)!r} does not fit this model: {exc}") from None
    # diffusers 0.42's kohya converter names the non-block layers (img_in, txt_in, time_in, vector_in,
    # guidance_in, final_layer) without the "transformer." prefix, and load_lora_weights drops such keys
    state = {(k if k.partition(".")[0] in _COMPONENTS else "transformer." + k): v for k, v in state.items()}
    config = peft_metadata_config(lora.metadata) if fold_metadata else None
    if config:
        state = _fold_metadata_alphas(state, config)
    return state


def _by_naming(tensors: dict) -> list[dict]:
    """``tensors`` as one dict, or two when diffusers-named keys sit beside kohya/BFL ones."""
    named = {k: v for k, v in tensors.items() if k.partition(".")[0] in _COMPONENTS}
    others = {k: v for k, v in tensors.items() if k not in named}
    return [part for part in (named, others) if part] if named and others else [tensors] if tensors else []


def _diffusers_convert(lora: LoraFile, tensors: dict):
    from diffusers import FluxPipeline

    try:
        state, _alphas = FluxPipeline.lora_state_dict(dict(tensors), return_alphas=True)
    except AssertionError:
        # diffusers' converters assert FLUX.1's real layer sizes in a few places
        raise LoraError(f"LoRA {str(lora.path)!r} does not fit this model: its layer sizes are not FLUX.1's; "
                        "it was made for another base model") from None
    except (ValueError, KeyError, NotImplementedError, IndexError, RuntimeError) as exc:
        raise LoraError(f"LoRA {str(lora.path)!r} is not a FLUX.1 LoRA diffusers can read "
                        f"({_first_line(exc) or exc.__class__.__name__}); it is for another model") from None
    return state


def peft_metadata_config(metadata: dict) -> dict | None:
    """The PEFT LoraConfig that diffusers' ``save_lora_weights`` stores (``lora_adapter_metadata``), as diffusers reads it."""
    import json

    text = (metadata or {}).get("lora_adapter_metadata")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _fold_metadata_alphas(state: dict, config: dict) -> dict:
    """Fold the PEFT config's strength (lora_alpha / r, alpha and rank patterns, rsLoRA) into lora_A, as diffusers reads it."""
    from .kohya import peft_alphas
    from .layouts import fold_strength

    alphas = peft_alphas(state, None, config)
    out = dict(state)
    for module, alpha in alphas.items():
        fold_strength(out, module, alpha / state[f"{module}.lora_A.weight"].shape[0])
    return out


def trace_sources(lora: LoraFile, family=None) -> dict[str, frozenset[str]]:
    """For each converted key, the keys of the file whose values it was made from.

    Runs diffusers' converter on a stand-in: tensor *i* is filled with the number *i* (float32, exact up
    to 2**24) and every alpha is set to its rank, so alpha/rank = 1 and splits, copies and reorders keep
    the numbers. The converter's choices (which keys it keeps, splits or drops) are the real ones.
    """
    import torch

    ranks = {module_of(k): v.shape[0] for k, v in lora.tensors.items()
             if k.endswith((".lora_down.weight", ".lora_A.weight", ".down.weight")) and v.ndim >= 1}
    stand_in, names = {}, {}
    for index, (key, value) in enumerate(lora.tensors.items(), start=1):
        if is_alpha_key(key):
            stand_in[key] = torch.tensor(float(ranks.get(module_of(key), value.float().item())))
        elif value.is_floating_point():
            stand_in[key] = torch.full(tuple(value.shape), float(index), dtype=torch.float32)
            names[index] = key
        else:
            stand_in[key] = value
    converted = convert(lora, stand_in, fold_metadata=False, family=family)
    trace = {}
    for key, value in converted.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        ids = torch.unique(value.float()).tolist()
        trace[key] = frozenset(names[int(i)] for i in ids if float(i).is_integer() and int(i) in names)
    return trace


def count_applied(pipe, adapter: str, lora: LoraFile, converted: dict, trace: dict) -> AppliedLora:
    """Compare the adapter weights in the model with the converted tensors; count in the file's terms."""
    weight_keys = [k for k in lora.tensors if is_weight_key(k)]
    alpha_keys = [k for k in lora.tensors if is_alpha_key(k)]
    te_keys = [k for k in weight_keys if is_text_encoder_key(k)]
    other = [k for k in lora.tensors if k not in set(weight_keys) | set(alpha_keys)]
    applied_sources: set[str] = set()
    targets = set()
    for key, value in converted.items():
        landed = _landed(pipe, adapter, key, value)
        if landed:
            applied_sources |= trace.get(key, frozenset())
            targets.add(landed)
    applied_modules = {module_of(k) for k in applied_sources}
    alphas_applied = [k for k in alpha_keys if module_of(k) in applied_modules]
    not_applied = [k for k in weight_keys if k not in applied_sources]
    not_applied += [k for k in alpha_keys if k not in alphas_applied]
    not_applied += [k for k in other if _nonzero(lora.tensors[k])]  # all-zero extras change nothing
    return AppliedLora(
        path=str(lora.path), name=lora.path.name, adapter=adapter, sha256="", format=detect_format(lora),
        scale=1.0, strict=True, lora_tensors=len(weight_keys),
        applied=sum(1 for k in weight_keys if k in applied_sources),
        alphas=len(alpha_keys), alphas_applied=len(alphas_applied), text_encoder=len(te_keys),
        text_encoder_applied=sum(1 for k in te_keys if k in applied_sources), other=len(other),
        not_applied=not_applied, targets=targets,
    )


def _landed(pipe, adapter: str, key: str, value) -> str | None:
    """``component.module`` when the converted tensor ``key`` sits in the model's adapter with equal values."""
    import torch

    component_name, _, rest = key.partition(".")
    component = getattr(pipe, component_name, None) if component_name in _COMPONENTS else None
    if component is None:
        return None
    module_name = module_of(rest)
    module = _find_module(component, module_name)
    if module is None:
        return None
    side = "lora_A" if _is_down(rest) else "lora_B"
    layers = getattr(module, side, None)
    if layers is None or adapter not in layers:
        return None
    if rest.endswith(".bias"):  # PEFT lora_bias: lora_B's bias
        bias = layers[adapter].bias
        landed = bias is not None and torch.equal(bias.detach().cpu(), value.detach().to(bias.dtype).cpu())
        return f"{component_name}.{module_name}" if landed else None
    weight = layers[adapter].weight.detach().cpu()
    if value.ndim != 2:  # e.g. an alpha diffusers passed through: it landed nowhere
        return None
    value = value.detach().to(weight.dtype).cpu()
    rank_dim = 0 if side == "lora_A" else 1
    if weight.shape != value.shape:
        # diffusers' LoRA hotswap pads every adapter with zeros to one reserved rank
        other_dim = 1 - rank_dim
        if weight.ndim != 2 or weight.shape[other_dim] != value.shape[other_dim] or weight.shape[rank_dim] < value.shape[rank_dim]:
            return None
        rank = value.shape[rank_dim]
        used, padding = weight.split([rank, weight.shape[rank_dim] - rank], dim=rank_dim)
        if padding.any():
            return None
        weight = used
    if not torch.equal(weight, value):
        return None
    return f"{component_name}.{module_name}"


def _check_fits(pipe, converted: dict, lora: LoraFile) -> None:
    """Refuse, before touching the model, a LoRA whose layer sizes differ from the model's."""
    import torch

    for key, value in converted.items():
        component_name, _, rest = key.partition(".")
        component = getattr(pipe, component_name, None) if component_name in _COMPONENTS else None
        if component is None or not isinstance(value, torch.Tensor) or value.ndim != 2:
            continue
        module = _find_module(component, module_of(rest))
        if module is None:
            continue  # counted as not applied
        base = getattr(module, "base_layer", module)
        if not isinstance(base, torch.nn.Linear):
            continue
        size, expected = (value.shape[1], base.in_features) if _is_down(rest) else (value.shape[0], base.out_features)
        if size != expected and module_of(rest) == "x_embedder" and _is_down(rest) and size > expected:
            raise LoraError(f"LoRA {str(lora.path)!r} is a control LoRA (FLUX.1 Canny/Depth style): its img_in takes "
                            f"{size} input channels, the model {expected}; it needs a control pipeline with a control "
                            "image, which localflux does not run")
        if size != expected:
            raise LoraError(f"LoRA {str(lora.path)!r} does not fit this model: {module_of(rest)} has "
                            f"{expected} features but the LoRA has {size}; it was made for another base model")


def _find_module(component, name: str):
    # transformers 5 dropped CLIPTextModel's ``text_model`` level; LoRA files still use the old names
    for candidate in (name, name.removeprefix("text_model.")):
        try:
            return component.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def _is_down(key: str) -> bool:
    return key.endswith((".lora_A.weight", ".lora_down.weight", ".down.weight"))


def _nonzero(tensor) -> bool:
    return bool(tensor.ne(0).any()) if tensor.numel() else False


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


# ---------------------------------------------------------------- scales, fusing, removal


def _components_with(pipe, adapters: list[str]) -> list[str]:
    names = []
    for name in _COMPONENTS:
        component = getattr(pipe, name, None)
        config = getattr(component, "peft_config", None) or {}
        if any(a in config for a in adapters):
            names.append(name)
    return names


def _activate(pipe, loras: list[AppliedLora], scales) -> None:
    pipe.set_adapters([lora.adapter for lora in loras], adapter_weights=[float(s) for s in scales])


def _fuse(pipe, loras: list[AppliedLora]) -> None:
    adapters = [lora.adapter for lora in loras]
    qkv_fused = _qkv_fused(pipe.transformer)
    if qkv_fused:
        pipe.transformer.unfuse_qkv_projections()  # merge into to_q/k/v first, then fuse them again
    pipe.fuse_lora(components=_components_with(pipe, adapters), lora_scale=1.0, adapter_names=adapters)
    pipe.unload_lora_weights()  # drops the adapter layers; the merged weights stay
    if qkv_fused:
        pipe.transformer.fuse_qkv_projections()


def _check_qkv_fusion(pipe, loras: list[AppliedLora], mode: str) -> None:
    if mode != UNFUSED or not _qkv_fused(pipe.transformer):
        return
    hits = sorted(t for lora in loras for t in lora.targets if _QKV_TARGETS.search(t))
    if hits:
        raise LoraError(f"QKV-projection fusion is on and bypasses LoRA adapters on {hits[0]} (and others); "
                        "use lora_options.fuse = 'fused' or turn QKV fusion off")


def _qkv_fused(transformer) -> bool:
    return any(getattr(module, "fused_projections", False) for module in transformer.modules())


def _unmergeable_reason(transformer) -> str | None:
    if getattr(transformer, "hf_quantizer", None) is not None or getattr(transformer, "is_quantized", False):
        return "its transformer is quantized"
    for parameter in transformer.parameters():
        if str(parameter.dtype).removeprefix("torch.") in _LOW_PRECISION:
            return f"its transformer stores weights as {str(parameter.dtype).removeprefix('torch.')}"
    return None


def _is_compiled(transformer) -> bool:
    if hasattr(transformer, "_orig_mod"):
        return True
    return any(getattr(module, "_compiled_call_impl", None) is not None for module in transformer.modules())


def _unload(pipe) -> None:
    pipe.unload_lora_weights()


def _unload_adapter(pipe, adapter: str) -> None:
    for name in _COMPONENTS:
        component = getattr(pipe, name, None)
        if component is not None and adapter in (getattr(component, "peft_config", None) or {}):
            pipe.delete_adapters(adapter)
            return


def _remove(model, reload):
    state = model.lora_state
    if state.mode == FUSED:
        _discard(model)
        if reload is None:
            raise RuntimeError("a model with fused LoRAs needs reload() to be cleaned")  # a bug in the caller
        model = reload()
        model.lora_state = None
        return model
    _unload(model.pipe)
    model.lora_state = None
    return model


def _discard(model) -> None:
    from ..loader import discard

    discard(model)
