"""``rewrite_lora``: write a LoRA file again in diffusers or kohya keys, with the same effect on the image
(the ``localflux lora convert`` command).

Reading is the same conversion the render stage loads (``to_diffusers.convert``: diffusers' converter plus
``layouts``), so "what the file means" is decided in one place. Its result has every alpha folded into
the weights; ``--to diffusers`` writes it as it is (no ``.alpha`` tensors, no PEFT config: strength 1),
``--to kohya`` hands it to ``kohya.write_kohya``. Both are written in the source's weight dtype.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import LoraError
from ..weightfile import save_safetensors
from .files import is_weight_key, read_lora, refuse_unsupported
from .kohya import write_kohya
from .layouts import is_t5_key
from .to_diffusers import convert

TARGETS = ("diffusers", "kohya")
# metadata worth carrying into a converted file: trigger words and training notes
_CARRIED = ("trigger_word", "trigger_phrase", "name", "version", "software", "training_info", "ss_tag_frequency",
            "ss_output_name", "ss_training_comment", "modelspec.title", "modelspec.trigger_phrase")


def rewrite_lora(source: str | Path, to: str, out: str | Path) -> Path:
    """Write ``source`` as a ``to`` (diffusers | kohya) LoRA at ``out`` (never overwritten); returns ``out``."""
    if to not in TARGETS:
        raise LoraError(f"cannot convert to {to!r}; choose one of {', '.join(TARGETS)}")
    out = Path(out)
    if out.exists():
        raise LoraError(f"{str(out)!r} already exists; localflux never overwrites files, choose another output path")
    if out.suffix.lower() != ".safetensors":
        raise LoraError(f"output {str(out)!r} must end in .safetensors")
    lora = read_lora(source)
    refuse_unsupported(lora, control_ok=False)
    t5 = [k for k in lora.tensors if is_t5_key(k)]
    if t5:  # diffusers has no T5 LoRA layout, and dropping them would change what the file does
        raise LoraError(f"{str(lora.path)!r} has {len(t5)} T5 text-encoder tensors (e.g. {t5[0]!r}) that localflux "
                        "cannot convert; they would be lost")
    dtype = next((v.dtype for k, v in lora.tensors.items() if is_weight_key(k) and v.is_floating_point()), None)
    if dtype is not None and dtype.itemsize < 2:  # fp8 cannot hold the folded alphas: bf16 holds every fp8 value

        dtype = torch.bfloat16
    state_dict = {k: v.to(dtype or v.dtype).contiguous() for k, v in convert(lora).items()}
    carried = {k: v for k, v in lora.metadata.items() if k in _CARRIED}
    carried["localflux_converted_from"] = lora.path.name
    if to == "kohya":
        return write_kohya(state_dict, out, metadata=carried)
    return _write_diffusers(state_dict, carried, out)


def _write_diffusers(state_dict: dict, carried: dict, out: Path) -> Path:
    tensors = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}  # converters share memory
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_safetensors(tensors, out, dict(carried, format="pt"))
