"""What landed: check a converted LoRA against the model before loading, and count afterwards what applied.

diffusers does not tell whether a file actually applied: unknown keys are dropped with a log line, T5
parts are filtered, a LoRA for another base may even widen the model's layers. So

- ``check_fits`` refuses, before the model is touched, a converted tensor whose size differs from the
  layer it targets ("a LoRA for another base model", or a control LoRA);
- ``count_applied`` reads the adapter weights back from the model and, through
  ``to_diffusers.trace_sources``, counts in the file's own terms how many LoRA tensors, alphas and
  text-encoder tensors were applied (an ``AppliedLora``: what the report prints and the recipe records);
- ``coverage_error`` says why a strict entry must be refused (nothing applied, T5 tensors, a partial
  application), or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import LoraError
from .files import LoraFile, detect_format, is_alpha_key, is_text_encoder_key, is_weight_key, module_of
from .layouts import is_t5_key
from .to_diffusers import COMPONENTS


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
    autov3: str | None = None  # Civitai's AutoV3 hash (safetensors files), for A1111's "Lora hashes"

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
            "path": self.path, "name": self.name, "sha256": self.sha256, "autov3": self.autov3, "format": self.format,
            "scale": self.scale, "fuse": fuse, "strict": self.strict, "partial": not self.complete,
            "applied": {"lora_tensors": self.lora_tensors, "applied": self.applied, "alphas": self.alphas,
                        "alphas_applied": self.alphas_applied, "text_encoder": self.text_encoder,
                        "text_encoder_applied": self.text_encoder_applied, "other": self.other,
                        "not_applied": self.not_applied[:20]},
        }


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
    norms = _control_norms_written(pipe)  # a control LoRA's full q/k norm weights, written by load_lora_weights
    not_applied += [k for k in other if _nonzero(lora.tensors[k]) and not (norms and _is_control_norm(k))]
    return AppliedLora(
        path=str(lora.path), name=lora.path.name, adapter=adapter, sha256="", format=detect_format(lora),
        scale=1.0, strict=True, lora_tensors=len(weight_keys),
        applied=sum(1 for k in weight_keys if k in applied_sources),
        alphas=len(alpha_keys), alphas_applied=len(alphas_applied), text_encoder=len(te_keys),
        text_encoder_applied=sum(1 for k in te_keys if k in applied_sources), other=len(other),
        not_applied=not_applied, targets=targets,
    )


_CONTROL_NORMS = ("norm_q.", "norm_k.", "norm_added_q.", "norm_added_k.", "query_norm.", "key_norm.")


def _is_control_norm(key: str) -> bool:
    return any(name in key for name in _CONTROL_NORMS) and key.endswith((".weight", ".scale"))


def _control_norms_written(pipe) -> bool:
    """Whether diffusers wrote a control LoRA's norm weights into the transformer (it keeps the originals)."""
    return bool(getattr(getattr(pipe, "transformer", None), "_transformer_norm_layers", None))


def coverage_error(applied: AppliedLora, lora: LoraFile, strict: bool) -> str | None:
    """Why this application must be refused (always when nothing applied; else only for a strict entry)."""
    if applied.applied == 0:
        return (f"none of the {applied.lora_tensors} LoRA tensors in {str(lora.path)!r} apply to this model "
                f"(format: {applied.format}); it is for another model or in a layout diffusers does not read")
    t5 = [k for k in applied.not_applied if is_t5_key(k)]
    if t5 and strict:
        return (f"LoRA {str(lora.path)!r} has {len(t5)} T5 text-encoder tensors (e.g. {t5[0]!r}), which "
                "diffusers' FLUX loader cannot apply; set strict = false in its [[lora]] entry to apply "
                "the rest without them")
    if not applied.complete and strict:
        return (f"only {applied.summary()} from {str(lora.path)!r}; it is for another model or partly "
                "in a layout diffusers does not read. Set strict = false in its [[lora]] entry to use it anyway")
    return None


def _landed(pipe, adapter: str, key: str, value) -> str | None:
    """``component.module`` when the converted tensor ``key`` sits in the model's adapter with equal values."""
    component_name, _, rest = key.partition(".")
    component = getattr(pipe, component_name, None) if component_name in COMPONENTS else None
    if component is None:
        return None
    module_name = module_of(rest)
    module = find_module(component, module_name)
    if module is None:
        return None
    side = "lora_A" if is_down(rest) else "lora_B"
    layers = getattr(module, side, None)
    if layers is None or adapter not in layers:
        return None
    if rest.endswith(".bias"):  # PEFT lora_bias: lora_B's bias
        bias = layers[adapter].bias
        landed = bias is not None and torch.equal(bias.detach().cpu(), value.detach().to(bias.dtype).cpu())
        return f"{component_name}.{module_name}" if landed else None
    if value.ndim != 2:  # e.g. an alpha diffusers passed through: it landed nowhere
        return None
    weight = _unpadded(layers[adapter].weight.detach().cpu(), value, 0 if side == "lora_A" else 1)
    if weight is None or not torch.equal(weight, value.detach().to(weight.dtype).cpu()):
        return None
    return f"{component_name}.{module_name}"


def _unpadded(weight, value, rank_dim: int):
    """``weight`` without the zero padding diffusers' LoRA hotswap adds up to one reserved rank; ``None`` when
    it cannot hold ``value``."""
    if weight.shape == value.shape:
        return weight
    other_dim = 1 - rank_dim
    if weight.ndim != 2 or weight.shape[other_dim] != value.shape[other_dim] or weight.shape[rank_dim] < value.shape[rank_dim]:
        return None
    rank = value.shape[rank_dim]
    used, padding = weight.split([rank, weight.shape[rank_dim] - rank], dim=rank_dim)
    return None if padding.any() else used


def check_fits(pipe, converted: dict, lora: LoraFile) -> None:
    """Refuse, before touching the model, a LoRA whose layer sizes differ from the model's."""
    for key, value in converted.items():
        component_name, _, rest = key.partition(".")
        component = getattr(pipe, component_name, None) if component_name in COMPONENTS else None
        if component is None or not isinstance(value, torch.Tensor) or value.ndim != 2:
            continue
        module = find_module(component, module_of(rest))
        if module is None:
            continue  # counted as not applied
        base = getattr(module, "base_layer", module)
        if not isinstance(base, torch.nn.Linear):
            continue
        size, expected = (value.shape[1], base.in_features) if is_down(rest) else (value.shape[0], base.out_features)
        if module_of(rest) == "x_embedder" and is_down(rest) and size == 2 * expected:
            continue  # a control LoRA (FLUX.1 Canny/Depth): diffusers widens x_embedder to take the control latents
        if size != expected:
            raise LoraError(f"LoRA {str(lora.path)!r} does not fit this model: {module_of(rest)} has "
                            f"{expected} features but the LoRA has {size}; it was made for another base model")


def find_module(component, name: str):
    # transformers 5 dropped CLIPTextModel's ``text_model`` level; LoRA files still use the old names
    for candidate in (name, name.removeprefix("text_model.")):
        try:
            return component.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def is_down(key: str) -> bool:
    return key.endswith((".lora_A.weight", ".lora_down.weight", ".down.weight"))


def _nonzero(tensor) -> bool:
    return bool(tensor.ne(0).any()) if tensor.numel() else False
