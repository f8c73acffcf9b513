"""``convert_lora``: rewrite a LoRA file in diffusers or kohya keys, with the same effect on the image.

Reading is always diffusers' converter (``FluxPipeline.lora_state_dict``), so "what the file means"
is decided in one place. ``--to diffusers`` writes diffusers' converted tensors (kohya alphas are
already folded into them by that converter; ``.alpha`` tensors and PEFT metadata of diffusers files are
kept). ``--to kohya`` hands them, with each module's alpha as diffusers would apply it, to
``kohya.write_kohya``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LoraError
from .files import read_lora, refuse_unsupported

TARGETS = ("diffusers", "kohya")
# metadata worth carrying into a converted file: trigger words and training notes
_CARRIED = ("trigger_word", "trigger_phrase", "name", "version", "software", "training_info", "ss_tag_frequency",
            "ss_output_name", "ss_training_comment", "modelspec.title", "modelspec.trigger_phrase")


def convert_lora(source: str | Path, to: str, out: str | Path) -> Path:
    """Write ``source`` as a ``to`` (diffusers | kohya) LoRA at ``out`` (never overwritten); returns ``out``."""
    from .apply import convert_full

    if to not in TARGETS:
        raise LoraError(f"cannot convert to {to!r}; choose one of {', '.join(TARGETS)}")
    out = Path(out)
    if out.exists():
        raise LoraError(f"{str(out)!r} already exists; localflux never overwrites files, choose another output path")
    if out.suffix.lower() != ".safetensors":
        raise LoraError(f"output {str(out)!r} must end in .safetensors")
    lora = read_lora(source)
    refuse_unsupported(lora)
    state_dict, alphas, metadata = convert_full(lora)
    carried = {k: v for k, v in lora.metadata.items() if k in _CARRIED}
    carried["localflux_converted_from"] = lora.path.name
    if to == "kohya":
        from .kohya import peft_alphas, write_kohya

        return write_kohya(state_dict, out, alpha=peft_alphas(state_dict, alphas, metadata), metadata=carried)
    return _write_diffusers(state_dict, alphas, lora.metadata, carried, out)


def _write_diffusers(state_dict: dict, alphas: dict | None, source_metadata: dict, carried: dict, out: Path) -> Path:
    from safetensors.torch import save

    from ..output import atomic_write_bytes

    tensors = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}  # converters share memory
    for key, value in (alphas or {}).items():  # diffusers files with .alpha tensors: keep them
        tensors[key] = value if hasattr(value, "contiguous") else __import__("torch").tensor(float(value))
    metadata = dict(carried, format="pt")
    if "lora_adapter_metadata" in source_metadata:  # the PEFT config (alpha, ranks) of diffusers files
        metadata["lora_adapter_metadata"] = source_metadata["lora_adapter_metadata"]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, save(tensors, metadata=metadata))
    return out
