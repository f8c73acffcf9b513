"""Reading LoRA files safely, naming their format, and refusing the kinds that would load wrongly.

Only tensors are read: ``.safetensors`` through safetensors, ``.pt``/``.ckpt``/``.pth``/``.bin``
through ``torch.load(weights_only=True)`` (which refuses pickled code). Format names say which tool
writes a layout; the conversion is diffusers' plus the fixes in ``layouts.py``.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import LoraError, first_line
from ..weightfile import tensor_shapes

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".ckpt", ".pth", ".bin")

# Weight tensors of a plain LoRA pair, in every key style diffusers reads.
_WEIGHT_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".lora_B.bias",
                    ".down.weight", ".up.weight")
_TEXT_ENCODER_PREFIXES = ("lora_te", "text_encoder", "text_encoders.", "lora_te1_", "lora_te2_")
# Adapter kinds that diffusers' FLUX loader does not apply correctly (it drops DoRA magnitudes with only a
# warning): refusing them is the only way not to render a silently wrong image.
_UNSUPPORTED = (
    (re.compile(r"dora_scale|lora_magnitude_vector"), "DoRA"),
    (re.compile(r"\.lokr_w|lokr_t"), "LoKr (LyCORIS)"),
    (re.compile(r"\.hada_w|hada_t"), "LoHa (LyCORIS)"),
    (re.compile(r"\.oft_|oft_blocks|\.boft_"), "OFT (LyCORIS)"),
    (re.compile(r"\.lora_mid\."), "LoCon/Tucker (LyCORIS)"),
    (re.compile(r"\.a1\.weight|\.b1\.weight"), "GLoRA (LyCORIS)"),
    (re.compile(r"\.on_input$|(^|\.)ia3_l$"), "IA3 (LyCORIS/PEFT)"),
    (re.compile(r"\.diff(_b)?$|\.set_weight$"), "full-rank difference (.diff)"),
)


@dataclass
class LoraFile:
    path: Path
    tensors: dict  # key -> torch.Tensor, exactly as stored
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() in SAFETENSORS_SUFFIXES


def check_lora_path(path: str | Path) -> Path:
    """The checks that need no reading (exists, a file, a known suffix): ``pipeline.plan`` runs them before
    any model loads, so a batch with a missing LoRA stops before its first render."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LoraError(f"LoRA file {str(path)!r} does not exist; check the path (config paths are relative to the config file)")
    if not path.is_file():
        raise LoraError(f"LoRA {str(path)!r} is a folder; pass the .safetensors file inside it")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise LoraError(f"LoRA {str(path)!r} is not a .safetensors (or .pt/.ckpt) file; convert it to .safetensors")
    return path


def read_lora(path: str | Path) -> LoraFile:
    """Every tensor and the text metadata of a LoRA file, or a ``LoraError`` naming the file."""
    path = check_lora_path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        tensors, metadata = _read_safetensors(path)
    else:
        tensors, metadata = _read_pickle(path), {}
    if not tensors:
        raise LoraError(f"LoRA file {str(path)!r} holds no tensors; re-download it")
    # an alpha is one number; an empty or multi-valued one was a RuntimeError deep in loading (found by
    # tests/test_properties.py)
    bad = next((k for k, v in tensors.items() if is_alpha_key(k) and getattr(v, "numel", lambda: 1)() != 1), None)
    if bad is not None:
        raise LoraError(f"LoRA file {str(path)!r} has an alpha {bad!r} with {tensors[bad].numel()} values instead of "
                        "one number; the file is damaged, re-download it")
    return LoraFile(path, tensors, metadata)


def _read_safetensors(path: Path):
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several types for truncated or corrupt files
        raise LoraError(f"LoRA file {str(path)!r} is not a readable .safetensors file "
                        f"({first_line(exc, 120)}); re-download it") from None
    return tensors, metadata


def _read_pickle(path: Path) -> dict:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LoraError(f"LoRA file {str(path)!r} contains pickled code that a safe loader refuses; "
                        "use a .safetensors version of it") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise LoraError(f"LoRA file {str(path)!r} is not a readable PyTorch file ({exc.__class__.__name__}); "
                        "re-download it or use a .safetensors version") from None
    if isinstance(data, dict) and set(data) == {"state_dict"} and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise LoraError(f"LoRA file {str(path)!r} is not a flat dictionary of tensors; use a .safetensors LoRA")
    return data


_BFL_ROOTS = ("double_blocks.", "single_blocks.", "img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.",
              "final_layer.")
_BFL_PREFIXES = ("", "diffusion_model.", "model.diffusion_model.", "transformer.", "base_model.model.")


def control_weights(lora: LoraFile) -> list[str]:
    """Full (non-LoRA) weights on BFL layers, which BFL's FLUX.1 Canny/Depth control LoRAs carry (the q/k norm
    scales, img_in's new weight and bias): a control pipeline's, never a text-to-image model's."""
    if not any(is_weight_key(k) for k in lora.tensors):
        return []  # a model checkpoint, not a LoRA: reported as such elsewhere
    hits = []
    for key in lora.tensors:
        bfl = any(key.startswith(p + r) for p in _BFL_PREFIXES for r in _BFL_ROOTS)
        if bfl and not is_weight_key(key) and not is_alpha_key(key) and key.endswith((".scale", ".weight", ".bias")):
            hits.append(key)
    return hits


_CONTROL_IN = ("img_in.lora_A.weight", "img_in.lora_down.weight", "x_embedder.lora_A.weight",
               "x_embedder.lora_down.weight")


def is_control_lora_file(path) -> bool:
    """Whether the file at ``path`` is a FLUX.1 control LoRA (BFL Canny/Depth style), from its header only: its
    img_in / x_embedder LoRA reads twice FLUX.1's 64 packed latent channels (noisy + control-image latents),
    or it carries BFL's full q/k norm scales. A file that cannot be read says no (it is reported elsewhere)."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".safetensors", ".sft") or not path.is_file():
        return False
    try:
        shapes = tensor_shapes(path)
    except Exception:  # noqa: BLE001 - a damaged header is reported by the LoRA stage, in its own words
        return False
    from ..families.registry import FAMILIES  # cycle: the families' LoRA hooks import this module

    family = FAMILIES.of_lora_keys(list(shapes))
    if family is not None and family.name != "flux1":  # FLUX.2 packs 128 input channels: not a control input
        return False
    for key, shape in shapes.items():
        if key.endswith(_CONTROL_IN) and len(shape) == 2 and shape[1] == 2 * 64:
            return True
        if key.endswith(("query_norm.scale", "key_norm.scale")) and "lora" not in key:
            return True
    return False


def refuse_unsupported(lora: LoraFile, control_ok: bool = True) -> None:
    """Raise for adapter kinds that are not plain LoRA (DoRA, LoKr, LoHa, OFT, IA3 ...); a BFL control LoRA is
    refused only where ``control_ok`` is false (rewriting: its full weights have no LoRA form in other layouts)."""
    for pattern, kind in _UNSUPPORTED:
        hit = next((key for key in lora.tensors if pattern.search(key) and _changes_something(lora.tensors[key], kind)),
                   None)
        if hit is not None:
            raise LoraError(f"{str(lora.path)!r} is a {kind} file (key {hit!r}); localflux applies plain LoRAs only, "
                            f"because diffusers would load it partly and render a wrong image")
    control = control_weights(lora)
    if control and not control_ok:
        raise LoraError(f"{str(lora.path)!r} is a BFL control LoRA (FLUX.1 Canny/Depth style, full weights such as "
                        f"{control[0]!r}); it cannot be rewritten in another layout: use it as it is, with --control")
    config = peft_metadata(lora.metadata, "transformer")
    if config.get("use_dora"):
        raise LoraError(f"{str(lora.path)!r} is a DoRA file (use_dora in its metadata); localflux applies plain LoRAs only")


def _changes_something(tensor, kind: str) -> bool:
    # all-zero .diff/.diff_b tensors (ComfyUI extracts write them) change nothing; diffusers drops them too
    return not kind.startswith("full-rank") or bool(tensor.ne(0).any())


def peft_metadata(metadata: dict[str, str] | None, component: str | None = None) -> dict:
    """The PEFT LoraConfig that diffusers' ``save_lora_weights`` stores (``lora_adapter_metadata``), as diffusers
    reads it: ``{"transformer.r": ..., "transformer.lora_alpha": ...}``; ``{}`` when there is none or it is not
    JSON. With ``component`` ("transformer"), only that component's entries, prefix stripped."""
    text = (metadata or {}).get("lora_adapter_metadata")
    if not text:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):  # "null", a list, a number: not a LoraConfig (found by tests/test_properties.py)
        return {}
    if component is None:
        return data
    return {key.split(".", 1)[1]: value for key, value in data.items() if key.startswith(component + ".")}


def is_weight_key(key: str) -> bool:
    return key.endswith(_WEIGHT_SUFFIXES) and ("lora" in key or "processor" in key)


def is_alpha_key(key: str) -> bool:
    return key.endswith(".alpha")


def is_text_encoder_key(key: str) -> bool:
    return key.startswith(_TEXT_ENCODER_PREFIXES)


def module_of(key: str) -> str:
    """The LoRA module a weight or alpha key belongs to (``…attn.to_q`` for ``…attn.to_q.lora_A.weight``)."""
    for suffix in (".alpha", *_WEIGHT_SUFFIXES):
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            for tail in (".lora_linear_layer", ".lora"):
                module = module.removesuffix(tail)
            return module
    return key


def detect_format(lora: LoraFile) -> str:
    """A name for the file's layout (which trainer or tool writes it); ``layouts``/diffusers convert it."""
    keys = list(lora.tensors)
    has = lambda *parts: any(k.startswith(parts) for k in keys)  # noqa: E731
    bfl = _BFL_ROOTS
    if any("processor" in k for k in keys):
        return "xlabs"
    if control_weights(lora) or any("query_norm.scale" in k for k in keys):
        return "BFL control LoRA (full weights)"
    if has("lora_transformer_"):
        return "OneTrainer / mixture (lora_transformer_ + diffusers module names)"
    if has("lora_unet_"):
        return "kohya (BFL keys" + (", lora_A/lora_B)" if any(".lora_A." in k for k in keys) else ")")
    if has(*("transformer." + b for b in bfl)):
        return "BFL keys under transformer."
    if has(*(p + b for p in ("diffusion_model.", "model.diffusion_model.") for b in bfl)) or has("text_encoders."):
        side = "lora_down/lora_up" if any(".lora_down." in k for k in keys) else "lora_A/lora_B"
        return f"comfyui (BFL keys, {side})"
    if has(*("base_model.model." + b for b in bfl)):
        return "fal (BFL keys under base_model.model.)"
    if has(*bfl):
        return "BFL keys (lora_A/lora_B)"
    if has("base_model.model."):
        return "peft (base_model.model. prefix)"
    if any(".lora_down.weight" in k for k in keys):
        return "diffusers (kohya lora_down/lora_up names)"
    software = lora.metadata.get("software", "") + lora.metadata.get("ss_training_comment", "")
    alphas = any(is_alpha_key(k) for k in keys)
    if "ai-toolkit" in software or "ai_toolkit" in software:
        return "ai-toolkit" + (" (with alphas)" if alphas else "")
    if "lora_adapter_metadata" in lora.metadata:
        return "diffusers (PEFT metadata)"
    return "diffusers/PEFT" + (" with alphas" if alphas else " (no alphas)")
