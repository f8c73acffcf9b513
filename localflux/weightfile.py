"""The one reader of weight-file headers: tensor names, shapes and metadata without loading tensors.

Model detection, single-file shapes, LoRA inspection and upscaler loading all start from a file's
header; reading it in one place gives one error for a truncated or foreign file.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from .errors import ModelSourceError


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names of a ``.safetensors`` file (header only)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # safetensors raises several types for truncated/corrupt headers
        raise ModelSourceError(f"{str(path)!r} is not a readable .safetensors file ({exc}); re-download it") from None


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape (rows first, as in PyTorch), from a .safetensors or .gguf file's header only."""
    if Path(path).suffix.lower() == ".gguf":
        from gguf import GGUFReader  # optional package (the gguf extra); only GGUF files need it

        # GGUF lists dimensions innermost first
        return {t.name: tuple(int(d) for d in reversed(list(t.shape))) for t in GGUFReader(str(path)).tensors}
    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
