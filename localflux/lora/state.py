"""The adapter state of a loaded model: apply, fuse, hot-swap and remove LoRAs, through an explicit handle.

Loading is diffusers' own ``load_lora_weights``, fed ``to_diffusers.convert``'s dict (never the file
itself); ``verify`` refuses what does not fit and counts what landed. For each file localflux

1. refuses adapter kinds diffusers would half-load (DoRA, LoKr, ...), see ``files.refuse_unsupported``;
2. converts it and checks every converted tensor against the layer it targets (``verify.check_fits``);
3. loads it as adapter ``lora<i>``, reads the adapter weights back and counts, in the file's own terms,
   what applied (``verify.count_applied``); anything short of all → ``LoraError`` unless the entry says
   ``strict = false`` (the recipe then records the partial application).

Text-encoder parts: CLIP LoRA tensors are applied to the CLIP text encoder and counted. T5 parts are
not supported by diffusers; they count as not applied, so a strict LoRA with T5 tensors is refused.

The handle. A model (``loader.LoadedModel``, or anything with ``pipe``, ``lora_state`` and ``speed``)
carries ``lora_state``: ``None`` for clean base weights, else a ``LoraState`` saying which LoRAs are in
it and how (``fused``: merged into the base weights; ``unfused``: PEFT adapters; ``broken``: fusing
failed half-way). The stage never loads or discards models (it does not import the loader or the model
cache); the model cache decides, through three questions asked of this module:

- ``lora_request(entries, fuse)``: the LoRAs a render wants, hashed once (``LoraRequest``);
- ``can_keep(model, request)``: may the adapters now in ``model`` become ``request``'s in place? Yes
  when they are the same files in the same mode (only the scales of unfused adapters change), and for
  hot-swapping: a compiled model prepared with ``speed.lora_hotswap_rank`` whose unfused adapters are as
  many as the request's swaps the new weights into the same adapter slots, so nothing recompiles;
- ``remove_loras(model) -> bool``: unload unfused adapters (the base weights were never touched) and say
  ``True``; say ``False`` for fused or broken LoRAs, which changed the base weights (un-fusing would
  restore them only up to rounding, visibly in bf16), so the cache must discard the model and load it
  again.

So the cache hands a render either a clean base or, when ``can_keep`` said so, the model with the very
adapter slots ``apply_loras(model, request)`` then re-scales or hot-swaps into.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LoraError, first_line
from ..families.registry import FAMILIES
from ..hashing import autov3, sha256_file
from .files import is_control_lora_file, is_text_encoder_key, read_lora, refuse_unsupported
from .to_diffusers import COMPONENTS, convert, trace_sources
from .verify import AppliedLora, check_fits, count_applied, coverage_error

log = logging.getLogger(__name__)

FUSED, UNFUSED, BROKEN = "fused", "unfused", "broken"
_QKV_TARGETS = re.compile(r"\.attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj)$")
_LOW_PRECISION = ("float8_e4m3fn", "float8_e5m2", "int8", "uint8")

__all__ = ["AppliedLora", "LoraRequest", "LoraState", "apply_loras", "can_keep", "lora_request", "remove_loras",
           "resolve_fuse_mode"]


@dataclass
class LoraState:
    """The LoRAs currently in a model (``model.lora_state``)."""

    key: tuple  # (path, sha256, strict) per LoRA, in order
    mode: str  # FUSED | UNFUSED | BROKEN
    scales: tuple
    loras: list[AppliedLora]
    control: bool = False  # a control LoRA widened x_embedder and overwrote q/k norms: only a reload cleans it

    def records(self) -> list[dict]:
        return [lora.record(self.mode) for lora in self.loras]


@dataclass(frozen=True)
class LoraRequest:
    """The LoRAs a render wants (``LoraConfig`` entries), each file hashed once."""

    entries: tuple
    fuse: str  # lora_options.fuse: auto | fused | unfused
    key: tuple  # (resolved path, sha256, strict) per entry: what LoraState.key is compared with
    scales: tuple
    control: bool = False  # a FLUX.1 control LoRA is among them (always unfused; see _mode)


def lora_request(entries, fuse: str = "auto") -> LoraRequest:
    """Hash the files of ``entries``; a missing file raises its clear ``LoraError`` here."""
    entries = tuple(entries)
    for entry in entries:
        if not Path(entry.path).expanduser().is_file():
            read_lora(entry.path)  # raises the clear "does not exist" error

    key = tuple((str(Path(e.path).expanduser().resolve()), sha256_file(e.path), e.strict) for e in entries)
    control = any(is_control_lora_file(e.path) for e in entries)
    return LoraRequest(entries, fuse, key, tuple(float(e.scale) for e in entries), control)


def _mode(request: LoraRequest, pipe) -> str:
    """The fuse mode of a request. A control LoRA stays an adapter, as diffusers runs it: its full q/k norm
    weights are written into the model on load, and fusing ends with ``unload_lora_weights``, which puts the
    original norms back."""
    mode = resolve_fuse_mode(request.fuse, pipe)
    if request.control and mode == FUSED:
        if request.fuse == FUSED:
            raise LoraError("lora_options.fuse = 'fused' cannot merge a FLUX.1 control LoRA (its q/k norm weights are "
                            "replaced, not added); use fuse = 'auto' or 'unfused'")
        return UNFUSED
    return mode


# ---------------------------------------------------------------- the stage


def apply_loras(model, entries, fuse: str = "auto") -> LoraState | None:
    """Make ``model.pipe`` carry exactly ``entries`` (``LoraConfig`` items, or a ``LoraRequest``); returns (and
    sets) ``model.lora_state``, ``None`` when no LoRA is wanted.

    ``model`` must be a clean base or one that ``can_keep`` the request; leftover unfused adapters are
    removed, leftover fused LoRAs are a caller's bug (only a reload cleans them: ask the model cache).
    """
    request = entries if isinstance(entries, LoraRequest) else lora_request(entries, fuse)
    mode = _mode(request, model.pipe) if request.entries else None
    state = getattr(model, "lora_state", None)
    if state is not None and not can_keep(model, request):
        if not remove_loras(model):
            raise RuntimeError("this model's weights carry fused LoRAs; take a clean base from the model cache")
        state = None
    if not request.entries:
        return None
    if state is not None and state.key == request.key and state.mode == mode:
        if state.scales != request.scales:  # can_keep: unfused adapters only
            _activate(model.pipe, state.loras, request.scales)
            state.scales = request.scales
        for lora, scale in zip(state.loras, request.scales):
            lora.scale = scale
        return state
    # a state can_keep kept with other LoRAs in it: swap the new weights into its adapter slots
    model.lora_state = _load_all(model, request, mode, hotswap=state is not None)
    return model.lora_state


def can_keep(model, request: LoraRequest) -> bool:
    """Whether the LoRAs now in ``model`` can become ``request``'s in place (see the module docstring)."""
    state = getattr(model, "lora_state", None)
    if state is None or not request.entries:
        return False
    if state.control or request.control:
        return False  # the model was widened (or must be): a clean base first
    try:
        mode = _mode(request, model.pipe)
    except LoraError:
        return False  # apply_loras raises it, on a clean model
    if state.key == request.key and state.mode == mode and (mode == UNFUSED or state.scales == request.scales):
        return True
    return _can_hotswap(model, state, mode, len(request.entries))


def remove_loras(model) -> bool:
    """Unload the adapters of ``model``; ``True`` when its weights are now the clean base, ``False`` when fused
    (or half-fused) LoRAs changed them: only loading the model again cleans it."""
    state = getattr(model, "lora_state", None)
    if state is None:
        return True
    if state.mode != UNFUSED or state.control:
        return False
    model.pipe.unload_lora_weights()
    model.lora_state = None
    return True


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


def _can_hotswap(model, state: LoraState, mode: str | None, count: int) -> bool:
    """Swap new LoRA weights into the adapters a compiled model already has, so it does not recompile.

    diffusers' hotswap needs ``enable_lora_hotswap`` before the first LoRA (``speed.lora_hotswap_rank``),
    unfused adapters, and the same number of adapters; anything else takes the unload + load path.
    """
    speed = getattr(model, "speed", None) or {}
    return (state.mode == UNFUSED and mode == UNFUSED and len(state.loras) == count
            and speed.get("compile", "off") != "off" and bool(speed.get("lora_hotswap_rank")))


def _load_all(model, request: LoraRequest, mode: str, hotswap: bool) -> LoraState:
    pipe = model.pipe
    loaded: list[AppliedLora] = []
    try:
        for index, (entry, (_path, digest, _strict)) in enumerate(zip(request.entries, request.key)):
            loaded.append(load_one(pipe, entry, adapter=f"lora{index}", sha256=digest, hotswap=hotswap))
        _check_qkv_fusion(pipe, loaded, mode)
        _activate(pipe, loaded, request.scales)
    except BaseException:
        pipe.unload_lora_weights()
        model.lora_state = None  # no adapter is left: the base weights were never touched
        raise
    if mode == FUSED:
        try:
            _fuse(pipe, loaded)
        except BaseException:
            # half-fused weights must never be reused: remove_loras says so, and the cache reloads
            model.lora_state = LoraState(request.key, BROKEN, request.scales, loaded)
            raise
    return LoraState(request.key, mode, request.scales, loaded, request.control)


# ---------------------------------------------------------------- one file


def load_one(pipe, entry, adapter: str, sha256: str, hotswap: bool = False) -> AppliedLora:
    """Load one ``LoraConfig`` entry as ``adapter``, verified (``verify``); refused entries leave no adapter."""
    lora = read_lora(entry.path)
    refuse_unsupported(lora)
    family = model_family(pipe, lora)
    converted = convert(lora, family=family)
    trace = trace_sources(lora, family=family)
    check_fits(pipe, converted, lora)
    _load_converted(pipe, lora, converted, entry.strict, adapter, hotswap)
    applied = count_applied(pipe, adapter, lora, converted, trace)
    applied.name, applied.sha256 = entry.name or lora.path.name, sha256
    applied.scale, applied.strict = float(entry.scale), entry.strict
    if lora.is_safetensors:  # computed once here, recorded for the parameters chunk's "Lora hashes"
        applied.autov3 = autov3(lora.path)
    error = coverage_error(applied, lora, entry.strict)
    if error:
        _unload_adapter(pipe, adapter)
        raise LoraError(error)
    if not applied.complete:
        log.warning("LoRA %s applied partially: %s", lora.path, applied.summary())
    return applied


def model_family(pipe, lora):
    """The pipe's model family (``families/``); a LoRA whose keys name another family's modules is refused."""
    family = FAMILIES.of_pipeline(pipe)
    other = FAMILIES.of_lora_keys(list(lora.tensors))
    if family is not None and other is not None and other is not family:
        raise LoraError(f"LoRA {str(lora.path)!r} is a {other.label} LoRA but the model is {family.label}; "
                        f"use a LoRA trained for {family.label}")
    return family


def _load_converted(pipe, lora, converted: dict, strict: bool, adapter: str, hotswap: bool) -> None:
    """Load the converted dict (it holds the fixes of layouts.py and every alpha folded in), not the file."""
    try:
        _load(pipe, _text_encoder_keys_diffusers_reads(converted), adapter, hotswap=hotswap)
    except LoraError as exc:
        te_keys = [k for k in lora.tensors if is_text_encoder_key(k)]
        if not te_keys:
            raise LoraError(f"LoRA {str(lora.path)!r} could not be applied ({exc}); is it a FLUX.1 LoRA?") from None
        if strict:
            raise LoraError(f"the {len(te_keys)} text-encoder tensors of LoRA {str(lora.path)!r} (e.g. {te_keys[0]!r}) "
                            f"cannot be loaded by diffusers ({exc}); set strict = false in its [[lora]] entry "
                            "to apply only its transformer part") from None
        # strict = false: apply the transformer part; the text-encoder tensors count as not applied
        _load(pipe, {k: v for k, v in converted.items() if k.startswith("transformer.")}, adapter)


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
        raise LoraError(first_line(exc)) from None


def _unload_adapter(pipe, adapter: str) -> None:
    for name in COMPONENTS:
        component = getattr(pipe, name, None)
        if component is not None and adapter in (getattr(component, "peft_config", None) or {}):
            pipe.delete_adapters(adapter)
            return


# ---------------------------------------------------------------- scales, fusing


def _components_with(pipe, adapters: list[str]) -> list[str]:
    names = []
    for name in COMPONENTS:
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
