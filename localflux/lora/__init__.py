"""LoRAs: read and inspect files, apply them to a pipeline with verified counts, convert and export.

Public entry points:
- ``apply_loras(model, entries, fuse)`` / ``remove_loras(model)``: the render stage (``apply.py``);
- ``inspect_lora(path)``: format, ranks, alphas, targets, metadata (``inspect.py``);
- ``convert_lora(src, to, out)``: to diffusers or kohya keys (``convert.py``);
- ``write_kohya(state_dict, path, alpha=..., metadata=...)``: export a diffusers/PEFT LoRA as a
  kohya/BFL-key file with ``.alpha`` tensors (``kohya.py``), used by the trainer too.
Submodules import torch/diffusers lazily, so importing this package stays cheap.
"""

from .apply import AppliedLora, LoraState, apply_loras, remove_loras, resolve_fuse_mode
from .files import LoraFile, detect_format, read_lora

__all__ = ["AppliedLora", "LoraFile", "LoraState", "apply_loras", "detect_format", "read_lora", "remove_loras",
           "resolve_fuse_mode"]
