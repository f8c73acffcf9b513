"""LoRAs: read and inspect files, apply them to a pipeline with verified counts, convert and export.

Modules, in the order a render uses them:
- ``files.py``: read a file safely, name its format, refuse kinds that would load wrongly;
- ``to_diffusers.py`` (with ``layouts.py``): a file's tensors in diffusers/PEFT keys (``convert``);
- ``verify.py``: check that a converted LoRA fits, count what landed (``AppliedLora``);
- ``state.py``: the adapter state of a model (``lora_request``, ``apply_loras``, ``can_keep``,
  ``remove_loras``): apply, fuse, hot-swap, remove. The model cache (``localflux.model_cache``) asks it
  whether a cached model is clean; this package never loads or discards models;
- ``inspect_lora(path)``: format, ranks, alphas, targets, metadata (``inspect.py``);
- ``rewrite_lora(src, to, out)``: a file written again in diffusers or kohya keys (``rewrite.py``, the
  ``localflux lora convert`` command);
- ``write_kohya(state_dict, path, alpha=..., metadata=...)``: export a diffusers/PEFT LoRA as a
  kohya/BFL-key file with ``.alpha`` tensors (``kohya.py``), used by the trainer too.
Submodules import torch/diffusers lazily, so importing this package stays cheap.
"""

from .files import LoraFile, detect_format, read_lora
from .state import (AppliedLora, LoraRequest, LoraState, apply_loras, can_keep, lora_request, remove_loras,
                    resolve_fuse_mode)

__all__ = ["AppliedLora", "LoraFile", "LoraRequest", "LoraState", "apply_loras", "can_keep", "detect_format",
           "lora_request", "read_lora", "remove_loras", "resolve_fuse_mode"]
