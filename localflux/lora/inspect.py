"""``inspect_lora``: what a LoRA file is, without a model: format, tensors, ranks, alphas, targets, metadata."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ..errors import LoraError
from ..families.registry import FAMILIES
from ..hashing import sha256_file
from .files import (
    detect_format,
    is_alpha_key,
    is_text_encoder_key,
    is_weight_key,
    module_of,
    peft_metadata,
    read_lora,
    refuse_unsupported,
)
from .layouts import is_t5_key, readable_name

# metadata keys that carry trigger words, by the trainers that write them
_TRIGGER_KEYS = ("localflux.trigger", "trigger_word", "trigger_words", "trigger_phrase", "modelspec.trigger_phrase",
                 "activation_text")
_TRAINING_KEYS = ("software", "training_info", "ss_steps", "ss_epoch", "ss_num_train_images", "ss_learning_rate",
                  "ss_base_model_version", "ss_network_module", "ss_output_name", "ss_training_comment",
                  "modelspec.architecture", "modelspec.title", "name", "version")


_LOCALFLUX_PREFIX = "localflux."  # written by `localflux train-lora` (train/export.py)


def inspect_lora(path: str | Path) -> dict:
    """A JSON-able summary of a LoRA file (``localflux lora inspect``)."""
    lora = read_lora(path)
    refused = None
    try:
        refuse_unsupported(lora)
    except Exception as exc:  # inspect reports what loading would refuse, it does not fail
        refused = str(exc)
    weights = [k for k in lora.tensors if is_weight_key(k)]
    if not weights and refused is None:  # a model checkpoint, VAE, upscaler...: a report would look like a LoRA's
        sample = ", ".join(sorted(lora.tensors)[:2])
        raise LoraError(f"{str(lora.path)!r} holds no LoRA tensors (keys like {sample}); it is not a LoRA file")
    alphas = {module_of(k): float(lora.tensors[k].float().item()) for k in lora.tensors if is_alpha_key(k)}
    ranks = Counter(lora.tensors[k].shape[0] for k in weights
                    if k.endswith((".lora_down.weight", ".lora_A.weight", ".down.weight")) and lora.tensors[k].ndim == 2)
    peft = peft_metadata(lora.metadata, "transformer")
    if peft.get("lora_alpha") is not None and not alphas:
        alpha_text = f"{peft['lora_alpha']} (PEFT metadata)"
    elif alphas:
        alpha_text = ", ".join(f"{a:g} x{n}" for a, n in Counter(alphas.values()).most_common())
    elif lora.metadata.get("ss_network_alpha"):  # kohya, ComfyUI and diffusers read only per-module alphas
        alpha_text = (f"none (strength 1: alpha = rank; metadata ss_network_alpha {lora.metadata['ss_network_alpha']} "
                      "ignored, as kohya, ComfyUI and diffusers do)")
    else:
        alpha_text = "none (strength 1: alpha = rank)"
    modules = sorted({module_of(readable_name(k)) for k in weights})
    components = {"transformer": 0, "clip": 0, "t5": 0}  # LoRA modules per model part
    for module in modules:
        components["t5" if is_t5_key(module) else "clip" if is_text_encoder_key(module) else "transformer"] += 1
    return {
        "path": str(lora.path),
        "sha256": sha256_file(lora.path),
        "size_bytes": lora.path.stat().st_size,
        "format": detect_format(lora),
        "family": lora_family(lora),
        "refused": refused,
        "tensors": len(lora.tensors),
        "lora_tensors": len(weights),
        "alphas": len(alphas),
        "text_encoder_tensors": sum(1 for k in weights if is_text_encoder_key(k)),
        "other_tensors": len(lora.tensors) - len(weights) - len(alphas),
        "rank": ", ".join(f"{r} x{n}" for r, n in sorted(ranks.items())) or "?",
        "alpha": alpha_text,
        "dtypes": sorted({str(v.dtype).removeprefix("torch.") for v in lora.tensors.values()}),
        "modules": len(modules),
        "components": components,
        "targets": _targets(modules),
        "trigger_words": _trigger_words(lora.metadata),
        "training": {k: _maybe_json(lora.metadata[k]) for k in lora.metadata
                     if k in _TRAINING_KEYS or k.startswith(_LOCALFLUX_PREFIX)},
        "metadata_keys": sorted(lora.metadata),
    }


def lora_family(lora) -> str:
    """The model family the LoRA's keys name (families' ``lora_markers``), or every family it could be for."""
    family = FAMILIES.of_lora_keys(list(lora.tensors))
    if family is not None:
        return family.label
    return " or ".join(f.label for f in FAMILIES) + " (its layers exist in both; the model's layer sizes decide)"


def format_report(info: dict) -> str:
    lines = [
        f"file:        {info['path']}",
        f"sha256:      {info['sha256']}",
        f"format:      {info['format']}" + (f"  (REFUSED: {info['refused']})" if info["refused"] else ""),
        f"family:      {info['family']}",
        f"tensors:     {info['tensors']} ({info['lora_tensors']} LoRA, {info['alphas']} alphas, "
        f"{info['text_encoder_tensors']} text-encoder, {info['other_tensors']} other)",
        f"rank:        {info['rank']}",
        f"alpha:       {info['alpha']}",
        f"dtype:       {', '.join(info['dtypes'])}",
        f"targets:     {info['modules']} modules: {', '.join(info['targets'])}",
        f"components:  transformer {info['components']['transformer']} modules, CLIP text encoder "
        f"{info['components']['clip']}, T5 {info['components']['t5']}"
        + (" (T5 LoRAs are not applied: diffusers' FLUX loader has none)" if info["components"]["t5"] else ""),
        f"trigger:     {', '.join(info['trigger_words']) or '(none recorded)'}",
    ]
    for key, value in info["training"].items():
        text = value if isinstance(value, str) else json.dumps(value)
        lines.append(f"training:    {key} = {text[:200]}")
    return "\n".join(lines)


def _targets(modules: list[str]) -> list[str]:
    """Module kinds with block indices folded: ``transformer_blocks.*.attn.to_q`` (x19)."""
    kinds = Counter(re.sub(r"(blocks[._])\d+", r"\1*", m) for m in modules)
    return [f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(kinds.items())]


def _trigger_words(metadata: dict) -> list[str]:
    words = []
    for key in _TRIGGER_KEYS:
        if metadata.get(key):
            value = _maybe_json(metadata[key])
            words += value if isinstance(value, list) else [str(value)]
    if not words and metadata.get("ss_tag_frequency"):  # kohya: the most frequent caption tags
        tags = Counter()
        for folder in (_maybe_json(metadata["ss_tag_frequency"]) or {}).values():
            if isinstance(folder, dict):
                tags.update({str(k): int(v) for k, v in folder.items() if isinstance(v, (int, float))})
        words = [tag for tag, _ in tags.most_common(3)]
    return words


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text
